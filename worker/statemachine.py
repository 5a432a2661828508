"""The order status state machine (design.md, "Rules of the state machine"). Pure."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from shared.alert import is_final


class Verdict(StrEnum):
    APPLY = "applied"
    STALE = "stale"  # older than what the order shows, or informative after a final
    DUPLICATE = "duplicate"  # the order already shows this status
    ANOMALY = "anomaly"  # a different final after a final: recorded and published, never applied


@dataclass(frozen=True)
class StatusAt:
    status: str
    sub_status: str | None
    gateway_time: int  # Unix seconds, as the gateway stated it

    @property
    def final(self) -> bool:
        return is_final(self.status)


def decide(current: StatusAt | None, incoming: StatusAt) -> Verdict:
    if current is None:
        return Verdict.APPLY
    if (incoming.status, incoming.sub_status) == (current.status, current.sub_status):
        return Verdict.DUPLICATE
    if current.final:
        # A final status is never replaced. The same final with another sub-status adds nothing.
        if incoming.status == current.status:
            return Verdict.DUPLICATE
        return Verdict.ANOMALY if incoming.final else Verdict.STALE
    if incoming.final:
        return Verdict.APPLY
    # Between non-final statuses the newer gateway time wins; on a tie the later arrival does,
    # since the gateway's clock has only whole seconds.
    return Verdict.APPLY if incoming.gateway_time >= current.gateway_time else Verdict.STALE
