"""What happens in one schedule, drawn from its seed: the payments' true histories, the alerts
HighHelp sends of them (dropped, repeated, reordered, delayed, now and then a conflicting
final), registrations, replicas, and how often calls fail or replicas crash."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

from shared.envelope import AlertEnvelope
from sim.gateway import Truth
from sim.sched import EPOCH

PROJECT_ID = "sim-project"
FINALS = ("success", "decline")


@dataclass
class Arrival:
    at: float  # virtual time
    kind: str  # "alert" | "registration"
    body: bytes
    payment_id: str


@dataclass
class Scenario:
    seed: int
    replicas: int
    prefetch: int
    truth: dict[str, Truth]
    conflicting: set[str]  # payments HighHelp also reported with the other final
    arrivals: list[Arrival]
    maintenance_at: list[float]
    crash_p: float
    fault_p: float
    crashes: int  # at most, in the schedule
    faults: int
    notes: list[str] = field(default_factory=list)


def alert_body(payment_id: str, status: str, sub_status: str | None) -> str:
    return json.dumps({
        "project_id": PROJECT_ID,
        "general": {"project_id": PROJECT_ID, "payment_id": payment_id,
                    "request_id": f"req-{payment_id}"},
        "status": {"status": status, "sub_status": sub_status},
    })


def envelope(n: int, payment_id: str, status: str, sub_status: str | None, changed: float,
             arrives: float) -> bytes:
    route = status if status in FINALS else "callback"
    return AlertEnvelope(alert_body(payment_id, status, sub_status), route,
                         str(int(EPOCH + changed)), "sim-key", EPOCH + arrives,
                         f"corr-{n}").to_bytes()


def registration(payment_id: str) -> bytes:
    return json.dumps({"project_id": PROJECT_ID, "payment_id": payment_id, "product": "p2p",
                       "flow": "payin", "amount": 150000, "currency": "RUB"}).encode()


def _truth(rng: random.Random) -> Truth:
    at = rng.uniform(0, 300)
    history: Truth = [(at, "processing", "new")]
    if rng.random() < 0.5:
        at += rng.uniform(5, 900)
        history.append((at, "processing", "pending"))
    if rng.random() < 0.8:
        at += rng.uniform(5, 7200) if rng.random() < 0.8 else rng.uniform(7200, 30 * 3600)
        history.append((at, rng.choice(FINALS), None))
    return history


def draw(seed: int) -> Scenario:
    rng = random.Random(seed)
    large = rng.random() < 0.1
    orders = rng.randint(3, 6) if large else rng.randint(1, 3)
    truth = {f"pay-{n}": _truth(rng) for n in range(orders)}
    arrivals: list[Arrival] = []
    conflicting: set[str] = set()
    n = 0
    for payment_id, history in truth.items():
        if rng.random() < 0.4:
            arrivals.append(Arrival(rng.uniform(0, history[0][0] + 60), "registration",
                                    registration(payment_id), payment_id))
        reports = list(history)
        if history[-1][1] in FINALS and rng.random() < 0.1:
            other = FINALS[1 - FINALS.index(history[-1][1])]
            reports.append((history[-1][0] + 2, other, None))
            conflicting.add(payment_id)
        for changed, status, sub_status in reports:
            copies = 0 if rng.random() < 0.2 else (2 if rng.random() < 0.3 else 1)
            for _ in range(copies):
                delay = rng.uniform(0.1, 30) if rng.random() < 0.8 else rng.uniform(60, 2000)
                n += 1
                arrivals.append(Arrival(changed + delay, "alert",
                                        envelope(n, payment_id, status, sub_status, changed,
                                                 changed + delay), payment_id))
    arrivals.sort(key=lambda a: a.at)
    crashes = rng.choice((0, 1, 1, 2, 3))
    faults = rng.choice((0, 1, 2, 4))
    return Scenario(
        seed=seed, replicas=rng.choice((2, 2, 3)), prefetch=rng.choice((1, 2, 4, 8)),
        truth=truth, conflicting=conflicting, arrivals=arrivals,
        maintenance_at=sorted(rng.uniform(0, 4 * 3600) for _ in range(rng.randint(0, 2))),
        crash_p=rng.choice((0.01, 0.03, 0.1)), fault_p=rng.choice((0.01, 0.03, 0.1)),
        crashes=crashes, faults=faults)
