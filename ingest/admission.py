"""Admission control: a bound on the alerts being answered at once.

Past its capacity a server that queues every request answers all of them late, and then,
once the wait passes the publish timeout, nearly all of them 503: its goodput collapses just
when HighHelp's retries arrive together. One that refuses the excess at once, before reading
the body, keeps answering what it took at full speed (the SRE book's "Handling Overload").
"""

from __future__ import annotations

RETRY_AFTER_S = 1  # the Retry-After of a refusal: a retry storm is spread, not repeated at once
UNAVAILABLE = b'{"status": "unavailable"}'  # the body of every 503 the ingest answers
LOG_EVERY_S = 1.0  # refusals are logged as one line a second at most, with their count


class Admission:
    """At most `limit` alerts in flight. Single-threaded (one event loop): a plain counter."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self._unlogged = 0
        self._logged_at = float("-inf")

    def enter(self) -> bool:
        """Take a place, or say False (refuse the alert) when all are taken."""
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1

    def refusals_to_log(self, now: float) -> int:
        """Count one refusal; the refusals not logged yet when a line is due, else 0."""
        self._unlogged += 1
        if now - self._logged_at < LOG_EVERY_S:
            return 0
        refused, self._unlogged, self._logged_at = self._unlogged, 0, now
        return refused
