"""The ingest's listener takes every connection waiting when its socket is readable (libuv,
under uvloop, takes one per loop turn). Real loopback sockets and the test's own loop; the
readiness callback is called as the loop calls it, so that "one turn" is exact."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Iterator

import pytest

from ingest import listener as listener_module
from ingest.listener import Listener, listening_sockets
from tests.logcapture import captured


class Made(list[asyncio.BaseTransport]):
    """The transports the listener handed over, and an event once `expected` have been."""

    def __init__(self, expected: int = 0) -> None:
        super().__init__()
        self.expected = expected
        self.all_made = asyncio.Event()


def recording(expected: int = 0) -> tuple[Made, type[asyncio.Protocol]]:
    made = Made(expected)

    class Recorder(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.append(transport)
            if len(made) == made.expected:
                made.all_made.set()

    return made, Recorder


def connect(sock: socket.socket, count: int) -> list[socket.socket]:
    """`count` connections the kernel has completed and queued, none accepted yet."""
    return [socket.create_connection(sock.getsockname()[:2]) for _ in range(count)]


def close_all(senders: list[socket.socket], made: Made) -> None:
    """The test's client sockets and the transports the listener handed over."""
    for sender in senders:
        sender.close()
    for transport in made:
        transport.close()


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    (sock,) = listening_sockets("127.0.0.1", 0, 128)
    yield sock
    sock.close()


async def test_one_readable_turn_takes_every_waiting_connection(
    listening: socket.socket,
) -> None:
    made, factory = recording(30)
    listener = Listener([listening], factory)
    senders = connect(listening, 30)
    try:
        listener._accept(listening)  # the loop's callback: the socket is readable
        with pytest.raises(BlockingIOError):  # the kernel's queue is empty
            listening.accept()
        await asyncio.wait_for(made.all_made.wait(), 5)
    finally:
        close_all(senders, made)


async def test_one_turn_takes_no_more_than_its_share(
    listening: socket.socket, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(listener_module, "ACCEPT_PER_TURN", 5)
    made, factory = recording(5)
    listener = Listener([listening], factory)
    senders = connect(listening, 8)
    try:
        listener._accept(listening)
        await asyncio.wait_for(made.all_made.wait(), 5)
        left, _ = listening.accept()  # the rest wait for the next turn
        left.close()
        assert len(made) == 5
    finally:
        close_all(senders, made)


async def test_a_connection_the_loop_cannot_take_is_closed_and_the_next_served(
    listening: socket.socket,
) -> None:
    """The protocol cannot be made for one connection: that connection is closed at once
    (its sender sees the end, not a hang) with a line naming the error, and the listener
    goes on serving the next one."""
    made, working = recording(1)
    failures = iter([RuntimeError("no protocol")])

    def factory() -> asyncio.Protocol:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return working()

    listener = Listener([listening], factory)
    await listener.start_serving()
    senders = connect(listening, 1)
    refused = senders[0]
    try:
        with captured() as logged:
            refused.setblocking(False)
            assert await asyncio.wait_for(asyncio.get_running_loop().sock_recv(refused, 1),
                                          5) == b""
        assert [(e["event"], e["error"]) for e in logged] == [
            ("connection_not_served", "RuntimeError")]
        senders += connect(listening, 1)  # served
        await asyncio.wait_for(made.all_made.wait(), 5)
    finally:
        listener.close()
        close_all(senders, made)


class Exhausted(socket.socket):
    """A listening socket whose accept() finds no file descriptor left."""

    tried_at: list[float]
    tried_twice: asyncio.Event

    def accept(self) -> tuple[socket.socket, object]:  # type: ignore[override]
        self.tried_at.append(asyncio.get_running_loop().time())
        if len(self.tried_at) == 2:
            self.tried_twice.set()
        raise OSError(errno.EMFILE, "Too many open files")


async def test_out_of_descriptors_pauses_accepting_instead_of_spinning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The socket stays readable while accept() fails: the listener steps away for a while
    (else the loop would call it back at once, forever) and tries again after."""
    monkeypatch.setattr(listener_module, "RETRY_S", 0.05)
    sock = Exhausted(socket.AF_INET, socket.SOCK_STREAM)
    sock.tried_at, sock.tried_twice = [], asyncio.Event()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    made, factory = recording()
    listener = Listener([sock], factory)
    sender = socket.create_connection(sock.getsockname()[:2])
    try:
        with captured() as logged:
            await listener.start_serving()
            await asyncio.wait_for(sock.tried_twice.wait(), 5)
        first, second = sock.tried_at[:2]
        assert second - first >= 0.04 and not made  # paused, not called back at once
        assert [e["event"] for e in logged][:2] == ["ingest_accept_paused"] * 2
        assert logged[0]["reason"] == "EMFILE"
    finally:
        listener.close()
        sender.close()
    assert not listener.is_serving() and sock.fileno() == -1
