"""HighHelp's /info, answered from the script: each payment's true status history, read at
the virtual time of the call; a call may fail (unavailable after the client's retries)."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from shared.alert import Alert
from shared.gateway import GatewayRejected, GatewayUnavailable
from sim.sched import Go, Scheduler, current

Truth = list[tuple[float, str, str | None]]  # (virtual time, status, sub_status)


@dataclass
class Call:
    poll_id: str | None
    replica: str
    payment_id: str
    at: float


@dataclass
class SimGateway:
    sched: Scheduler
    project_id: str
    truth: dict[str, Truth]
    calls: list[Call] = field(default_factory=list)

    async def info(self, product: str, flow: str, payment_id: str) -> Alert:
        go = await self.sched.point(f"gateway.info {payment_id}")
        replica = current.get()
        self.calls.append(Call(structlog.contextvars.get_contextvars().get("poll_id"),
                               replica.name if replica else "harness", payment_id,
                               self.sched.loop.now))
        if go is not Go.ON:
            raise GatewayUnavailable("sim: 503 after the client's retries")
        now = self.sched.loop.now
        known = [(status, sub) for at, status, sub in self.truth.get(payment_id, [])
                 if at <= now]
        if not known:
            raise GatewayRejected(404, "no such payment")
        status, sub_status = known[-1]
        return Alert(self.project_id, payment_id, f"req-{payment_id}", status, sub_status,
                     None)

    def status_at(self, payment_id: str, at: float) -> tuple[str, str | None] | None:
        known = [(s, sub) for t, s, sub in self.truth.get(payment_id, []) if t <= at]
        return known[-1] if known else None
