"""Reconciliation with the sandbox as HighHelp: signed API calls, the poller settling what alerts
never told, retries, give-up, and a whole run with duplicates, reordering and drops."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ingest.app import BROKER, create_app
from sandbox.scenarios import Chaos
from sandbox.traffic import generate
from shared import mongo
from shared.gateway import GatewayClient, GatewayRejected, RetryPolicy
from shared.registrar import publish_registration
from shared.registration import Registration
from shared.settings import Settings
from shared.signature import load_signing_key
from shared.topology import DUE_QUEUE, wait_queue
from shared.wire import ALGORITHM_HEADER, SIGNATURE_HEADER, TOKEN_HEADER, request_headers
from tests.conftest import EventTap, wait_until
from tests.keys import PROJECT_ID, key_pem, vectors
from tests.sandbox_fixtures import RunningSandbox, sandbox_config
from tests.store_commands import counting
from worker.app import Worker
from worker.checks import Check

pytestmark = pytest.mark.services
FAST_POLLS = {"stale_after_s": 1.0, "ladder_s": [60.0], "lease_s": 30.0}


@dataclass
class Stack:
    settings: Settings
    sandbox: RunningSandbox
    ingest: TestClient[Any, Any]
    worker: Worker
    client: GatewayClient
    db: mongo.Collections
    channel: Any  # a test channel, for the checks waiting in the due queue


@pytest.fixture
async def stack(
    make_settings: Callable[..., Settings], start_sandbox: Callable[..., Any], amqp: Any,
    http: aiohttp.ClientSession,
) -> AsyncIterator[Callable[..., Any]]:
    @asynccontextmanager
    async def build(
        chaos: Chaos, maintenance_interval_s: float = 2.0, **poller: Any
    ) -> AsyncIterator[Stack]:
        sandbox = await start_sandbox(sandbox_config(chaos))
        settings = make_settings({"api_base_url": sandbox.url},
                                 poller={**FAST_POLLS, **poller},
                                 worker={"maintenance_interval_s": maintenance_interval_s})
        app = create_app(settings)
        ingest: TestClient[Any, Any] = TestClient(TestServer(app))
        await ingest.start_server()
        worker = Worker(settings)
        await worker.start(http=False)
        await wait_until(lambda: _is(app[BROKER].ready), 20, "ingest ready")
        client = GatewayClient(
            settings.projects[PROJECT_ID], http, RetryPolicy(base_s=0.05, max_wait_s=0.2),
            register=lambda reg: publish_registration(worker.broker, reg))
        mongo_client = mongo.client(settings.mongo)
        db = mongo.Collections.of(mongo_client[settings.mongo.database])
        try:
            yield Stack(settings, sandbox, ingest, worker, client, db, amqp)
        finally:
            await worker.stop()
            await ingest.close()
            await mongo_client.drop_database(settings.mongo.database)
            await mongo_client.close()

    yield build


async def _is(value: bool) -> bool:
    return value


def callback_base(stack: Stack) -> str:
    return str(stack.ingest.make_url("")).rstrip("/")


async def wait_final(stack: Stack, payment_id: str, timeout: float = 30) -> dict[str, Any]:
    async def final() -> dict[str, Any] | None:
        view = await stack.db.orders.find_one({"_id": f"{PROJECT_ID}:{payment_id}"})
        return view if view and view["final"] else None
    result: dict[str, Any] = await wait_until(final, timeout, f"{payment_id} final")
    return result


def test_request_signatures_match_the_vectors() -> None:
    for case in vectors()["cases"]:
        body = json.loads(case["raw_body"])
        rsa_key = load_signing_key(key_pem("merchant_request_private_key_pkcs8"), "rsa")
        headers = request_headers(PROJECT_ID, rsa_key, body, vectors()["timestamp"])
        assert headers[SIGNATURE_HEADER] == case["rsa_signature_by_merchant_key"]
        assert headers[TOKEN_HEADER] == vectors()["merchant_access_token"]
        assert ALGORITHM_HEADER not in headers
        hmac_key = load_signing_key(key_pem("request_hmac_key"), "hmac")
        headers = request_headers(PROJECT_ID, hmac_key, body, vectors()["timestamp"])
        assert headers[SIGNATURE_HEADER] == case["hmac_sha512_hex_by_request_key"]
        assert headers[ALGORITHM_HEADER] == "HMAC"


@pytest.mark.parametrize("algorithm", ["rsa", "hmac"])
async def test_client_requests_verify_in_the_sandbox(
    make_settings: Callable[..., Settings], start_sandbox: Callable[..., Any],
    http: aiohttp.ClientSession, algorithm: str, services: None,
) -> None:
    sandbox = await start_sandbox()
    project = {"api_base_url": sandbox.url}
    if algorithm == "hmac":
        project["request_hmac_key"] = "request_hmac.txt"
    settings = make_settings(project)
    client = GatewayClient(settings.projects[PROJECT_ID], http)
    assert (await client.balance())[0]["currency"] == "RUB"
    created = await client.create_payment("ecom", "payin", "sig-1", 500, "EUR", "card-ecom",
                                          "http://127.0.0.1:9")
    assert (created.status, created.sub_status) == ("processing", "new") and created.request_id
    # A key the sandbox does not know is refused, and not retried.
    stranger = GatewayClient(
        make_settings({"api_base_url": sandbox.url, "request_hmac_key": "callback_hmac.txt"})
        .projects[PROJECT_ID], http)
    calls = sandbox.state.info_calls
    with pytest.raises(GatewayRejected) as info:
        await stranger.info("ecom", "payin", "sig-1")
    assert info.value.http_status == 401 and sandbox.state.info_calls == calls


async def test_dropped_final_alert_is_settled_by_the_poller(
    stack: Callable[..., Any], events: EventTap,
) -> None:
    async with stack(Chaos(drop_rate=1.0, step_delay_s=0.05)) as s:
        await s.client.create_payment("p2p", "payin", "drop-1", 100, "RUB", "card-p2p",
                                      callback_base(s), extra={"sandbox": {"scenario": "success"}})
        view = await wait_final(s, "drop-1")
        assert view["status"] == "success" and view["product"] == "p2p"
        [event] = await events.wait(1)
        assert (event["status"], event["source"], event["final"]) == ("success", "poll", True)
        async def finished() -> dict[str, Any] | None:  # the event goes out before this
            return await s.db.polls.find_one({"order_id": f"{PROJECT_ID}:drop-1",
                                              "outcome": {"$ne": None}})
        poll = await wait_until(finished, 10, "the poll's outcome")
        assert poll["outcome"] == "settled"


async def test_info_503_twice_then_answer_settles_after_retries(
    stack: Callable[..., Any], events: EventTap, http: aiohttp.ClientSession,
) -> None:
    async with stack(Chaos(drop_rate=1.0, step_delay_s=0.05)) as s:
        await http.post(f"{s.sandbox.url}/sandbox/control", json={"info_responses": [503, 503]})
        await s.client.create_payment("p2p", "payin", "retry-1", 100, "RUB", "card-p2p",
                                      callback_base(s), extra={"sandbox": {"scenario": "decline"}})
        view = await wait_final(s, "retry-1")
        assert view["status"] == "decline"
        assert s.sandbox.state.info_calls == 3  # two 503s, then the answer: one poll
        assert await s.db.polls.count_documents({}) == 1


async def test_info_400_is_not_retried_and_the_order_stays_scheduled(
    stack: Callable[..., Any], http: aiohttp.ClientSession,
) -> None:
    async with stack(Chaos(drop_rate=1.0, step_delay_s=0.05)) as s:
        await http.post(f"{s.sandbox.url}/sandbox/control", json={"info_responses": [400]})
        await s.client.create_payment("p2p", "payin", "bad-1", 100, "RUB", "card-p2p",
                                      callback_base(s))

        async def polled() -> dict[str, Any] | None:
            return await s.db.polls.find_one({"order_id": f"{PROJECT_ID}:bad-1",
                                              "outcome": {"$ne": None}})
        poll = await wait_until(polled, 20, "the first poll")
        assert poll["outcome"] == "rejected" and s.sandbox.state.info_calls == 1
        view = await s.db.orders.find_one({"_id": f"{PROJECT_ID}:bad-1"})
        assert view is not None and not view["final"] and not view["needs_review"]
        assert view["next_poll_at"] is not None  # still scheduled: the ladder's next rung


async def test_never_settled_order_needs_review_and_order_stale_is_published(
    stack: Callable[..., Any], events: EventTap,
) -> None:
    async with stack(Chaos(drop_rate=1.0, step_delay_s=0.05), ladder_s=[0.3],
                     give_up_after_s=1.5) as s:
        await s.client.create_payment("p2p", "payin", "stuck-1", 100, "RUB", "card-p2p",
                                      callback_base(s), extra={"sandbox": {"scenario": "stuck"}})
        found = await events.wait(2, 30)  # the poll's change to requisites, then order.stale
        stale = [e for e in found if e["_routing_key"] == "order.stale"]
        assert len(stale) == 1 and stale[0]["needs_review"] is True
        view = await s.db.orders.find_one({"_id": f"{PROJECT_ID}:stuck-1"})
        assert view is not None and view["needs_review"] and view["next_poll_at"] is None
        polls = await s.db.polls.count_documents({"order_id": f"{PROJECT_ID}:stuck-1"})
        assert polls >= 2
        # A check that still comes for it (a duplicate, the sweep) polls it no more.
        check = Check(view["_id"], view["seq"], polls)
        assert await s.worker.poller.on_check(check, redelivered=True) == "dropped"
        assert await s.db.polls.count_documents({"order_id": view["_id"]}) == polls


async def test_end_to_end_with_duplicates_reordering_and_drops(
    stack: Callable[..., Any], events: EventTap,
) -> None:
    chaos = Chaos(duplicate_rate=0.3, reorder_rate=0.2, drop_rate=0.05, step_delay_s=0.05)
    count = int(os.environ.get("HH_E2E_PAYMENTS", "1000"))
    # One process plays HighHelp, ingest and the worker here, on the local MongoDB-compatible
    # server, whose every query but an _id lookup reads the whole collection: an offered load
    # it carries, polls only for orders whose alerts really stopped, and scans spaced out.
    async with stack(chaos, stale_after_s=5.0, ladder_s=[3.0, 10.0],
                     maintenance_interval_s=30.0) as s:
        started = time.monotonic()
        created = await generate(s.client, count, 20.0, callback_base(s), prefix="e2e")
        assert len(created) == count
        await s.sandbox.state.drain()

        finals: dict[str, dict[str, Any]] = {}

        async def every_order_final() -> bool:
            for event in await events.drain():
                if event["final"] and event["type"] == "transition":
                    finals[event["payment_id"]] = event
            return len(finals) == count
        try:
            await wait_until(every_order_final, 600, f"{count} final events", every=1.0)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {await _state(s)}") from None
        truth = s.sandbox.state.truth()
        mismatches = []
        for row in truth["payments"]:
            view = await s.db.orders.find_one({"_id": f"{PROJECT_ID}:{row['payment_id']}"})
            if view is None or view["status"] != row["status"]:
                mismatches.append((row["payment_id"], row["status"], view and view["status"]))
        assert mismatches == []
        logged = {t["event"]["event_id"] async for t in s.db.transitions.find({})}
        published = await events.drain()
        # Exactly one event per distinct transition: every logged step went out, nothing else
        # did (a re-publish after a crash would repeat an event_id, never add a new one).
        assert {e["event_id"] for e in published if e["type"] == "transition"} == logged
        totals = truth["totals"]
        print(f"\ne2e: {count} payments, {totals['alerts_sent']} alerts delivered "
              f"({totals['duplicates_sent']} duplicates, {totals['alerts_dropped']} dropped), "
              f"{await s.db.polls.count_documents({})} polls, {len(logged)} transitions, "
              f"{len(published)} events, {time.monotonic() - started:.1f}s")


async def _state(s: Stack) -> str:
    """What a stuck run looks like: for a failure message, not for assertions."""
    views = [v async for v in s.db.orders.find({"final": False})]
    truth = {r["payment_id"]: r for r in s.sandbox.state.truth()["payments"]}
    polls = Counter([p["outcome"] async for p in s.db.polls.find({})])
    sample = [(v["payment_id"], v["status"], v["sub_status"], v["next_poll_at"], v["polls"],
               truth.get(v["payment_id"], {}).get("status")) for v in views[:5]]
    return (f"{len(views)} not final; by status {Counter(v['status'] for v in views)}; "
            f"polls {dict(polls)}; sample {sample}; now {time.time()}")


async def _stale_stuck_order(s: Stack, payment_id: str) -> dict[str, Any]:
    await s.client.create_payment("p2p", "payin", payment_id, 100, "RUB", "card-p2p",
                                  callback_base(s), extra={"sandbox": {"scenario": "stuck"}})

    async def due() -> dict[str, Any] | None:
        view = await s.db.orders.find_one({"_id": f"{PROJECT_ID}:{payment_id}"})
        ready = view and view["next_poll_at"] and view["next_poll_at"].timestamp() <= time.time()
        return view if ready else None
    result: dict[str, Any] = await wait_until(due, 20, f"{payment_id} due for a poll")
    return result


async def due_check(s: Stack, order_id: str, seq: int, step: int) -> Check:
    """The check the broker hands over for `order_id` at (`seq`, `step`) (the worker's
    consumer of the due queue is off in these tests: they decide checks themselves)."""
    queue = await s.channel.get_queue(DUE_QUEUE, ensure=False)

    async def arrived() -> Check | None:
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            check = Check.from_bytes(message.body)
            if (check.order_id, check.seq, check.step) == (order_id, seq, step):
                return check
        return None
    found: Check = await wait_until(arrived, 20, f"the check of {order_id} step {step}")
    return found


async def test_poll_claimed_by_a_dead_replica_is_skipped_and_polling_goes_on(
    stack: Callable[..., Any],
) -> None:
    async with stack(Chaos(drop_rate=1.0, step_delay_s=0.05), enabled=False, lease_s=1.0,
                     stale_after_s=0.5, ladder_s=[0.2]) as s:
        view = await _stale_stuck_order(s, "dead-claim")
        from worker.records import utc

        await s.db.polls.insert_one({  # a replica claimed attempt 1 long ago and died
            "_id": f"{view['_id']}:1", "order_id": view["_id"], "attempt": 1, "for_seq": 0,
            "ladder_step": 0, "owner": "dead", "claimed_at": utc(time.time() - 60),
            "finished_at": None, "outcome": None})
        poller = s.worker.poller
        assert await poller.on_check(Check(view["_id"], view["seq"], 0)) == "polled"
        schedule = await s.db.poll_schedule.find_one({"_id": view["_id"]})
        assert schedule is not None and schedule["attempt"] == 2  # the attempt really made

        # The poll found the payment moved on: its change scheduled the next check, which
        # comes through the broker's wait queue.
        moved = await s.db.orders.find_one({"_id": view["_id"]})
        assert moved is not None and moved["seq"] == view["seq"] + 1
        check = await due_check(s, view["_id"], moved["seq"], 0)
        assert await poller.on_check(check) == "polled"
        third = await s.db.polls.find_one({"_id": f"{view['_id']}:3"})
        assert third is not None and third["outcome"] is not None  # not stuck on attempt 2


async def test_lost_schedule_write_is_repaired_from_the_finished_poll(
    stack: Callable[..., Any],
) -> None:
    async with stack(Chaos(drop_rate=1.0, step_delay_s=0.05), enabled=False, lease_s=1.0,
                     stale_after_s=0.5) as s:
        view = await _stale_stuck_order(s, "lost-schedule")
        from worker.records import utc

        later = utc(time.time() + 3600)
        schedule = {"attempt": 1, "last_seq": view["seq"], "ladder_step": 1,
                    "next_due_at": later, "gave_up": False, "updated_at": utc(time.time())}
        await s.db.polls.insert_one({  # attempt 1 finished, its owner died before the schedule
            "_id": f"{view['_id']}:1", "order_id": view["_id"], "attempt": 1,
            "for_seq": view["seq"], "ladder_step": 0, "owner": "dead",
            "claimed_at": utc(time.time() - 60), "finished_at": utc(time.time() - 30),
            "outcome": "unchanged", "schedule": schedule})
        calls = s.sandbox.state.info_calls
        check = Check(view["_id"], view["seq"], 0)
        assert await s.worker.poller.on_check(check) == "rechecking"  # no second poll
        assert s.sandbox.state.info_calls == calls
        repaired = await s.db.poll_schedule.find_one({"_id": view["_id"]})
        assert repaired is not None and repaired["attempt"] == 1
        fresh = await s.db.orders.find_one({"_id": view["_id"]})
        assert fresh is not None and fresh["next_poll_at"].timestamp() == pytest.approx(
            later.timestamp(), abs=0.01)


async def test_widget_order_is_not_pollable_and_the_round_goes_on(
    stack: Callable[..., Any],
) -> None:
    """The spec gives no status endpoint for widget payments: their poll is finished as
    `not_pollable` (the ladder goes on, to needs_review in time), and no gateway error
    escapes the round, so the other due orders are still polled."""
    async with stack(Chaos(drop_rate=1.0, step_delay_s=0.05), enabled=False,
                     stale_after_s=0.5) as s:
        await publish_registration(s.worker.broker, Registration(
            PROJECT_ID, "widget-1", "widget", "payin", 500, "RUB"))
        p2p = await _stale_stuck_order(s, "after-widget")

        async def widget_due() -> bool:
            view = await s.db.orders.find_one({"_id": f"{PROJECT_ID}:widget-1"})
            return bool(view and view["next_poll_at"]
                        and view["next_poll_at"].timestamp() <= time.time())
        await wait_until(widget_due, 20, "the widget order due")
        poller = s.worker.poller
        assert await poller.on_check(Check(f"{PROJECT_ID}:widget-1", 0, 0)) == "polled"
        assert await poller.on_check(Check(p2p["_id"], p2p["seq"], 0)) == "polled"
        widget_poll = await s.db.polls.find_one({"_id": f"{PROJECT_ID}:widget-1:1"})
        assert widget_poll is not None and widget_poll["outcome"] == "not_pollable"
        other = await s.db.polls.find_one({"_id": f"{p2p['_id']}:1"})
        assert other is not None and other["outcome"] in ("unchanged", "changed")
        view = await s.db.orders.find_one({"_id": f"{PROJECT_ID}:widget-1"})
        assert view is not None and view["next_poll_at"] is not None  # the ladder goes on


async def test_a_crash_after_the_poll_is_finished_by_the_redelivered_check(
    stack: Callable[..., Any],
) -> None:
    """The poll was made and recorded, then the worker died before the next rung's check went
    out: the redelivered check finds the poll made and sends that check, once."""
    async with stack(Chaos(drop_rate=1.0, step_delay_s=0.05), enabled=False,
                     stale_after_s=0.5, ladder_s=[0.3]) as s:
        view = await _stale_stuck_order(s, "crash-after-poll")
        poller = s.worker.poller
        assert await poller.on_check(Check(view["_id"], view["seq"], 0)) == "polled"
        seq = view["seq"] + 1  # the first poll found the payment's status: a change
        check = await due_check(s, view["_id"], seq, 0)
        healthy = poller._schedule_next

        async def crash(*args: Any, **kwargs: Any) -> None:
            raise ConnectionError("simulated crash before the next check went out")

        poller._schedule_next = crash  # type: ignore[method-assign]
        with pytest.raises(ConnectionError):
            await poller.on_check(check)
        poller._schedule_next = healthy  # type: ignore[method-assign]
        calls = s.sandbox.state.info_calls
        assert await poller.on_check(check, redelivered=True) == "made_already"
        assert s.sandbox.state.info_calls == calls  # not polled twice
        assert await due_check(s, view["_id"], seq, 1)  # the next rung's check went out
        # Once sent, a further redelivery sends it no more (its marker is there).
        assert await poller.on_check(check, redelivered=True) == "made_already"
        queue = await s.channel.get_queue(DUE_QUEUE, ensure=False)
        await asyncio.sleep(0.6)  # two wait periods: a second copy would have come by now
        leftover = await queue.get(no_ack=True, fail=False)
        assert leftover is None, leftover.body


async def test_the_sweep_reschedules_an_order_whose_check_was_lost(
    stack: Callable[..., Any],
) -> None:
    async with stack(Chaos(drop_rate=1.0, step_delay_s=0.05), enabled=False,
                     stale_after_s=0.5, sweep_grace_s=0.0) as s:
        view = await _stale_stuck_order(s, "lost-check")
        # The order's own check may still wait for its delay: purge only once it is due, so
        # that it cannot arrive after the purge (the test would race the broker's timer).
        async def none_waiting() -> bool:
            # aiormq's declare: aio-pika's robust channel answers a repeat from memory.
            underlay = await s.channel.get_underlay_channel()
            result = await underlay.queue_declare(wait_queue(0.5), passive=True)
            return result.message_count == 0

        await wait_until(none_waiting, what="the order's check to leave its wait queue")
        due = await s.channel.get_queue(DUE_QUEUE, ensure=False)
        await due.purge()  # an operator purged the queue: the check is gone
        with counting(s.settings.mongo.database) as commands:
            assert await s.worker.poller.sweep() == 1
        assert len(commands.not_by_id()) == 1  # one scan of the orders, then reads by _id
        check = await due_check(s, view["_id"], view["seq"], 0)
        assert check.recheck
        assert await s.worker.poller.on_check(check) == "polled"
