"""Slow and surplus connections against a real ingest process: a client that trickles its
headers is cut off, one that trickles its body is answered 408, past max_connections a new
connection is answered 503 at once, and normal alerts are answered meanwhile."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shared.settings import Settings
from shared.wire import CALLBACK_PATHS
from tests.conftest import toml_text, wait_until, write_config
from tests.keys import alert_body, gateway_hmac, signed_headers
from tests.processes import ServiceProcess, answers, free_port

pytestmark = pytest.mark.services
PATH = CALLBACK_PATHS["callback"]
MAX_CONNECTIONS = 40
TRICKLERS = 20


async def start_ingest(settings: Settings, tmp_path: Path, old_rsa_pem: bytes,
                       limits: dict[str, Any] | None = None, **sections: dict[str, Any],
                       ) -> tuple[ServiceProcess, int]:
    port = free_port()
    raw = write_config(tmp_path, old_rsa_pem, mongo={"database": settings.mongo.database},
                       ingest={"port": port, "header_timeout_s": 1.0, "body_timeout_s": 1.0,
                               "max_connections": MAX_CONNECTIONS, **(limits or {})},
                       **sections)
    config = tmp_path / "ingest.toml"
    config.write_text(toml_text(raw))
    ingest = await ServiceProcess.start(config, "ingest")
    async with aiohttp.ClientSession() as http:
        await wait_until(answers(http, f"http://127.0.0.1:{port}/readyz", 200), 30, "ready")
    return ingest, port


async def trickle_headers(port: int, stop: asyncio.Event) -> bool:
    """A header line every 0.2 s, never the blank line; True once the ingest closed it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST {PATH} HTTP/1.1\r\nHost: x\r\n".encode())
    n = 0
    try:
        while not stop.is_set():
            writer.write(f"X-Slow-{n}: {n}\r\n".encode())
            n += 1
            try:
                await writer.drain()
                if await asyncio.wait_for(reader.read(1024), 0.2) == b"":
                    return True  # closed by the ingest
            except TimeoutError:
                continue
            except ConnectionError:
                return True
        return False
    finally:
        writer.close()


async def alert_latencies(port: int, count: int) -> list[float]:
    async with aiohttp.ClientSession() as http:
        took = []
        for n in range(count):
            body = alert_body(f"fast-{time.time_ns()}-{n}")
            started = time.perf_counter()
            async with http.post(f"http://127.0.0.1:{port}{PATH}", data=body,
                                 headers=signed_headers(body, gateway_hmac())) as response:
                assert response.status == 200, await response.text()
            took.append(time.perf_counter() - started)
        return took


async def metric(port: int, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))


async def test_a_client_trickling_its_headers_is_cut_off_while_alerts_are_answered(
    settings: Settings, tmp_path: Path, old_rsa_pem: bytes, amqp: Any,
) -> None:
    ingest, port = await start_ingest(settings, tmp_path, old_rsa_pem)
    try:
        before = await alert_latencies(port, 30)
        stop = asyncio.Event()
        tricklers = [asyncio.create_task(trickle_headers(port, stop)) for _ in range(TRICKLERS)]
        during = await alert_latencies(port, 30)
        cut = await asyncio.wait_for(asyncio.gather(*tricklers), 30)
        assert all(cut), "every trickling client is cut off"
        assert await metric(
            port, 'hh_ingest_connections_cut_total{reason="headers_too_slow"}') >= TRICKLERS
        print(f"\nalert latency p50 {statistics.median(before) * 1000:.1f} ms alone, "
              f"{statistics.median(during) * 1000:.1f} ms beside {TRICKLERS} trickling "
              f"clients (each cut after ingest.header_timeout_s = 1 s)")
    finally:
        assert await ingest.stop() == 0, ingest.output()[-2000:]


async def test_a_body_trickled_in_is_answered_408(
    settings: Settings, tmp_path: Path, old_rsa_pem: bytes, amqp: Any,
) -> None:
    ingest, port = await start_ingest(settings, tmp_path, old_rsa_pem)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = alert_body("slow-body")
        headers = signed_headers(body, gateway_hmac())
        writer.write(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                     .encode() + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
                     + b"\r\n" + body[:10])

        async def answered() -> bytes:
            for byte in body[10:]:
                writer.write(bytes([byte]))
                try:
                    head = await asyncio.wait_for(reader.read(200), 0.3)
                except TimeoutError:
                    continue
                return head
            return b""
        head = await asyncio.wait_for(answered(), 60)
        writer.close()
        assert head.startswith(b"HTTP/1.1 408"), head
    finally:
        assert await ingest.stop() == 0, ingest.output()[-2000:]


async def test_past_max_connections_a_new_connection_is_answered_503(
    settings: Settings, tmp_path: Path, old_rsa_pem: bytes, amqp: Any,
) -> None:
    ingest, port = await start_ingest(settings, tmp_path, old_rsa_pem)
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(MAX_CONNECTIONS)]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in answer, answer
    finally:
        for _, holder in held:
            holder.close()
    # Once they are gone, alerts are answered again.
    async def served() -> bool:
        try:
            return bool(await alert_latencies(port, 1))
        except (AssertionError, aiohttp.ClientError):
            return False
    await wait_until(served, 20, "alerts answered again")
    assert await metric(
        port, 'hh_ingest_connections_cut_total{reason="too_many_connections"}') >= 1
    assert await ingest.stop() == 0, ingest.output()[-2000:]
