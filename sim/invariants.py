"""What must hold of every history, judged on the in-memory store and broker: at every rest
(no call, delivery or task under way), once the schedule has quiesced, after retention, and
after HighHelp repeats every alert long after."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.alert import decode_body, is_final, parse_alert
from shared.envelope import AlertEnvelope
from sim.scenario import PROJECT_ID

if TYPE_CHECKING:
    from sim.store import MemCollection
    from sim.world import World

Document = dict[str, Any]


def _fail(world: World, text: str) -> None:
    from sim.world import Violation
    raise Violation(f"t={world.loop.now:.3f}: {text}")


def _docs(world: World, name: str) -> dict[Any, Document]:
    collection: MemCollection = getattr(world.collections, name)
    return collection.docs


def _logs(world: World) -> dict[str, list[Document]]:
    logs: dict[str, list[Document]] = {}
    for record in _docs(world, "transitions").values():
        logs.setdefault(record["order_id"], []).append(record)
    for records in logs.values():
        records.sort(key=lambda r: r["seq"])
    return logs


def _pending(world: World) -> tuple[set[tuple[str, int]], set[str]]:
    """The checks the broker holds, (order, seq); and the orders it holds other work for."""
    checks: set[tuple[str, int]] = set()
    others: set[str] = set()
    for message in world.broker.held():
        data = json.loads(message.body)
        if "step" in data:
            checks.add((data["order_id"], int(data["seq"])))
        elif "body" in data:
            alert = json.loads(data["body"])
            others.add(f"{PROJECT_ID}:{alert['general']['payment_id']}")
        else:
            others.add(f"{data['project_id']}:{data['payment_id']}")
    return checks, others


def at_rest(world: World) -> None:
    """Every order that is not final and not given up has a check waiting for its current
    step (or other work of it is still in the broker)."""
    checks, others = _pending(world)
    logs = _logs(world)
    views = _docs(world, "orders")
    for order_id in sorted(set(logs) | set(views)):
        if order_id in others:
            continue
        log = logs.get(order_id, [])
        head = log[-1]["seq"] if log else 0
        view = views.get(order_id)
        if view is None:
            _fail(world, f"{order_id}: a log and no view, and nothing of it in the broker")
            return
        if not world.troubles and log and view["seq"] != head:
            # With no crash or failure so far, every view writer finished its re-reads.
            _fail(world, f"{order_id}: at rest the view is at seq {view['seq']}, the log at "
                         f"{head}, with no crash or failure")
        if view["final"] or view["needs_review"]:
            continue
        # A check for the view's step leads to a poll that finds the log's head.
        if (order_id, head) in checks or (order_id, view["seq"]) in checks:
            continue
        # A step a poll made whose owner died before its next check: an older check of the
        # order, when due, sends that check (the poller's repair of a moved order).
        polls = _docs(world, "polls")
        if log and log[-1]["source"] == "poll" and not polls.get(
                log[-1]["correlation_id"], {}).get("next_check_sent") and any(
                o == order_id and seq < head for o, seq in checks):
            continue
        _fail(world, f"{order_id}: not final, not given up, and no check waits for seq "
                         f"{head} (checks: {sorted(c for c in checks if c[0] == order_id)})")


def _accepted_keys(world: World) -> list[str]:
    keys = []
    for body in world.broker.accepted:
        envelope = AlertEnvelope.from_bytes(body)
        keys.append(parse_alert(decode_body(envelope.body.encode())[1]).idempotency_key)
    return keys


def at_end(world: World) -> None:
    inbox = _docs(world, "callbacks")
    for key in _accepted_keys(world):
        if key not in inbox:
            _fail(world, f"accepted alert {key} never recorded in the inbox")
    if world.broker.dead:
        reasons = [m.headers.get("x-hh-reason") for m in world.broker.dead]
        _fail(world, f"dead-lettered: {reasons}")
    logs = _logs(world)
    for order_id, log in logs.items():
        if [r["seq"] for r in log] != list(range(1, len(log) + 1)):
            _fail(world, f"{order_id}: log has gaps {[r['seq'] for r in log]}")
        finals = [r["seq"] for r in log if is_final(r["to"]["status"])]
        if finals and finals[0] != log[-1]["seq"]:
            _fail(world, f"{order_id}: final status at seq {finals[0]} replaced by "
                         f"{log[-1]['to']['status']} at seq {log[-1]['seq']}")
    _events(world, logs)
    _views(world, logs)
    made = Counter(call.poll_id for call in world.gateway.calls)
    twice = sorted(str(poll) for poll, count in made.items() if count > 1)
    if twice or None in made:
        _fail(world, f"poll attempts asked of the gateway more than once (or unclaimed): {twice}")
    _truth(world)


def _events(world: World, logs: dict[str, list[Document]]) -> None:
    published: dict[str, set[str]] = {}
    for message in world.broker.events:
        event = message.json()
        shape = json.dumps({k: event[k] for k in ("type", "project_id", "payment_id", "status",
                                                  "sub_status", "previous", "source")},
                           sort_keys=True)
        published.setdefault(event["event_id"], set()).add(shape)
    for event_id, shapes in published.items():
        if len(shapes) > 1:
            _fail(world, f"event {event_id} published with different contents: {shapes}")
    owners: dict[str, str] = {}
    records = [r for log in logs.values() for r in log]
    records += list(_docs(world, "anomalies").values())
    for record in records:
        event_id = record["event"]["event_id"]
        if event_id in owners:
            _fail(world, f"{record['_id']} and {owners[event_id]} share event {event_id}")
        owners[event_id] = record["_id"]
        if event_id not in published:
            _fail(world, f"{record['_id']}: its event {event_id} was never published")
    for message in world.broker.events:
        event = message.json()
        if event["type"] in ("transition", "anomaly") and event["event_id"] not in owners:
            _fail(world, f"published {event['type']} event {event['event_id']} has no record")


def _views(world: World, logs: dict[str, list[Document]]) -> None:
    views = _docs(world, "orders")
    schedules = _docs(world, "poll_schedule")
    stale = {(e["project_id"], e["payment_id"]) for e in (m.json() for m in world.broker.events)
             if e["type"] == "stale"}
    for order_id, log in logs.items():
        view, head = views.get(order_id), log[-1]
        if view is None or view["seq"] != head["seq"] or view["status"] != head["to"]["status"]:
            _fail(world, f"{order_id}: view {view and (view['seq'], view['status'])} is not the "
                         f"log's head {(head['seq'], head['to']['status'])}")
    for order_id, view in views.items():
        if view["final"]:
            continue
        schedule = schedules.get(order_id)
        if not (view["needs_review"] and schedule and schedule["gave_up"]):
            _fail(world, f"{order_id}: quiesced neither final nor given up ({view['status']})")
        if (view["project_id"], view["payment_id"]) not in stale:
            _fail(world, f"{order_id}: given up without order.stale")


def _truth(world: World) -> None:
    for order_id, view in _docs(world, "orders").items():
        payment_id = view["payment_id"]
        final = [s for _, s, _ in world.scenario.truth[payment_id] if is_final(s)]
        if payment_id in world.scenario.conflicting:
            continue
        if view["needs_review"] and world.troubles:
            continue  # its polls may have failed until it was given up: a person's to review
        if final and view["status"] != final[0]:
            _fail(world, f"{order_id}: ended {view['status']}, the payment is {final[0]}")


@dataclass
class Snapshot:
    events: int
    event_ids: set[str]
    views: dict[str, tuple[Any, ...]]

    @classmethod
    def of(cls, world: World) -> Snapshot:
        return cls(len(world.broker.events), {m.json()["event_id"] for m in world.broker.events},
                   {k: (v["status"], v["final"], v["needs_review"])
                    for k, v in _docs(world, "orders").items()})


def after_retention(world: World) -> None:
    live = {r["event"]["event_id"] for name in ("transitions", "anomalies", "polls")
            for r in _docs(world, name).values() if "event" in r}
    orphans = sorted(set(_docs(world, "published")) - live)
    if orphans:
        _fail(world, f"retention left {len(orphans)} published markers of deleted records")
    world.kept = set(_docs(world, "transitions"))


def after_repeats(world: World, before: Snapshot) -> None:
    for message in world.broker.events[before.events:]:
        event = message.json()
        if event["type"] != "anomaly" or event["event_id"] not in before.event_ids:
            _fail(world, f"after retention a repeated alert published {event['type']} "
                         f"{event['status']} of {event['payment_id']} ({event['event_id']})")
    new = sorted(set(_docs(world, "transitions")) - world.kept)
    if new:
        _fail(world, f"after retention repeated alerts made new steps {new}")
    now = {k: (v["status"], v["final"], v["needs_review"])
           for k, v in _docs(world, "orders").items()}
    if now != before.views:
        changed = {k: (before.views.get(k), v) for k, v in now.items()
                   if before.views.get(k) != v}
        _fail(world, f"after retention repeated alerts changed orders: {changed}")
