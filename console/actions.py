"""What an operator may do from the console, each recorded (who, when, what) in the audit
collection, numbered per payment (or per scope), and in the logs."""

from __future__ import annotations

import json
import time
from typing import Any

import structlog

from console.auth import Operator
from shared import mongo
from shared.alert import decode_body, order_id, parse_alert
from shared.broker import Broker
from shared.envelope import AlertEnvelope, InvalidEnvelope
from shared.mongo import Collections
from worker import dlq
from worker.parts import Parts
from worker.records import utc

log = structlog.get_logger("console")
DEAD_LETTERS_SCOPE = "dead-letters"


async def audit(c: Collections, scope: str, operator: Operator, action: str,
                **details: Any) -> None:
    entry = {"at": utc(time.time()), "by": operator.name, "role": operator.role,
             "action": action, **details}
    await mongo.append_numbered(c.audit, scope, entry)
    log.info("console_action", scope=scope, by=operator.name, action=action, **details)


async def mark_reviewed(c: Collections, order_id: str, operator: Operator, note: str) -> bool:
    """A payment given up is marked reviewed (it leaves the list); False if it was not on it."""
    result = await c.attention.update_one(
        {"_id": order_id},
        {"$set": {"reviewed": {"by": operator.name, "at": utc(time.time()), "note": note}}})
    if result.matched_count == 0:
        return False
    await audit(c, order_id, operator, "reviewed", note=note)
    return True


async def poll_now(parts: Parts, order_id: str, operator: Operator) -> str:
    """Poll the gateway for one order now (worker.poller.Poller.poll_now), audited."""
    outcome = await parts.poller.poll_now(order_id)
    await audit(parts.store.collections, order_id, operator, "poll_now", outcome=outcome)
    return outcome


async def redrive(broker: Broker, c: Collections, operator: Operator, *, ids: list[str],
                  reason_contains: str | None, dry_run: bool) -> list[dlq.DeadLetter]:
    """Redrive the dead letters named or matching; a dry run only counts them."""
    match = dlq.matcher(ids, reason_contains, every=False)
    if dry_run:
        return [letter for letter in await dlq.list_letters(broker) if match(letter)]
    sent = await dlq.redrive(broker, match)
    await audit(c, DEAD_LETTERS_SCOPE, operator, "redrive", ids=[s.message_id for s in sent],
                reason_contains=reason_contains)
    for letter in sent:  # on each payment's page too, when the letter names one
        order_id = _order_of(letter)
        if order_id:
            await audit(c, order_id, operator, "redrive", dead_letter=letter.message_id)
    return sent


def _order_of(letter: dlq.DeadLetter) -> str | None:
    """The payment a dead letter is about, when it can be read from it."""
    try:
        envelope = AlertEnvelope.from_bytes(letter.body)
        alert = parse_alert(decode_body(envelope.body.encode())[1])
        return alert.order_id
    except (InvalidEnvelope, ValueError):
        pass
    try:
        value = json.loads(letter.body)
        if isinstance(value, dict) and value.get("project_id") and value.get("payment_id"):
            return order_id(str(value["project_id"]), str(value["payment_id"]))
    except ValueError:
        pass
    return None
