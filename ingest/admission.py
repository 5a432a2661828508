"""Admission control: a bound on the alerts being answered at once.

Past its capacity a server that queues every request answers all of them late, and then,
once the wait passes the publish timeout, nearly all of them 503: its goodput collapses just
when HighHelp's retries arrive together. One that refuses the excess at once, before reading
the body, keeps answering what it took at full speed (the SRE book's "Handling Overload").
"""

from __future__ import annotations

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


class Admission:
    """At most `limit` alerts in flight. Single-threaded (one event loop): a plain counter."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self._unlogged = 0
        self._logged_at = float("-inf")

    def enter(self) -> bool:
        """Take a place, or say False (refuse the alert) when all are taken."""
        if self.full():
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1

    def full(self) -> bool:
        return self.in_flight >= self.limit

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
