"""Keys are read again on SIGHUP by a running ingest process, without dropping requests."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization

from shared.settings import Settings
from shared.signature import load_signing_key
from shared.wire import CALLBACK_PATHS
from tests.conftest import toml_text, wait_until, write_config
from tests.keys import alert_body, gateway_hmac, gateway_rsa, key_pem, signed_headers
from tests.processes import ServiceProcess, answers, free_port

pytestmark = pytest.mark.services


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
    proc = await ServiceProcess.start(config, "ingest")
    url = f"http://127.0.0.1:{port}{CALLBACK_PATHS['callback']}"
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until(answers(http, f"http://127.0.0.1:{port}/readyz", 200), 30,
                             "ingest ready")

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
            proc.signal(signal.SIGHUP)

            async def reloaded() -> bool:
                return proc.count("keys_reloaded") > 0
            await wait_until(reloaded, 10, "the reload")
            assert await status(gateway_rsa(), 3) == 200 and await status(old, 4) == 401
            keep_going = False
            await streaming
            assert stream and set(stream) == {200}, stream  # nothing dropped or refused
    finally:
        assert await proc.stop() == 0, proc.output()[-3000:]
