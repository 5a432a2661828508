"""Admission control: a bound on the alerts being answered at once, which follows their
latency.

Past its capacity a server that queues every request answers all of them late, and then,
once the wait passes the publish timeout, nearly all of them 503: its goodput collapses just
when HighHelp's retries arrive together. One that refuses the excess at once, before reading
the body, keeps answering what it took at full speed (the SRE book's "Handling Overload").

How many alerts in flight the process can carry quickly depends on its CPU and on the broker,
so no fixed number fits every machine: past the number its throughput needs, each alert more
in flight only waits longer (Little's law), on this loop or at the broker. So the bound moves
every 0.1 s. In an interval where it was reached, it is
- cut at once in proportion when the event loop lags past the target: an alert admitted is
  work run before the refusals waiting to be read, so a lagging loop answers those late;
- cut by a fifth once a queue has stood for half a second: in each interval the median alert
  answered waited longer than the target, past the quickest alert of the last 10 s (the
  latency of the CPU and the broker's confirm with no queue, as BBR keeps its minimum round
  trip; a confirm stall of the broker, a few hundred ms now and then, passes before that);
- grown by a quarter otherwise.
Below its capacity (not reached, the loop on time) the bound returns to its resting value.
Within an interval, a bound reached while no alert has been answered for longer than the
target, the loop keeps time and no queue stands doubles at once: the broker confirms nothing
for now, and the alerts waiting on it cost this process nothing, so a stall is ridden out,
not refused.
Netflix's concurrency-limits and Envoy's adaptive concurrency are of this kind.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Callable

from shared.wire import CALLBACK_PATHS, PROBE_HEADER

RETRY_AFTER_S = 1  # the Retry-After of a refusal: a retry storm is spread, not repeated at once
UNAVAILABLE = b'{"status": "unavailable"}'  # the body of every 503 the ingest answers
LOG_EVERY_S = 1.0  # refusals are logged as one line a second at most, with their count
# The refusals written to a connection by hand (ingest.slow), before aiohttp sees a request:
# an alert's, on a connection kept as aiohttp's own 503 keeps it, and a surplus connection's,
# closed at once.
_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Retry-After: %d\r\n%%sContent-Length: %d\r\n\r\n%s"
            % (RETRY_AFTER_S, len(UNAVAILABLE), UNAVAILABLE))
REFUSED_KEEP_ALIVE = _REFUSAL % b""
REFUSED_CLOSE = _REFUSAL % b"Connection: close\r\n"
_MAX_LENGTH_DIGITS = 9  # more is past any body limit (and int() refuses over 4,300 digits)
_REQUEST_LINES = {b"POST %s HTTP/1.1" % path.encode(): route
                  for route, path in CALLBACK_PATHS.items()}
# The headers a whole alert's head is read for, in one pass: its length, and those whose
# presence sends a request the long way, through aiohttp: a chunked body, 100-continue, a
# connection to close, a probe (answered even when full).
_LENGTH = b"content-length"
_TELLING_HEADERS = re.compile(b"\r\n(%s):" % b"|".join(
    re.escape(name) for name in (_LENGTH, b"transfer-encoding", b"expect", b"connection",
                                 PROBE_HEADER.lower().encode())))
_LENGTH_LINE = b"\r\n%s:" % _LENGTH


MIN_LIMIT = 8  # the bound is never cut below this (nor above the ceiling, if that is less)
# Where the bound starts, and returns to below capacity (or the ceiling, if that is less):
# an idle ingest takes a burst of this many at once (HighHelp sends a refused alert again
# only later); a retry storm's first instant fills it, work the loop runs before any
# refusal (0.15 s on a slow core, 30 ms on a quick one) before the lag cuts it.
RESTING_LIMIT = 100
INTERVAL_S = 0.1  # how often the bound moves, on what the interval's alerts took (CoDel's)
TICK_S = 0.01  # how often the loop's timeliness is read: a stall is told within a few ticks
# How many intervals in a row a queue must stand before the bound is cut: the broker's
# confirms stall now and then for a few hundred ms (its disk), a burst that passes.
STANDING = 5
# The intervals over which the quickest alert is the process's unloaded latency (its CPU
# and the broker's confirm, no queue): 10 s, as BBR keeps its minimum round trip.
BASE_WINDOW = 100


def next_limit(limit: int, *, reached: bool, lag_s: float, stood: int, target_s: float,
               floor: int, ceiling: int) -> int:
    """The bound for the next interval. Not reached in this one: back to its resting value,
    unless the loop lagged (the process is busy whatever the alerts).

    - The loop lagged past the target (`lag_s`): this process has more work than it runs in
      time, refusals included, so the bound is cut in proportion, at most by half.
    - A queue has stood for STANDING intervals (`stood`: the intervals in a row in which the
      median alert answered waited longer than the target, past the unloaded latency): cut
      by a fifth.
    - No queue stands: grown by a quarter (1.25 x 0.8 = 1: under a steady overload it hovers
      around the knee)."""
    if not reached:
        return limit if lag_s > target_s else min(RESTING_LIMIT, ceiling)
    if lag_s > target_s:
        return max(floor, int(limit * max(0.5, target_s / lag_s)))
    if stood >= STANDING:
        return max(floor, limit - max(1, limit // 5))
    if stood:
        return limit
    return min(ceiling, limit + max(1, limit // 4))


class Admission:
    """At most `limit` alerts in flight, moved each interval between a floor and `ceiling`
    (fixed at the ceiling when `target_s` is 0). Single-threaded (one event loop): plain
    counters."""

    def __init__(self, ceiling: int, target_s: float = 0.0) -> None:
        self.ceiling = ceiling
        self.floor = min(MIN_LIMIT, ceiling)
        self.target_s = target_s
        self.limit = min(RESTING_LIMIT, ceiling) if target_s else ceiling
        self.in_flight = 0
        self._reached = False  # the bound was reached in this interval
        self._took: list[float] = []  # how long each alert answered in it took
        self._quickest: deque[float] = deque(maxlen=BASE_WINDOW)  # each interval's quickest
        self._stood = 0  # intervals in a row whose median alert waited past the target
        self._silent_since = time.monotonic()  # since when no alert was answered
        self._on_time_at = float("-inf")  # when the loop last ran a tick on time
        self._reserved: set[object] = set()  # connections whose alert has a place waiting
        self._unlogged = 0
        self._logged_at = float("-inf")

    def enter(self) -> bool:
        """Take a place, or say False (refuse the alert) when all are taken."""
        if self.full():
            return False
        if not self.in_flight:  # the first alert after an idle spell: silence counts from it
            self._silent_since = time.monotonic()
        self.in_flight += 1
        return True

    def reserve(self, connection: object) -> bool:
        """Take a place for the alert arriving whole on `connection`, before aiohttp parses
        it, or say False (refuse it). The place is then its handler's (`claim`), or given back
        when the connection closes first (`release`). Taken only in the handler, the places
        would all look free to the alerts read in one loop turn: every one of them would be
        parsed, and those past the bound refused the long way, at several times the cost."""
        if connection in self._reserved:  # an alert aiohttp never handed on (a 400): its place
            return True
        if not self.enter():
            return False
        self._reserved.add(connection)
        return True

    def claim(self, connection: object) -> bool:
        """Whether a place was taken for this connection's alert as it arrived: it is now the
        handler's, given back by `leave`."""
        if connection not in self._reserved:
            return False
        self._reserved.remove(connection)
        return True

    def release(self, connection: object) -> None:
        """The connection closed: a place taken for an alert never handled is given back."""
        if connection in self._reserved:
            self._reserved.remove(connection)
            self.leave()

    def leave(self, took_s: float | None = None) -> None:
        """Give the place back; `took_s`: how long an accepted alert took, entry to answer."""
        self.in_flight -= 1
        if took_s is not None:
            self._took.append(took_s)
            self._silent_since = time.monotonic()

    def full(self) -> bool:
        """Whether every place is taken; in a stall of the broker the bound doubles first."""
        if self.in_flight < self.limit:
            return False
        self._reached = True
        if self._stalled():
            self.limit = min(self.ceiling, self.limit * 2)
            return self.in_flight >= self.limit
        return True

    def _stalled(self) -> bool:
        """The broker confirms nothing (no alert answered for longer than the target) while
        the loop keeps time (a tick on time within the target) and no queue stands: the
        alerts waiting on it cost this process nothing, so the bound doubles at once rather
        than refusing through the stall, and again each time the silence lasts as long. A
        loop busy with the alerts it took (a retry storm's first instant) is not a stall, nor
        is a gap between the broker's batched confirms under a standing overload."""
        if not self.target_s or self.limit >= self.ceiling or self._stood:
            return False
        now = time.monotonic()
        if now - self._silent_since <= self.target_s or not self.keeps_time(now):
            return False
        self._silent_since = now
        return True

    def keeps_time(self, now: float) -> bool:
        """Whether the loop ran a tick on time (within the target) in the last tick and
        target: only then can a silence be told for a stall of the broker."""
        return now - self._on_time_at <= TICK_S + self.target_s

    def next_interval(self, lag_s: float = 0.0) -> None:
        """Move the bound on the interval that ends (`lag_s`: how late the loop ran its end),
        and start the next."""
        took = self._took
        if took:
            took.sort()
            self._quickest.append(took[0])
            waited = took[len(took) // 2] - min(self._quickest)
            self._stood = self._stood + 1 if waited > self.target_s else 0
        if self.target_s:
            self.limit = next_limit(self.limit, reached=self._reached, lag_s=lag_s,
                                    stood=self._stood, target_s=self.target_s,
                                    floor=self.floor, ceiling=self.ceiling)
        self._reached, self._took = False, []

    def ticked(self, lag_s: float) -> None:
        """The loop ran a tick `lag_s` late: on time (within the target), it keeps time."""
        if lag_s <= self.target_s:
            self._on_time_at = time.monotonic()

    async def run(self, loop_lag: Callable[[float], None], interval_s: float = INTERVAL_S,
                  tick_s: float = TICK_S) -> None:
        """Tick every `tick_s` and move the bound every interval for as long as the task runs,
        reporting the event loop's lag on the way: how late the interval's timer fired is how
        long the loop's other work kept it waiting (a CPU-bound ingest lags; one waiting on
        the broker not)."""
        ticks = max(1, round(interval_s / tick_s))
        while True:
            for _ in range(ticks):
                due = time.monotonic() + tick_s
                await asyncio.sleep(tick_s)
                lag = max(0.0, time.monotonic() - due)
                self.ticked(lag)
            loop_lag(lag)
            self.next_interval(lag)

    def refusals_to_log(self, now: float) -> int:
        """Count one refusal; the refusals not logged yet when a line is due, else 0."""
        self._unlogged += 1
        if now - self._logged_at < LOG_EVERY_S:
            return 0
        refused, self._unlogged, self._logged_at = self._unlogged, 0, now
        return refused


def whole_alert_request(data: bytes) -> str | None:
    """The route of the alert that `data` holds whole, and nothing else (one request, its
    headers and all of its declared body), or None: then aiohttp reads it, as any request.
    What this answers is only ever a refusal, so anything unusual goes the long way."""
    line_end = data.find(b"\r\n")
    route = _REQUEST_LINES.get(data[:line_end]) if line_end > 0 else None
    head_end = data.find(b"\r\n\r\n", line_end)
    if route is None or head_end < 0:
        return None
    head = data[line_end:head_end + 2].lower()  # each header line between CRLFs
    found = _TELLING_HEADERS.findall(head)
    if found != [_LENGTH]:  # no length, two, or a header that sends it the long way
        return None
    at = head.find(_LENGTH_LINE) + len(_LENGTH_LINE)
    value = head[at:head.index(b"\r\n", at)].strip()
    if (not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS
            or head_end + 4 + int(value) != len(data)):
        return None
    return route
