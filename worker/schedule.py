"""Poll timing (design.md, "Stale orders"): when an order is due, and what follows a poll. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.documents import OrderView, Schedule
from shared.settings import PollerSettings


@dataclass(frozen=True)
class Slot:
    """One due poll of an order: the attempt to claim and the order state it is meant for."""

    attempt: int
    for_seq: int  # the order's seq when it was found due
    ladder_step: int  # polls already made since that seq


def next_poll_at(final: bool, seq: int, changed_at: datetime | None,
                 schedule: Schedule | None, settings: PollerSettings) -> datetime | None:
    """When the order is next due: never once final or given up; after a change, once stale;
    after a poll that changed nothing, when the ladder says."""
    if final or changed_at is None or (schedule is not None and schedule["gave_up"]):
        return None
    if schedule is not None and schedule["last_seq"] == seq:
        due: datetime = schedule["next_due_at"]
        return due
    return changed_at + timedelta(seconds=settings.stale_after_s)


def next_slot(order: OrderView, schedule: Schedule | None) -> Slot:
    """The poll that comes next for `order`, due or not (an operator may ask for it now)."""
    seq = order["seq"]
    attempt = schedule["attempt"] + 1 if schedule else 1
    step = schedule["ladder_step"] if schedule and schedule["last_seq"] == seq else 0
    return Slot(attempt, seq, step)


def check_delay(step: int, settings: PollerSettings) -> float:
    """How long the check for `step` waits: the stale period before the first poll after a
    change (step 0), then the ladder's rungs (the last repeats)."""
    if step == 0:
        return settings.stale_after_s
    ladder = settings.ladder_s
    return ladder[min(step, len(ladder)) - 1]


def after_poll(slot: Slot, seq_now: int, changed_at: datetime, now: datetime,
               settings: PollerSettings) -> Schedule:
    """The schedule after the poll of `slot`: the next rung, or giving up."""
    moved = seq_now != slot.for_seq  # the poll changed the order: its clock starts again
    step = 0 if moved else slot.ladder_step + 1
    ladder = settings.ladder_s
    next_due = changed_at + timedelta(seconds=settings.stale_after_s) if moved else (
        now + timedelta(seconds=ladder[min(step, len(ladder)) - 1]))
    return {
        "attempt": slot.attempt,
        "last_seq": seq_now,
        "ladder_step": step,
        "next_due_at": next_due,
        "gave_up": not moved and now - changed_at >= timedelta(seconds=settings.give_up_after_s),
        "updated_at": now,
    }
