"""Poll timing: due after stale_after, then the ladder, then giving up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.broker import check_delays
from shared.settings import PollerSettings
from shared.topology import DUE_QUEUE, contract_topology, wait_queue
from worker.checks import Check, InvalidCheck
from worker.schedule import Slot, after_poll, check_delay, next_poll_at, next_slot

T0 = datetime(2026, 1, 1, tzinfo=UTC)
S = PollerSettings(stale_after_s=600, give_up_after_s=3 * 3600, ladder_s=(60, 300, 900))


def test_non_final_order_is_due_once_stale() -> None:
    assert next_poll_at(False, 2, T0, None, S) == T0 + timedelta(seconds=600)
    assert next_poll_at(True, 2, T0, None, S) is None
    assert next_poll_at(False, 0, None, None, S) is None


def test_next_slot_follows_the_view_and_schedule() -> None:
    order = {"seq": 2, "next_poll_at": T0}
    assert next_slot(order, None) == Slot(1, 2, 0)
    schedule = {"attempt": 3, "last_seq": 2, "ladder_step": 2}
    assert next_slot(order, schedule) == Slot(4, 2, 2)
    moved = {"attempt": 3, "last_seq": 1, "ladder_step": 2}
    assert next_slot(order, moved) == Slot(4, 2, 0)  # changed since: the ladder restarts


def test_ladder_after_unchanged_polls_then_repeats_last_rung() -> None:
    now = T0 + timedelta(seconds=600)
    first = after_poll(Slot(1, 2, 0), 2, T0, now, S)
    assert (first["ladder_step"], first["next_due_at"]) == (1, now + timedelta(seconds=60))
    third = after_poll(Slot(3, 2, 2), 2, T0, now, S)
    assert third["next_due_at"] == now + timedelta(seconds=900)
    later = after_poll(Slot(9, 2, 8), 2, T0, now, S)
    assert later["next_due_at"] == now + timedelta(seconds=900) and not later["gave_up"]
    sched = {"attempt": 1, "last_seq": 2, "ladder_step": 1, "gave_up": False,
             "next_due_at": first["next_due_at"]}
    assert next_poll_at(False, 2, T0, sched, S) == first["next_due_at"]


def test_poll_that_moved_the_order_restarts_the_clock() -> None:
    now = T0 + timedelta(seconds=600)
    moved = after_poll(Slot(1, 2, 0), 3, now, now, S)
    assert moved["ladder_step"] == 0 and moved["next_due_at"] == now + timedelta(seconds=600)
    assert not moved["gave_up"]


def test_gives_up_after_give_up_after_without_change() -> None:
    late = T0 + timedelta(hours=3)
    gave_up = after_poll(Slot(7, 2, 5), 2, T0, late, S)
    assert gave_up["gave_up"]
    assert next_poll_at(False, 2, T0, {**gave_up}, S) is None


def test_a_check_waits_the_stale_period_then_each_rung() -> None:
    assert [check_delay(step, S) for step in range(5)] == [600, 60, 300, 900, 900]


def test_one_wait_queue_per_distinct_delay_dead_lettering_into_the_due_queue() -> None:
    delays = check_delays(PollerSettings(stale_after_s=60, ladder_s=(60, 300, 0.5)))
    assert delays == (0.5, 60, 300)
    queues = {q.name: q for q in contract_topology(20, (), delays).queues}
    waiting = queues[wait_queue(0.5)]
    assert waiting.name == "hh.orders.checks.wait.500ms"
    assert waiting.arguments["x-message-ttl"] == 500
    assert waiting.arguments["x-dead-letter-routing-key"] == DUE_QUEUE
    assert DUE_QUEUE in queues and wait_queue(300) in queues


def test_a_check_round_trips_and_refuses_what_is_not_one() -> None:
    check = Check("p:pay-1", 3, 2, recheck=True)
    assert Check.from_bytes(check.to_bytes()) == check
    for bad in (b"", b"[]", b'{"order_id": "p:x", "seq": -1, "step": 0}',
                b'{"order_id": "nocolon", "seq": 1, "step": 0}'):
        with pytest.raises(InvalidCheck):
            Check.from_bytes(bad)



def test_a_delayed_retry_returns_to_the_queue_it_came_from() -> None:
    from shared.topology import ORIGIN_HEADER, PROCESS_QUEUE, REGISTER_QUEUE, RETURN_EXCHANGE

    topology = contract_topology(20, (1, 5))
    bound = {q.name: [b for b in q.bindings if b[0] == RETURN_EXCHANGE] for q in topology.queues}
    for queue in (PROCESS_QUEUE, REGISTER_QUEUE, DUE_QUEUE):
        [(_, _, arguments)] = bound[queue]
        assert arguments == {"x-match": "all", ORIGIN_HEADER: queue}
    # A headers exchange ignores x- headers when matching: every queue would match.
    assert not ORIGIN_HEADER.startswith("x-")
