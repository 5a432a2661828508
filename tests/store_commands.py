"""Store round trips as the server sees them: a PyMongo command listener, registered once for
the run, that records the commands sent to one database while a `counting` block is open."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pymongo import monitoring

_IGNORED = {"hello", "ismaster", "isMaster", "ping", "endSessions", "buildInfo", "saslStart",
            "saslContinue", "getMore", "killCursors"}


@dataclass
class Commands:
    database: str
    seen: list[tuple[str, str, Any]] = field(default_factory=list)  # (command, collection, filter)

    def by_name(self, name: str) -> list[tuple[str, str, Any]]:
        return [c for c in self.seen if c[0] == name]

    def not_by_id(self) -> list[tuple[str, str, Any]]:
        """Reads whose filter is anything but an exact _id: each reads a whole collection on
        the local server."""
        return [c for c in self.seen if c[0] in ("find", "count", "aggregate", "distinct")
                and not _exact_id(c[2])]


def _exact_id(query: Any) -> bool:
    return isinstance(query, dict) and list(query) == ["_id"] and not isinstance(
        query["_id"], dict)


class _Listener(monitoring.CommandListener):
    def __init__(self) -> None:
        self.open: list[Commands] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in _IGNORED:
            return
        for commands in self.open:
            if event.database_name == commands.database:
                body = event.command
                commands.seen.append((event.command_name, str(body.get(event.command_name)),
                                      body.get("filter", body.get("query"))))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


_LISTENER = _Listener()
monitoring.register(_LISTENER)  # clients made from now on report to it


@contextmanager
def counting(database: str) -> Iterator[Commands]:
    commands = Commands(database)
    _LISTENER.open.append(commands)
    try:
        yield commands
    finally:
        _LISTENER.open.remove(commands)
