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
- doubled when no alert was answered at all (that stall: the alerts waiting on the broker
  cost this process nothing);
- grown by a quarter otherwise.
Below its capacity (not reached, the loop on time) the bound returns to its resting value,
which rides out a stall at ordinary load.
Netflix's concurrency-limits and Envoy's adaptive concurrency are of this kind.
"""

from __future__ import annotations

import asyncio
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
# Headers whose presence sends a request the long way, through aiohttp: a chunked body,
# 100-continue, a connection to close, a probe (answered even when full).
_LONG_WAY = (b"\r\ntransfer-encoding:", b"\r\nexpect:", b"\r\nconnection:",
             b"\r\n" + PROBE_HEADER.encode() + b":")
_LENGTH = b"\r\ncontent-length:"


MIN_LIMIT = 8  # the bound is never cut below this (nor above the ceiling, if that is less)
# Where the bound starts, and returns to below capacity (or the ceiling, if that is less):
# enough for a broker's confirm stall at ordinary load (0.2 s at 500 alerts/s), few enough
# that a retry storm's first instant is about 0.1 s of work before the lag cuts it.
RESTING_LIMIT = 100
INTERVAL_S = 0.1  # how often the bound moves, on what the interval's alerts took (CoDel's)
# How many intervals in a row a queue must stand before the bound is cut: the broker's
# confirms stall now and then for a few hundred ms (its disk), a burst that passes.
STANDING = 5
# The intervals over which the quickest alert is the process's unloaded latency (its CPU
# and the broker's confirm, no queue): 10 s, as BBR keeps its minimum round trip.
BASE_WINDOW = 100


def next_limit(limit: int, *, reached: bool, answered: bool, lag_s: float, stood: int,
               target_s: float, floor: int, ceiling: int) -> int:
    """The bound for the next interval. Not reached in this one: back to its resting value
    at least, unless the loop lagged (the process is busy whatever the alerts).

    - The loop lagged past the target (`lag_s`): this process has more work than it runs in
      time, refusals included, so the bound is cut in proportion, at most by half.
    - A queue has stood for STANDING intervals (`stood`: the intervals in a row in which the
      median alert answered waited longer than the target, past the unloaded latency): cut
      by a fifth.
    - No queue stands: grown by a quarter (1.25 x 0.8 = 1: under a steady overload it hovers
      around the knee); doubled when no alert was answered (`answered`): the broker confirms
      nothing for now, and the alerts waiting on it cost this process nothing."""
    if not reached:
        return limit if lag_s > target_s else max(limit, min(RESTING_LIMIT, ceiling))
    if lag_s > target_s:
        return max(floor, int(limit * max(0.5, target_s / lag_s)))
    if stood >= STANDING:
        return max(floor, limit - max(1, limit // 5))
    if stood:
        return limit
    if not answered:
        return min(ceiling, limit * 2)
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
        self._unlogged = 0
        self._logged_at = float("-inf")

    def enter(self) -> bool:
        """Take a place, or say False (refuse the alert) when all are taken."""
        if self.full():
            return False
        self.in_flight += 1
        return True

    def leave(self, took_s: float | None = None) -> None:
        """Give the place back; `took_s`: how long an accepted alert took, entry to answer."""
        self.in_flight -= 1
        if took_s is not None:
            self._took.append(took_s)

    def full(self) -> bool:
        if self.in_flight >= self.limit:
            self._reached = True
            return True
        return False

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
            self.limit = next_limit(self.limit, reached=self._reached, answered=bool(took),
                                    lag_s=lag_s, stood=self._stood, target_s=self.target_s,
                                    floor=self.floor, ceiling=self.ceiling)
        self._reached, self._took = False, []

    async def run(self, loop_lag: Callable[[float], None], interval_s: float = INTERVAL_S
                  ) -> None:
        """Move the bound every interval for as long as the task runs, and report the event
        loop's lag on the way: how late the interval's timer fired is how long the loop's
        other work kept it waiting (a CPU-bound ingest lags; one waiting on the broker not)."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + interval_s
            await asyncio.sleep(interval_s)
            lag = max(0.0, loop.time() - due)
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
    at = head.find(_LENGTH)
    if at < 0 or head.find(_LENGTH, at + 1) >= 0 or any(h in head for h in _LONG_WAY):
        return None
    value = head[at + len(_LENGTH):head.index(b"\r\n", at + 2)].strip()
    if (not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS
            or head_end + 4 + int(value) != len(data)):
        return None
    return route
