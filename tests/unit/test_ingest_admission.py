"""The ingest's cheap paths: the admission bound, the key tried first, the log line."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from ingest.admission import (
    LOG_EVERY_S,
    MIN_LIMIT,
    RESTING_LIMIT,
    STANDING,
    Admission,
    next_limit,
    whole_alert_request,
)
from shared import logs, signature
from shared.settings import SettingsError, parse_settings
from tests.keys import gateway_hmac, gateway_rsa


def test_admission_takes_places_up_to_its_bound_and_frees_them() -> None:
    admission = Admission(2)
    assert [admission.enter() for _ in range(3)] == [True, True, False]
    admission.leave()
    assert admission.enter() is True
    assert admission.in_flight == 2


def test_a_place_reserved_for_a_connection_is_its_handlers_or_given_back_on_loss() -> None:
    admission = Admission(2)
    first, second, third = object(), object(), object()
    assert admission.reserve(first) and admission.reserve(second)
    assert not admission.reserve(third)  # the bound counts reserved places
    assert admission.in_flight == 2
    assert admission.claim(first) and not admission.claim(first)  # claimed once
    assert not admission.claim(third)  # nothing reserved: the handler enters itself
    admission.leave(0.01)  # the handler's answer gives the claimed place back
    admission.release(first)  # already the handler's: nothing more to give back
    assert admission.in_flight == 1
    admission.release(second)  # lost before its handler ran
    assert admission.in_flight == 0
    assert not admission.claim(second)


def test_a_connection_holds_one_reserved_place_however_often_it_reserves() -> None:
    admission = Admission(2)
    connection = object()
    assert admission.reserve(connection) and admission.reserve(connection)
    assert admission.in_flight == 1
    admission.release(connection)
    assert admission.in_flight == 0


def test_a_fixed_bound_stays_where_it_was_set() -> None:
    admission = Admission(3)  # no latency target: the ceiling, fixed
    for lag in (0.0, 1.0):
        admission.full()
        admission.next_interval(lag)
    assert admission.limit == 3


def bound(limit: int = 100, *, reached: bool = True, lag_s: float = 0.0, stood: int = 0,
          floor: int = 8, ceiling: int = 500) -> int:
    return next_limit(limit, reached=reached, lag_s=lag_s, stood=stood, target_s=0.02,
                      floor=floor, ceiling=ceiling)


def test_a_bound_not_reached_returns_to_rest_unless_the_loop_lags() -> None:
    assert bound(20, reached=False, stood=STANDING) == RESTING_LIMIT
    assert bound(300, reached=False) == RESTING_LIMIT  # grown in a stall: forgotten
    assert bound(20, reached=False, lag_s=1.0) == 20  # the process is busy all the same
    assert bound(200, reached=False, ceiling=20) == 20


def test_a_reached_bound_grows_while_no_queue_stands_up_to_the_ceiling() -> None:
    assert bound(100) == 125
    assert bound(9) == 11
    assert bound(480, ceiling=500) == 500


def test_a_lagging_loop_cuts_the_bound_in_proportion_at_most_by_half() -> None:
    assert bound(100, lag_s=0.025) == 80  # 20 ms of target in 25 ms of lag
    assert bound(100, lag_s=1.0) == 50
    assert bound(10, lag_s=1.0) == 8  # never below the floor


def test_a_queue_cuts_the_bound_only_once_it_has_stood() -> None:
    assert [bound(100, stood=n) for n in range(1, STANDING)] == [100] * (STANDING - 1)
    assert bound(100, stood=STANDING) == 80
    assert bound(9, stood=STANDING + 3) == 8


def answered(admission: Admission, *took_s: float) -> None:
    for took in took_s:
        assert admission.enter()
        admission.leave(took)


def interval(admission: Admission, *, reached: bool = True, lag_s: float = 0.0) -> int:
    """End an interval in which every place was taken (`reached`) or not; the new bound."""
    if reached:
        taken, admission.in_flight = admission.in_flight, admission.limit
        assert not admission.enter()
        admission.in_flight = taken
    admission.next_interval(lag_s)
    return admission.limit


def test_a_queue_stands_when_the_median_alert_waits_past_the_unloaded_latency() -> None:
    admission = Admission(500, target_s=0.02)
    assert admission.limit == RESTING_LIMIT == 100
    answered(admission, 0.004, 0.005, 0.006)  # unloaded: 4 ms, the quickest of the window
    assert interval(admission) == 125
    # The median alert waits 50 ms past it, though one is quick (a confirm in a batch that
    # came back at once): a queue. It holds for STANDING - 1 intervals, then is cut.
    limits = []
    for _ in range(STANDING + 1):
        answered(admission, 0.006, 0.054, 0.06)
        limits.append(interval(admission))
    assert limits == [125] * (STANDING - 1) + [100, 80]
    # Most alerts quick again: no queue; the bound, reached, grows.
    answered(admission, 0.005, 0.006, 0.2)
    assert interval(admission) == 100


def test_a_broker_slow_to_confirm_is_no_queue() -> None:
    """Every alert takes 50 ms, the broker's own time (a cluster's disk): the quickest of the
    window is as slow, nothing waits past it, and the bound is not cut for it."""
    admission = Admission(500, target_s=0.02)
    limits = []
    for _ in range(STANDING + 1):
        answered(admission, 0.05, 0.05, 0.051)
        limits.append(interval(admission))
    assert limits == [125, 156, 195, 243, 303, 378]


def test_rejected_alerts_and_intervals_without_answers_tell_no_queue() -> None:
    admission = Admission(500, target_s=0.02)
    answered(admission, 0.001)
    interval(admission, reached=False)
    for _ in range(STANDING):
        answered(admission, 0.5)
        interval(admission, reached=False)  # not reached: at rest, but the queue is counted
    assert admission.enter()
    admission.leave()  # a rejection (401, 413, ...): no time given, none counted
    assert interval(admission) == 80  # nothing answered: the queue still counts as standing
    assert interval(admission) == 64


def stalled(admission: Admission, silent_s: float) -> Admission:
    """Every place taken, nothing answered for `silent_s`, the loop's last tick on time."""
    admission.in_flight = admission.limit
    admission.ticked(0.0)
    admission._silent_since -= silent_s
    return admission


def test_a_confirm_stall_doubles_the_bound_at_once_while_the_loop_keeps_time() -> None:
    """The broker confirms nothing and the loop keeps time: the alerts waiting cost the
    process nothing, so the alert that finds every place taken is let in, the bound doubled;
    the next doubling waits for as long a silence again, and none passes the ceiling."""
    admission = stalled(Admission(300, target_s=0.02), 0.05)
    assert admission.enter() is True and admission.limit == 200
    admission.in_flight = 200
    assert admission.full() is True and admission.limit == 200  # silent since the doubling
    stalled(admission, 0.05)
    assert admission.full() is False and admission.limit == 300  # the ceiling
    stalled(admission, 0.05)
    assert admission.full() is True and admission.limit == 300


def test_no_stall_is_told_from_a_busy_loop_a_recent_answer_a_queue_or_a_fixed_bound() -> None:
    busy = stalled(Admission(500, target_s=0.02), 0.05)
    busy._on_time_at -= 1.0  # no tick on time for a second: the loop runs the alerts it took
    answering = Admission(500, target_s=0.02)
    answering.ticked(0.0)
    assert answering.enter() is True
    answering.leave(0.005)  # answered just now
    answering.in_flight = answering.limit
    fixed = stalled(Admission(40), 0.05)
    late = Admission(500, target_s=0.02)
    late.ticked(0.03)  # a tick 30 ms late: not on time
    late.in_flight = late.limit
    late._silent_since -= 0.05
    queued = Admission(500, target_s=0.02)  # the median alert waited past the target
    answered(queued, 0.004)
    queued.next_interval()
    answered(queued, 0.06)
    queued.next_interval()
    stalled(queued, 0.05)  # a gap between batched confirms under a standing overload
    for admission in (busy, answering, fixed, late, queued):
        assert admission.full() is True
    assert [a.limit for a in (busy, answering, fixed, late, queued)] == [100, 100, 40, 100, 100]


def work_for(seconds: float) -> None:
    """Keep the CPU, and so the event loop, busy."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def test_a_loop_kept_busy_reports_its_lag_and_cuts_the_bound() -> None:
    """The task that moves the bound reads the loop's lag from its own timer: a loop held for
    0.1 s (the work the bound is there to keep short) fires it late, and the bound, reached,
    is halved."""
    admission = Admission(500, target_s=0.02)
    lags: list[float] = []
    lagged = asyncio.Event()

    def observe(lag_s: float) -> None:
        lags.append(lag_s)
        if lag_s > 0.05:
            lagged.set()

    moving = asyncio.create_task(admission.run(observe, interval_s=0.01))
    try:
        admission.in_flight = admission.limit
        assert admission.full()
        await asyncio.sleep(0)  # the task takes its first timer
        work_for(0.1)  # the stimulus, not a wait: the loop held by work
        await asyncio.wait_for(lagged.wait(), 5)
    finally:
        moving.cancel()
    assert lags[-1] > 0.05
    assert admission.limit == RESTING_LIMIT // 2


def test_the_floor_is_never_above_the_ceiling() -> None:
    admission = Admission(3, target_s=0.02)
    assert (admission.limit, admission.floor) == (3, 3)
    admission.in_flight = 3
    admission.full()
    admission.next_interval(lag_s=1.0)
    assert admission.limit == 3
    assert Admission(500, target_s=0.02).floor == MIN_LIMIT


def test_refusals_are_logged_once_a_second_with_their_count() -> None:
    admission = Admission(1)
    said = [admission.refusals_to_log(t) for t in (0.0, 0.1, 0.2, LOG_EVERY_S + 0.05)]
    assert said == [1, 0, 0, 3]


BODY = b'{"general": {"project_id": "p"}}'


def request(path: str = "/callbacks/highhelp", headers: str = "", body: bytes = BODY,
            length: int | None = None, version: str = "HTTP/1.1") -> bytes:
    length = len(body) if length is None else length
    return (f"POST {path} {version}\r\nHost: ingest\r\nContent-Type: application/json\r\n"
            f"{headers}Content-Length: {length}\r\n\r\n").encode() + body


def test_a_whole_alert_request_is_recognised_by_its_route() -> None:
    assert whole_alert_request(request()) == "callback"
    assert whole_alert_request(request("/callbacks/highhelp/decline")) == "decline"
    assert whole_alert_request(request().replace(b"Content-Length", b"content-LENGTH")) == (
        "callback")


@pytest.mark.parametrize("data", [
    request()[:-1],  # the body not all here yet
    request()[:40],  # the headers not all here yet
    request() + request(),  # pipelined: aiohttp answers them in order
    request(length=len(BODY) - 1),
    request(headers="Content-Length: 3\r\n"),  # two lengths
    request(headers="Transfer-Encoding: chunked\r\n"),
    request(headers="Expect: 100-continue\r\n"),
    request(headers="Connection: close\r\n"),
    request(headers="X-HH-Callbacks-Probe: 1\r\n"),  # a probe is answered even when full
    request(length=-1), request().replace(b"Content-Length: 32", b"Content-Length: 3 2"),
    request().replace(b"Content-Length: 32", b"Content-Length: " + b"9" * 5000),  # no int()
    request("/callbacks/highhelp?x=1"), request("/healthz"), request(version="HTTP/1.0"),
    request().replace(b"POST", b"GET"), b"", b"\r\n\r\n",
])
def test_anything_else_goes_the_long_way_through_aiohttp(data: bytes) -> None:
    assert whole_alert_request(data) is None


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(SettingsError, match="max_in_flight"):
        parse_settings({"ingest": {"max_in_flight": 0}}, Path("."), env={})
    with pytest.raises(SettingsError, match="latency_target_s"):
        parse_settings({"ingest": {"latency_target_s": -1}}, Path("."), env={})


@pytest.mark.parametrize("kind", ["hmac", "rsa"])
def test_the_key_of_the_signatures_kind_is_tried_first(
    kind: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    signer = gateway_hmac() if kind == "hmac" else gateway_rsa()
    other = gateway_rsa() if kind == "hmac" else gateway_hmac()
    body, ts = {"general": {"payment_id": "p-1"}}, "1700000000"
    sig = signer.sign(signature.signing_message(body, ts))
    tried: list[str] = []
    real = signature.verify_with

    def counting(key: signature.VerifyKey, message: bytes, text: str) -> bool:
        tried.append(key.algorithm)
        return real(key, message, text)

    monkeypatch.setattr(signature, "verify_with", counting)
    keys = [other.verify_key(), signer.verify_key()]  # the other kind configured first
    found = signature.find_verifying_key(keys, body, ts, sig)
    assert found is not None and found.key_id == signer.key_id
    assert tried == [kind]
    tried.clear()
    assert signature.find_verifying_key(keys, body, ts, sig[:-4] + "AAAA") is None
    assert sorted(tried) == ["hmac", "rsa"]  # a bad signature is still tried with every key


def test_a_log_line_orjson_refuses_is_written_by_json() -> None:
    line = logs.json_line({"event": "x", "big": 2**70, "n": 1})
    assert json.loads(line) == {"event": "x", "big": 2**70, "n": 1}
    assert json.loads(logs.json_line({"event": "y", "obj": object()}, default=repr))["event"] \
        == "y"
