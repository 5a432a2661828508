"""The ingest's listening sockets, accepting every connection that waits.

libuv (under uvloop) accepts one connection per turn of the event loop (libuv PR 3696:
"most of the time the second accept() fails"). Under load a turn takes milliseconds, so
when a retry storm opens hundreds of connections at once, they wait in the kernel's queue
at a few hundred a second while the loop serves the connections it has: their senders see
no answer, not even a refusal, and open more (measured: 500 queued, answers 1-2 s late).
Here, each time a socket is readable, every connection waiting is taken, up to
ACCEPT_PER_TURN, and handed to the loop as uvloop would (`connect_accepted_socket`)."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable

import structlog

log = structlog.get_logger("ingest")
ACCEPT_PER_TURN = 256  # the most connections taken in one turn: the loop's other work waits
RETRY_S = 1.0  # out of file descriptors: accepting pauses this long (as asyncio's own does)
# accept() failing for want of resources: the socket stays readable, so accepting pauses.
_EXHAUSTED = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def listening_sockets(host: str, port: int, backlog: int) -> list[socket.socket]:
    """A listening socket for each address `host` names, as the loop's create_server binds."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    addresses = dict.fromkeys((family, address) for family, _, _, _, address in found)
    listening = []
    try:
        for family, address in addresses:
            listening.append(socket.create_server(address, family=family, backlog=backlog))
            listening[-1].setblocking(False)
    except OSError:
        for sock in listening:
            sock.close()
        raise
    return listening


class Listener(asyncio.AbstractServer):
    """Serves `protocol_factory` on `sockets`, accepting all waiting connections per turn."""

    def __init__(self, sockets: list[socket.socket],
                 protocol_factory: Callable[[], asyncio.Protocol]) -> None:
        self._loop = asyncio.get_running_loop()
        self._sockets = sockets
        self._protocol_factory = protocol_factory
        self._handing: set[asyncio.Task[object]] = set()  # connections being handed over
        self._serving = False

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._sockets)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        self._listen()

    def _listen(self) -> None:
        self._serving = True
        for sock in self._sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_PER_TURN):
            try:
                connection, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # none left
            except ConnectionAbortedError:
                continue  # the sender gave up while it waited
            except OSError as exc:
                if exc.errno not in _EXHAUSTED:
                    raise
                log.error("ingest_accept_paused", reason=errno.errorcode[exc.errno],
                          seconds=RETRY_S)
                self._pause()
                return
            handing = self._loop.create_task(self._hand_over(connection))
            self._handing.add(handing)
            handing.add_done_callback(self._handing.discard)

    async def _hand_over(self, connection: socket.socket) -> None:
        """The connection to the loop and the protocol; one it cannot take is closed (the
        sender sees it end and sends again), not left to the garbage collector."""
        try:
            await self._loop.connect_accepted_socket(self._protocol_factory, connection)
        except Exception as exc:  # noqa: BLE001 - one connection's failure, not the listener's
            connection.close()
            log.warning("connection_not_served", error=type(exc).__name__)

    def _pause(self) -> None:
        for sock in self._sockets:
            self._loop.remove_reader(sock.fileno())
        self._loop.call_later(RETRY_S, self._resume)

    def _resume(self) -> None:
        if self._serving:
            self._listen()

    def close(self) -> None:
        if self._serving:
            for sock in self._sockets:
                self._loop.remove_reader(sock.fileno())
        self._serving = False
        for sock in self._sockets:
            sock.close()

    async def wait_closed(self) -> None:
        return

    async def serve_forever(self) -> None:
        raise NotImplementedError("served by the ingest's own loop")
