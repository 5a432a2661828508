"""The scheduler: an asyncio loop on virtual time, and the points where replicas yield.

Every call of an in-memory port first waits at a point; the driver (`world.py`) picks which
waiting point goes on next, and may instead fail that call, or crash its replica. Virtual
time moves only when the driver says, to the next timer. One thread, a seeded generator, and
asyncio's first-in first-out ready queue make the whole run a function of its seed."""

from __future__ import annotations

import asyncio
import contextvars
import selectors
from collections.abc import Coroutine
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

EPOCH = 1_767_225_600.0  # virtual time 0 is 2026-01-01 00:00 UTC


class Crashed(BaseException):
    """Raised in a crashed replica's code: no `except Exception` of the worker stops it."""


class Go(Enum):
    ON = "on"  # the call goes through
    FAIL = "fail"  # the call fails before it has any effect
    FAIL_AFTER = "fail_after"  # the call takes effect, then its answer is lost


@dataclass(eq=False)
class Replica:
    name: str
    dead: bool = False
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    parts: Any = None  # the real worker parts (world.py)


current: contextvars.ContextVar[Replica | None] = contextvars.ContextVar("sim_replica",
                                                                          default=None)


@dataclass(eq=False)
class Point:
    replica: Replica
    label: str
    can_fail_after: bool
    future: asyncio.Future[Go]
    since: float  # virtual time the call was made


class _VirtualSelector(selectors.SelectSelector):
    def __init__(self, loop: VirtualLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            raise RuntimeError("simulation deadlock: nothing ready and no timer")
        self._loop.now += max(0.0, timeout)  # nothing waits: time jumps to the next timer
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(_VirtualSelector(self))

    def time(self) -> float:
        return self.now

    def busy(self) -> bool:
        """Anything ready to run now (the driver excepted)?"""
        if self._ready:  # type: ignore[attr-defined]
            return True
        return any(not h.cancelled() and h.when() <= self.now
                   for h in self._scheduled)  # type: ignore[attr-defined]

    def next_timer(self) -> float | None:
        times = [h.when() for h in self._scheduled  # type: ignore[attr-defined]
                 if not h.cancelled()]
        return min(times) if times else None


class Scheduler:
    def __init__(self, loop: VirtualLoop) -> None:
        self.loop = loop
        self.points: list[Point] = []

    async def point(self, label: str, *, can_fail_after: bool = False) -> Go:
        """Wait for the driver's word. Outside any replica (the harness) there is none."""
        replica = current.get()
        if replica is None:
            return Go.ON
        if replica.dead:
            raise Crashed(replica.name)
        future: asyncio.Future[Go] = self.loop.create_future()
        self.points.append(Point(replica, label, can_fail_after, future, self.loop.now))
        return await future

    def spawn(self, replica: Replica, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task of `replica` (in a context of its own, as aio-pika gives each delivery)."""
        context = contextvars.copy_context()
        context.run(current.set, replica)
        return self.loop.create_task(coro, context=context)

    def install(self) -> None:
        """Tasks are counted as their creator's replica's: a crash cancels them all."""
        def factory(loop: asyncio.AbstractEventLoop, coro: Any,
                    context: contextvars.Context | None = None) -> asyncio.Task[Any]:
            task = asyncio.Task(coro, loop=loop, context=context)
            owner = (context or contextvars.copy_context()).get(current)
            if owner is not None:
                owner.tasks.append(task)
            return task
        self.loop.set_task_factory(factory)

    def crash(self, replica: Replica) -> None:
        replica.dead = True
        for p in [p for p in self.points if p.replica is replica]:
            self.points.remove(p)
            p.future.cancel()
        for task in replica.tasks:
            task.cancel()

