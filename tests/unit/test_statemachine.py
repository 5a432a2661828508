"""The state machine's rules (design.md), as a table."""

from __future__ import annotations

import pytest

from worker.statemachine import StatusAt, Verdict, decide


def at(status: str, sub: str | None = None, t: int = 100) -> StatusAt:
    return StatusAt(status, sub, t)


@pytest.mark.parametrize(
    ("current", "incoming", "verdict"),
    [
        (None, at("processing", "new"), Verdict.APPLY),
        (None, at("weird-status", "x"), Verdict.APPLY),
        (at("processing", "new"), at("processing", "new", 200), Verdict.DUPLICATE),
        (at("processing", "new", 100), at("processing", "requisites", 99), Verdict.STALE),
        (at("processing", "new", 100), at("processing", "requisites", 100), Verdict.APPLY),
        (at("processing", "new", 100), at("processing", "requisites", 101), Verdict.APPLY),
        (at("processing", "paid", 100), at("success", None, 50), Verdict.APPLY),
        (at("dispute", "no_payment", 100), at("decline", None, 90), Verdict.APPLY),
        (at("success", "success", 100), at("processing", "paid", 200), Verdict.STALE),
        (at("success", "success", 100), at("success", None, 200), Verdict.DUPLICATE),
        (at("success", None, 100), at("decline", None, 200), Verdict.ANOMALY),
        (at("decline", None, 100), at("success", None, 50), Verdict.ANOMALY),
        (at("error", None, 100), at("processing", "new", 101), Verdict.APPLY),
        (at("unknown-x", None, 100), at("success", None, 1), Verdict.APPLY),
    ],
)
def test_decide(current: StatusAt | None, incoming: StatusAt, verdict: Verdict) -> None:
    assert decide(current, incoming) is verdict


def test_final_is_never_replaced_by_anything() -> None:
    for final in ("success", "decline"):
        for status in ("processing", "dispute", "error", "success", "decline", "new-thing"):
            assert decide(at(final, t=100), at(status, "z", 10_000)) is not Verdict.APPLY
