"""One schedule: the real worker parts of each replica wired to the in-memory ports, the
harness that delivers the scenario's alerts, and the driver that decides every step."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import Iterator
from typing import Any, cast

from shared import mongo
from shared.settings import ProjectSettings, Settings, WorkerSettings
from shared.topology import CALLBACKS_EXCHANGE, DUE_QUEUE, PROCESS_QUEUE, REGISTER_QUEUE
from sim import invariants
from sim.broker import SimBroker, SimMessage
from sim.gateway import SimGateway
from sim.scenario import PROJECT_ID, Scenario
from sim.sched import EPOCH, Crashed, Go, Point, Replica, Scheduler, VirtualLoop
from sim.store import MemCollection
from worker import parts
from worker.consumer import Consumer
from worker.maintenance import Maintenance

MAX_STEPS = 200_000
RETENTION_WAIT_S = 40 * 86400.0  # past every retention age
RELAY_WINDOW_S = 30 * 86400.0
ADVANCE_P = 0.03  # the chance, at a step with work waiting, that time moves on instead
CALL_TIMEOUT_S = 10.0  # the longest a client waits for a call (MongoSettings: 2 x 5 s)


class Violation(AssertionError):
    pass


@dataclasses.dataclass
class Replicated:
    """The real parts of one replica."""

    parts: parts.Parts
    consumer: Consumer
    maintenance: Maintenance


@contextlib.contextmanager
def virtual_clock(loop: VirtualLoop) -> Iterator[None]:
    """`time.time()` and `time.monotonic()` read the virtual clock while a schedule runs."""
    real_time, real_monotonic = time.time, time.monotonic
    time.time = lambda: EPOCH + loop.now
    time.monotonic = lambda: loop.now
    try:
        yield
    finally:
        time.time, time.monotonic = real_time, real_monotonic


class World:
    def __init__(self, scenario: Scenario, trace: bool = False) -> None:
        self.scenario = scenario
        self.rng = random.Random(scenario.seed ^ 0x5EED)
        self.loop = VirtualLoop()
        self.loop.set_exception_handler(lambda _loop, _context: None)  # dead replicas' tasks
        self.sched = Scheduler(self.loop)
        self.sched.install()
        self.broker = SimBroker(self.sched, prefetch=scenario.prefetch)
        self.collections = mongo.Collections(**{
            f.name: cast(Any, MemCollection(f.name, self.sched))
            for f in dataclasses.fields(mongo.Collections)})
        self.gateway = SimGateway(self.sched, PROJECT_ID, scenario.truth)
        self.settings = Settings(
            projects={PROJECT_ID: ProjectSettings(PROJECT_ID, ())},
            # The relay looks back over the whole run: the final maintenance covers it all.
            worker=WorkerSettings(batch_window_s=0.01, relay_window_s=RELAY_WINDOW_S))
        self.replicas: list[Replica] = []
        self.started = 0
        self.crashes_left, self.faults_left = scenario.crashes, scenario.faults
        self.steps = 0
        self.tracing = trace
        self.trace: list[str] = []
        self.quiet_checks = 0
        self.troubles = 0  # crashes, failed calls and timeouts so far
        self.kept: set[str] = set()  # transition ids retention left

    # --- replicas ---------------------------------------------------------------------------
    def start_replica(self) -> Replica:
        self.started += 1
        replica = Replica(f"r{self.started}")
        built = parts.assemble(self.settings, self.collections, self.broker,
                               {PROJECT_ID: self.gateway})
        built.poller.owner = replica.name
        consumer = Consumer(self.broker, built.processor, built.poller,
                            self.settings.worker, None)
        maintenance = Maintenance(built.processor, built.poller, self.settings.worker,
                                  self.settings.poller, self.settings.retention)
        replica.parts = Replicated(built, consumer, maintenance)
        self.replicas.append(replica)
        self.note(f"start {replica.name}")
        return replica

    def crash(self, replica: Replica) -> None:
        self.note(f"CRASH {replica.name}")
        self.sched.crash(replica)
        self.broker.crashed(replica)
        self.replicas.remove(replica)
        self.start_replica()

    def deliver(self, queue: str, replica: Replica) -> None:
        message = self.broker.take(queue, replica)
        self.note(f"deliver {queue} -> {replica.name}{' (again)' if message.redelivered else ''}"
                  f" {message.body[:90]!r}")
        consumer: Consumer = replica.parts.consumer
        handler = {PROCESS_QUEUE: consumer.on_alert, REGISTER_QUEUE: consumer.on_registration,
                   DUE_QUEUE: consumer.on_check}[queue]
        self.sched.spawn(replica, handler(message))

    def maintain(self) -> None:
        live = [r for r in self.replicas if not r.dead]
        replica = self.rng.choice(live)
        maintenance: Maintenance = replica.parts.maintenance
        self.note(f"maintenance on {replica.name}")
        self.sched.spawn(replica, maintenance.run_period(maintenance.period(time.time())))

    # --- the harness: what HighHelp and the merchant backend send ----------------------------
    def arrive(self, kind: str, body: bytes) -> None:
        exchange, key = (CALLBACKS_EXCHANGE, "callback.sim") if kind == "alert" else (
            "", REGISTER_QUEUE)
        self.broker.route(exchange, key, SimMessage(self.broker, "", body, {}, "harness", "",
                                                    key), "harness")

    # --- the driver -------------------------------------------------------------------------
    def note(self, text: str) -> None:
        if self.tracing:
            self.trace.append(f"{self.loop.now:12.3f} {text}")

    def resolve(self, point: Point) -> None:
        self.sched.points.remove(point)
        roll = self.rng.random()
        if self.crashes_left and roll < self.scenario.crash_p:
            self.crashes_left -= 1
            self.troubles += 1
            self.note(f"{point.replica.name} at {point.label}")
            self.crash(point.replica)
            return
        go = Go.ON
        if self.loop.now - point.since > CALL_TIMEOUT_S:
            self.troubles += 1
            # The clients give up on a call this old (the store's timeoutMS, the publish
            # timeout, the gateway's). Not modelled: the server applying it long after (the
            # outbox relay's window assumes a record lands within relay_grace_s of being made).
            go = Go.FAIL
        elif self.faults_left and roll > 1 - self.scenario.fault_p:
            self.faults_left -= 1
            self.troubles += 1
            go = Go.FAIL_AFTER if point.can_fail_after and self.rng.random() < 0.5 else Go.FAIL
        self.note(f"{point.replica.name} {point.label}{'' if go is Go.ON else ' -> ' + go.value}")
        point.future.set_result(go)

    async def settle(self) -> None:
        # The others run until each waits at a point or a timer: yielding is the point here.
        while self.loop.busy():  # noqa: ASYNC110
            await asyncio.sleep(0)

    async def drive(self) -> None:
        """Until nothing is left to do: no call waiting, no message to deliver, no timer."""
        while True:
            await self.settle()
            self.steps += 1
            if self.steps > MAX_STEPS:
                raise Violation(f"no quiescence after {MAX_STEPS} steps")
            points = list(self.sched.points)
            deliveries = self.broker.deliverable(self.replicas)
            following = self.loop.next_timer()
            if not points and not deliveries:
                if not any(not t.done() for r in self.replicas for t in r.tasks):
                    self.quiet_checks += 1
                    invariants.at_rest(self)
                if following is None:
                    return
                await asyncio.sleep(max(0.0, following - self.loop.now))
                continue
            if following is not None and self.rng.random() < ADVANCE_P:
                await asyncio.sleep(max(0.0, following - self.loop.now))
                continue
            choice = self.rng.randrange(len(points) + len(deliveries))
            if choice < len(points):
                self.resolve(points[choice])
            else:
                self.deliver(*deliveries[choice - len(points)])
            for replica in self.replicas:
                replica.tasks = [t for t in replica.tasks if not t.done()]

    async def main(self) -> None:
        for _ in range(self.scenario.replicas):
            self.start_replica()
        for arrival in self.scenario.arrivals:
            self.loop.call_at(arrival.at, self.arrive, arrival.kind, arrival.body)
        for at in self.scenario.maintenance_at:
            self.loop.call_at(at, self.maintain)
        await self.drive()
        # The hourly maintenance once more: its relay is the safety net for an event whose
        # writer crashed when no redelivery would finish it (it leaves the last few seconds).
        # A maintenance that crashes is followed by the next period's: here, one that does not.
        self.crashes_left = self.faults_left = 0
        interval = self.settings.worker.maintenance_interval_s
        # The relay leaves events younger than its grace to their writers: the last write
        # must be older than that when it runs (as the next period's relay would see it).
        await asyncio.sleep(self.settings.worker.relay_grace_s)
        await asyncio.sleep(interval - time.time() % interval + 1)  # the next period's
        self.maintain()
        await self.drive()
        invariants.at_end(self)
        # Long after: retention runs, then HighHelp repeats every alert it ever sent.
        await asyncio.sleep(RETENTION_WAIT_S)
        before = invariants.Snapshot.of(self)
        self.maintain()
        await self.drive()
        invariants.after_retention(self)
        for body in list(self.broker.accepted):
            self.arrive("alert", body)
        await self.drive()
        invariants.after_repeats(self, before)

    def run(self) -> None:
        with virtual_clock(self.loop):
            try:
                self.loop.run_until_complete(self.main())
            finally:
                for task in asyncio.all_tasks(self.loop):
                    task.cancel()
                with contextlib.suppress(BaseException):
                    self.loop.run_until_complete(asyncio.sleep(0))
                self.loop.close()


def run_schedule(scenario: Scenario, trace: bool = False) -> World:
    world = World(scenario, trace)
    world.run()
    return world


__all__ = ["Crashed", "Violation", "World", "run_schedule"]
