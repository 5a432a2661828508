"""Slow and surplus connections: a client that trickles its request's headers (a line every few
seconds) would hold a connection for as long as it likes, and enough of them hold every file
descriptor. Each connection must send a request's headers within `header_timeout_s` of opening
(later requests on a kept-alive one are bounded by aiohttp's keep-alive timeout, which the
ingest sets to the same); the body has its own deadline in the handler. Past
`max_connections` open at once a new connection is answered 503 and closed at once.

An alert that arrives whole on an idle connection takes its place in the bound on alerts in
flight (ingest.admission) here, before aiohttp parses it, or past the bound is refused here: a
refusal costs a few byte searches and one write, so that under a retry storm the ingest's CPU
goes to the alerts it takes.

A protocol factory around aiohttp's (TCPSite's `runner.server`): it sees each connection's
bytes before aiohttp does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, cast

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from ingest.admission import REFUSED_CLOSE, REFUSED_KEEP_ALIVE, Admission, whole_alert_request
from ingest.app import ADMISSION, METRICS, SETTINGS, count_overloaded
from ingest.listener import Listener, listening_sockets

log = structlog.get_logger("ingest")
# Connections the kernel holds until the loop accepts them. aiohttp's 128 overflows when a
# burst of senders connects at once (HighHelp's retries after an outage): a dropped SYN is
# retried by the sender a second later, then three, and the ingest sits idle meanwhile.
# The kernel caps it at net.core.somaxconn (4096 on current kernels).
LISTEN_BACKLOG = 4096


class ConnectionGuard:
    """Counts the open connections and wraps each new one."""

    def __init__(self, server: Callable[[], RequestHandler], header_timeout_s: float,
                 max_connections: int, cut: Callable[[str], None], admission: Admission,
                 overloaded: Callable[[str], None]) -> None:
        self._server = server
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.open = 0
        self._cut = cut  # counts a connection cut or refused, by reason
        self._logged_at = 0.0
        self.admission = admission
        self.overloaded = overloaded  # counts an alert refused here, by route

    def __call__(self) -> asyncio.Protocol:
        return _Guarded(self._server(), self)

    def cut(self, reason: str) -> None:
        self._cut(reason)
        now = time.monotonic()
        if now - self._logged_at >= 1.0:  # a flood of them is one line a second
            self._logged_at = now
            log.warning("connection_cut", reason=reason, open=self.open)


class _Guarded(asyncio.Protocol):
    def __init__(self, inner: RequestHandler, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._counted = False
        self._deadline: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._partial = False  # the last bytes given to aiohttp completed no request's headers
        self._held: bytearray | None = None  # bytes kept from aiohttp until the next loop turn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)  # uvloop's is its own
        if self._guard.open >= self._guard.max_connections:
            transport.write(REFUSED_CLOSE)
            transport.close()
            self._guard.cut("too_many_connections")
            return
        self._guard.open += 1
        self._counted = True
        self._deadline = asyncio.get_running_loop().call_later(
            self._guard.header_timeout_s, self._too_slow)
        self._inner.connection_made(transport)

    def _too_slow(self) -> None:
        self._deadline = None
        if self._transport is not None and not self._transport.is_closing():
            self._guard.cut("headers_too_slow")
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if not self._counted:
            return
        if self._held is not None:  # bytes before these wait for the next loop turn
            self._held += data
            return
        if self._between_requests():
            # aiohttp has written its last answer, but its loop over the connection's
            # requests resumes only on the next turn (uvloop reads sockets before it runs
            # what is ready): the sender's next request often lands in between. Held for
            # that turn, it then takes its place or is refused here like any other, not
            # parsed by aiohttp first.
            self._held = bytearray(data)
            asyncio.get_running_loop().call_soon(self._after_turn)
            return
        self._take(data)

    def _take(self, data: bytes) -> None:
        """An alert arriving whole on an idle connection takes its place in the bound before
        aiohttp parses it, or is refused here; anything else goes to aiohttp as it is."""
        route = whole_alert_request(data) if self._idle() else None
        if route is not None and not self._guard.admission.reserve(self._transport):
            self._refuse(route)
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        inner = self._inner
        before = inner._request_count  # requests whose headers aiohttp has parsed
        inner.data_received(data)
        # No request parsed from these bytes: aiohttp may hold part of one, which the next
        # bytes continue, so they go to it too (a continuation looking like a whole alert).
        self._partial = inner._request_count == before
        if self._deadline is not None and not self._partial:
            self._headers_arrived()

    def _after_turn(self) -> None:
        data, self._held = self._held, None
        if data is not None:  # None: the connection was lost meanwhile
            self._take(bytes(data))

    def _idle(self) -> bool:
        """Whether aiohttp has answered every request it parsed on this connection (waits for
        the next, or has had none) and the connection is open: a refusal written now comes
        after all their answers."""
        inner = self._inner
        if (self._partial or inner._messages or self._transport is None
                or self._transport.is_closing()):
            return False
        waiter = inner._waiter
        return inner._request_count == 0 or (waiter is not None and not waiter.done())

    def _between_requests(self) -> bool:
        """Whether aiohttp's loop over this connection's requests is between two of them: no
        request queued or being handled, and not yet waiting for the next. Either the last
        one's answer is written and the loop resumes on the next turn, or (Python 3.11, whose
        tasks start a turn late) a request's handling starts on the next turn; `_idle` tells
        the two apart after that turn."""
        inner = self._inner
        return (not self._partial and not inner._messages and inner._waiter is None
                and not inner._request_in_progress and inner._request_count > 0
                and self._transport is not None and not self._transport.is_closing())

    def _refuse(self, route: str) -> None:
        assert self._transport is not None
        self._transport.write(REFUSED_KEEP_ALIVE)
        self._guard.overloaded(route)
        self._headers_arrived()
        inner = self._inner  # its idle connection timer counts from this answer too
        inner._next_keepalive_close_time = inner._loop.time() + inner._keepalive_timeout

    def _headers_arrived(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def eof_received(self) -> None:
        if self._counted:
            self._after_turn()  # bytes held, before the end: in their order
            self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._counted:
            return
        self._guard.open -= 1
        self._held = None  # no answer can reach the sender: it sends them again
        self._guard.admission.release(self._transport)
        if self._deadline is not None:
            self._deadline.cancel()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def __getattr__(self, name: str) -> Any:  # anything else asyncio asks of the protocol
        return getattr(self._inner, name)


class GuardedSite(web.TCPSite):
    """aiohttp's TCP site, its connections through a ConnectionGuard, taken by the ingest's
    own listener (ingest.listener: every waiting connection per turn, not libuv's one)."""

    def __init__(self, runner: web.AppRunner) -> None:
        app = runner.app
        settings = app[SETTINGS].ingest
        super().__init__(runner, settings.host, settings.port, backlog=LISTEN_BACKLOG)
        self._settings = settings
        self._app = app

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        metrics, admission = self._app[METRICS], self._app[ADMISSION]
        guard = ConnectionGuard(server, self._settings.header_timeout_s,
                                self._settings.max_connections,
                                lambda reason: metrics.connections_cut.labels(reason).inc(),
                                admission,
                                lambda route: count_overloaded(metrics, admission, route))
        self._server = Listener(
            listening_sockets(self._settings.host, self._settings.port, LISTEN_BACKLOG), guard)
        await self._server.start_serving()
