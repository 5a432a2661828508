"""Structured logging, configured in one place: JSON lines on stdout (console format on request)."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import orjson
import structlog

# A field whose name says it may hold a secret is dropped before rendering, as a second line of
# defence: no code path should log such values in the first place.
_SECRET_WORDS = ("signature", "secret", "private", "password", "hmac_key", "token")


@functools.cache  # field names are few and fixed in the code: each is judged once
def _may_hold_secret(name: str) -> bool:
    return any(word in name.lower() for word in _SECRET_WORDS)


def drop_secret_fields(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for name in [k for k in event if _may_hold_secret(k)]:
        event[name] = "[redacted]"
    return event


def json_line(event: Mapping[str, Any], **kw: Any) -> str:
    """One JSON line by orjson (several times faster than json, on every line of every
    alert); what orjson refuses (an integer past 64 bits) goes through json instead."""
    default = kw.get("default")
    try:
        return orjson.dumps(event, default=default).decode()
    except orjson.JSONEncodeError:
        return json.dumps(event, default=default)


def configure(fmt: str = "json", level: str = "info", *, cache: bool = True,
              trace_ids: bool = False) -> None:
    """`trace_ids`: tracing is on, and each line carries the current trace_id and span_id."""
    # Colours only on a terminal: escape codes in a file or a pipe are noise.
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty()) if fmt == "console"
        else structlog.processors.JSONRenderer(serializer=json_line)
    )
    tracing_ids: list[Any] = []
    if trace_ids:
        from shared.tracing import add_trace_ids
        tracing_ids.append(add_trace_ids)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *tracing_ids,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            drop_secret_fields,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        # write and flush, rather than print: a third of the cost, on every line
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        cache_logger_on_first_use=cache,
    )


def error_text(exc: BaseException) -> str:
    """An exception for a log line: its type and message (our messages never hold secrets)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
