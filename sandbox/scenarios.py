"""Payment scenarios and the chaos applied to alert delivery, as pure functions."""

from __future__ import annotations

import random
from dataclasses import dataclass

Step = tuple[str, str | None]

SCENARIOS: dict[str, tuple[Step, ...]] = {
    "success": (("processing", "new"), ("processing", "requisites"),
                ("processing", "paid"), ("success", None)),
    "decline": (("processing", "new"), ("processing", "requisites"), ("decline", None)),
    "3ds": (("processing", "new"), ("processing", "awaiting_3ds_result"),
            ("processing", "awaiting_redirect_result"), ("success", None)),
    "dispute": (("processing", "new"), ("processing", "paid"),
                ("dispute", "different_amount"), ("decline", None)),
    "error": (("processing", "new"), ("error", None), ("decline", None)),
    # Never settles: for give-up tests and demos; not in the default mix.
    "stuck": (("processing", "new"), ("processing", "requisites")),
}
DEFAULT_MIX = {"success": 55, "decline": 20, "3ds": 10, "dispute": 10, "error": 5}


def pick_scenario(rng: random.Random, mix: dict[str, int]) -> str:
    names = sorted(mix)
    return rng.choices(names, weights=[mix[n] for n in names])[0]


@dataclass(frozen=True)
class Chaos:
    duplicate_rate: float = 0.0  # an alert is sent twice
    reorder_rate: float = 0.0  # an alert is held back and sent after later ones
    drop_rate: float = 0.0  # an alert is never sent: only polling can settle the payment
    step_delay_s: float = 0.05  # time between two status changes of a payment
    info_failure_rate: float = 0.0  # /info answers 503


@dataclass(frozen=True)
class Delivery:
    step: int
    delay_s: float  # after the status change
    copies: int  # 1, or 2 for a duplicate


def plan_deliveries(steps: int, chaos: Chaos, rng: random.Random) -> list[Delivery]:
    """Which alerts of a payment's `steps` status changes are sent, when, and how often."""
    plan = []
    for step in range(steps):
        if rng.random() < chaos.drop_rate:
            continue
        # Held back long enough to arrive after the next one or two changes.
        held = rng.random() < chaos.reorder_rate
        delay = chaos.step_delay_s * rng.uniform(1.5, 3.0) if held else 0.0
        copies = 2 if rng.random() < chaos.duplicate_rate else 1
        plan.append(Delivery(step, delay, copies))
    return plan


def route_of(status: str) -> str:
    """Which of the three merchant URLs an alert goes to."""
    return {"success": "success", "decline": "decline"}.get(status, "callback")
