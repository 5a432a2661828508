"""Keys are read again on SIGHUP by a running ingest process, without dropping requests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization

from shared.settings import Settings
from shared.signature import load_signing_key
from tests.conftest import LOG_LINES, toml_text, wait_until, write_config
from tests.keys import alert_body, gateway_hmac, gateway_rsa, key_pem, signed_headers

pytestmark = pytest.mark.services


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_sighup_swaps_keys_without_dropping_requests(
    settings: Settings, tmp_path: Path, old_rsa_pem: bytes, amqp: Any,
) -> None:
    old = load_signing_key(old_rsa_pem, "rsa")
    assert old.rsa_private is not None
    rotating = tmp_path / "rotating.pem"
    rotating.write_bytes(old.rsa_private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    port = free_port()
    raw = write_config(tmp_path, old_rsa_pem, {"callback_public_keys": ["rotating.pem"]},
                       ingest={"port": port})
    config = tmp_path / "ingest.toml"
    config.write_text(toml_text(raw))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ingest", env={**os.environ, "HH_CONFIG": str(config)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    lines: list[bytes] = []

    async def read() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            lines.append(line)
    reader = asyncio.create_task(read())
    url = f"http://127.0.0.1:{port}/callbacks/highhelp"
    try:
        async with aiohttp.ClientSession() as http:
            async def ready() -> bool:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False
            await wait_until(ready, 30, "ingest ready")

            async def status(key: Any, n: int) -> int:
                body = alert_body(f"reload-{n}")
                async with http.post(url, data=body, headers=signed_headers(body, key)) as r:
                    return r.status

            assert await status(old, 1) == 200 and await status(gateway_rsa(), 2) == 401
            stream: list[int] = []
            keep_going = True

            async def steady() -> None:  # an HMAC-signed stream, valid before and after
                n = 0
                while keep_going:
                    n += 1
                    stream.append(await status(gateway_hmac(), 1000 + n))
            streaming = asyncio.create_task(steady())
            rotating.write_bytes(key_pem("gateway_callback_public_key_spki"))
            proc.send_signal(signal.SIGHUP)

            async def reloaded() -> bool:
                return any(b'"keys_reloaded"' in line for line in lines)
            await wait_until(reloaded, 10, "the reload")
            assert await status(gateway_rsa(), 3) == 200 and await status(old, 4) == 401
            keep_going = False
            await streaming
            assert stream and set(stream) == {200}, stream  # nothing dropped or refused
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        await reader
        LOG_LINES.extend(line.decode(errors="replace") for line in lines)
