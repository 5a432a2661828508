"""The connection guard's early refusal between two requests of one kept connection.

uvloop reads the sockets before it runs what is ready, so a sender's next request is often
read after aiohttp wrote its last answer but before aiohttp's loop over the connection's
requests resumed. These tests put a request's bytes at exactly those instants (by scheduling
the protocol's `data_received` as the transport would), on a real aiohttp server and real
loopback sockets; no services."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from ingest.admission import REFUSED_KEEP_ALIVE, Admission
from ingest.slow import ConnectionGuard
from shared.wire import CALLBACK_PATHS

ROUTE = next(iter(CALLBACK_PATHS))
PATH = CALLBACK_PATHS[ROUTE]


def alert_request(tag: str) -> bytes:
    body = b'{"tag": "%s"}' % tag.encode()
    return (b"POST %s HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (PATH.encode(), len(body), body))


@dataclass
class Server:
    admission: Admission
    protocols: list[Any] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    handled: list[bytes] = field(default_factory=list)
    after_answer: Callable[[], None] | None = None  # run once an answer is written
    entered: asyncio.Event = field(default_factory=asyncio.Event)  # a request reached the handler
    release: asyncio.Event = field(default_factory=asyncio.Event)
    hold: bool = False  # the handler waits for `release`
    port: int = 0


class _Hooked(web.Response):
    """An answer that calls the server's hook once aiohttp has written all of it."""

    hook: Callable[[], None] | None = None

    async def write_eof(self, data: bytes = b"") -> None:
        await super().write_eof(data)
        if self.hook is not None:
            self.hook()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server(Admission(1))

    async def handler(request: web.Request) -> web.StreamResponse:
        # As the ingest's handler: the place the guard took for the alert is its own.
        claimed = state.admission.claim(request.transport)
        body = await request.read()
        state.handled.append(body)
        state.entered.set()
        if state.hold:
            await state.release.wait()
        if claimed:
            state.admission.leave()
        answer = _Hooked(body=body, content_type="application/json")
        answer.hook, state.after_answer = state.after_answer, None
        return answer

    app = web.Application()
    app.router.add_post(PATH, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    assert runner.server is not None
    guard = ConnectionGuard(runner.server, 10.0, 100, lambda _reason: None, state.admission,
                            state.refused.append)

    def protocol() -> asyncio.Protocol:
        made = guard()
        state.protocols.append(made)
        return made

    listening = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", 0)
    state.port = listening.sockets[0].getsockname()[1]
    yield state
    listening.close()
    await listening.wait_closed()
    await runner.cleanup()


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return head + await reader.readexactly(length)


def body_of(answer: bytes) -> bytes:
    return answer.split(b"\r\n\r\n", 1)[1]


async def test_a_request_read_just_after_the_last_answer_is_refused_without_aiohttp(
        server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    loop = asyncio.get_running_loop()

    def next_request_lands() -> None:
        # The answer is written; aiohttp's loop resumes only after what is scheduled now.
        server.admission.in_flight = 1  # another alert took the last place meanwhile
        loop.call_soon(server.protocols[0].data_received, alert_request("second"))

    server.after_answer = next_request_lands
    writer.write(alert_request("first"))
    assert body_of(await read_answer(reader)) == b'{"tag": "first"}'
    assert await read_answer(reader) == REFUSED_KEEP_ALIVE
    assert server.refused == [ROUTE]
    assert server.handled == [b'{"tag": "first"}']  # aiohttp never parsed the second

    server.admission.in_flight = 0  # the connection was kept, and takes the next alert
    writer.write(alert_request("third"))
    assert body_of(await read_answer(reader)) == b'{"tag": "third"}'
    writer.close()


async def test_bytes_held_for_the_turn_reach_aiohttp_before_the_senders_end(
        server: Server) -> None:
    """The sender's end (EOF) arrives right behind the held bytes: they are not lost, and
    aiohttp reads them before the end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    loop = asyncio.get_running_loop()

    def request_then_end() -> None:
        server.admission.in_flight = 1
        guarded = server.protocols[0]
        guarded.data_received(alert_request("second"))
        guarded.eof_received()

    server.after_answer = lambda: loop.call_soon(request_then_end)
    writer.write(alert_request("first"))
    assert body_of(await read_answer(reader)) == b'{"tag": "first"}'
    assert body_of(await asyncio.wait_for(read_answer(reader), 5)) == b'{"tag": "second"}'
    assert server.refused == []
    writer.close()


@pytest.mark.skipif(sys.version_info >= (3, 12),
                    reason="aiohttp starts a request's task eagerly on 3.12+: no such instant")
async def test_a_request_read_before_the_previous_ones_handling_starts_waits_its_turn(
        server: Server) -> None:
    """Python 3.11: aiohttp has taken a request and made its task, which starts on the next
    turn. A request read now must not be answered before it: it goes to aiohttp, in order."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    loop = asyncio.get_running_loop()
    default = loop.get_task_factory()

    def tasks(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        if getattr(coro, "__name__", "") == "_handle_request":
            loop.set_task_factory(default)
            server.admission.in_flight = 1
            # scheduled before the task's first step, which its making schedules
            loop.call_soon(server.protocols[0].data_received, alert_request("second"))
        return asyncio.Task(coro, loop=loop, **kwargs)

    server.hold = True
    loop.set_task_factory(tasks)
    try:
        writer.write(alert_request("first"))
        await asyncio.wait_for(server.entered.wait(), 5)
    finally:
        loop.set_task_factory(default)
    server.admission.in_flight = 0
    server.release.set()
    assert body_of(await read_answer(reader)) == b'{"tag": "first"}'
    assert body_of(await read_answer(reader)) == b'{"tag": "second"}'
    assert server.refused == []
    writer.close()


async def answered_once(server: Server, tag: str
                        ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Any]:
    """A kept connection that has had one alert answered, and its guarded protocol once
    aiohttp waits for the connection's next request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(alert_request(tag))
    assert body_of(await read_answer(reader)) == b'{"tag": "%s"}' % tag.encode()
    guarded = server.protocols[-1]
    for _ in range(100):  # aiohttp's loop over the connection resumes within a turn or two
        if guarded._idle():
            break
        await asyncio.sleep(0)
    assert guarded._idle()
    return reader, writer, guarded


async def test_alerts_read_in_one_turn_past_the_bound_are_refused_before_aiohttp_parses_them(
        server: Server) -> None:
    """uvloop reads every ready socket before it runs any handler: the place is taken as the
    alert is read, so the second alert of the turn finds the bound reached."""
    reader_a, writer_a, first = await answered_once(server, "a1")
    reader_b, writer_b, second = await answered_once(server, "b1")

    def both_read_in_one_turn() -> None:
        first.data_received(alert_request("a2"))
        second.data_received(alert_request("b2"))

    asyncio.get_running_loop().call_soon(both_read_in_one_turn)
    assert body_of(await read_answer(reader_a)) == b'{"tag": "a2"}'
    assert await read_answer(reader_b) == REFUSED_KEEP_ALIVE
    assert server.refused == [ROUTE]
    assert server.handled == [b'{"tag": "a1"}', b'{"tag": "b1"}', b'{"tag": "a2"}']
    assert server.admission.in_flight == 0
    for writer in (writer_a, writer_b):
        writer.close()


async def test_a_place_taken_for_an_alert_is_given_back_when_its_connection_is_lost_first(
        server: Server) -> None:
    _reader, writer, guarded = await answered_once(server, "first")
    guarded.data_received(alert_request("second"))
    assert server.admission.in_flight == 1  # taken as it was read
    guarded._transport.abort()  # lost before aiohttp hands the alert to its handler
    writer.close()
    for _ in range(100):  # the loss is told a turn or two later
        if server.admission.in_flight == 0:
            break
        await asyncio.sleep(0)
    assert server.admission.in_flight == 0
    if sys.version_info < (3, 12):  # the handler's task starts a turn late: the loss comes first
        assert server.handled == [b'{"tag": "first"}']  # given back by the loss, not a handler
