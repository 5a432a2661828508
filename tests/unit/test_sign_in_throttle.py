"""Failed sign-ins slow their maker down, and nobody can lock an operator out for long."""

from __future__ import annotations

from console.throttle import FORGET_AFTER_S, MAX_COUNTS, SignInThrottle


def test_waits_grow_for_one_name_from_one_address_up_to_a_minute() -> None:
    throttle, now = SignInThrottle(), 1000.0
    waits = []
    for _ in range(12):
        throttle.failed("olga", "10.0.0.9", now)
        waits.append(throttle.wait_s("olga", "10.0.0.9", now))
        now += waits[-1]  # the guesser waits exactly as long as told
    assert waits[:3] == [0, 0, 0]
    assert waits[3:10] == [1, 2, 4, 8, 16, 32, 60]
    assert max(waits) == 60


def test_failures_from_many_addresses_delay_an_operator_by_seconds_only() -> None:
    throttle, now = SignInThrottle(), 1000.0
    for n in range(500):
        throttle.failed("olga", f"10.0.{n // 250}.{n % 250}", now)
    assert throttle.wait_s("olga", "192.168.1.5", now) == 30  # her own address: capped
    assert throttle.wait_s("victor", "192.168.1.5", now) == 0


def test_a_success_clears_the_name_and_failures_are_forgotten() -> None:
    throttle, now = SignInThrottle(), 1000.0
    for _ in range(5):
        throttle.failed("olga", "10.0.0.9", now)
    assert throttle.wait_s("olga", "10.0.0.9", now) > 0
    throttle.succeeded("olga", "10.0.0.9")
    assert throttle.wait_s("olga", "10.0.0.9", now) == 0
    for _ in range(5):
        throttle.failed("victor", "10.0.0.9", now)
    assert throttle.wait_s("victor", "10.0.0.9", now + FORGET_AFTER_S + 1) == 0


def test_memory_is_bounded_whatever_names_are_tried() -> None:
    throttle = SignInThrottle()
    for n in range(3 * MAX_COUNTS):
        throttle.failed(f"name-{n}", f"10.{n % 250}.0.1", float(n))
    assert len(throttle._counts) <= MAX_COUNTS + 3
