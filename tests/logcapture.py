"""Every log line of the test run, ours and those the subprocesses print: for the session-wide
check that no key, secret or signature value ever reaches a log, and for tests that read logs."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from structlog.typing import EventDict

from shared import logs

LOG_LINES: list[str] = []


class _TeeLogger(structlog.PrintLogger):
    def msg(self, message: str) -> None:
        LOG_LINES.append(message)
        super().msg(message)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def configure(*, trace_ids: bool = False) -> None:
    logs.configure("json", "debug", cache=False, trace_ids=trace_ids)
    structlog.configure(logger_factory=lambda *args: _TeeLogger(sys.stdout))


@contextmanager
def captured() -> Iterator[list[EventDict]]:
    """structlog's capture_logs, with the context variables the code binds merged in."""
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]) as entries:
        yield entries
