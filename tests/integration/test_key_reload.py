"""Keys are read again on SIGHUP by a running ingest process, without dropping requests."""

from __future__ import annotations

import asyncio
import json
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


async def test_sighup_rereads_the_file_named_by_config_and_never_drops_every_register(
    settings: Settings, tmp_path: Path, old_rsa_pem: bytes, amqp: Any,
) -> None:
    """Started with --config while HH_CONFIG names another file (with no cash register): a
    reload reads the --config file; one that would leave no cash register keeps the keys."""
    port = free_port()
    raw = write_config(tmp_path, old_rsa_pem, ingest={"port": port})
    config = tmp_path / "ingest.toml"
    config.write_text(toml_text(raw))
    elsewhere = tmp_path / "default.toml"
    elsewhere.write_text(toml_text({key: value for key, value in raw.items()
                                    if key != "projects"}))
    proc = await ServiceProcess.start(config, "ingest", by_flag=True, env_config=elsewhere)
    url = f"http://127.0.0.1:{port}{CALLBACK_PATHS['callback']}"
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until(answers(http, f"http://127.0.0.1:{port}/readyz", 200), 30,
                             "ingest ready")

            async def status(n: int) -> int:
                body = alert_body(f"flag-{n}")
                async with http.post(url, data=body,
                                     headers=signed_headers(body, gateway_hmac())) as r:
                    return r.status

            async def said(event: str, times: int) -> bool:
                return proc.count(event) >= times

            assert await status(1) == 200
            proc.signal(signal.SIGHUP)
            await wait_until(lambda: said("keys_reloaded", 1), 10, "the reload")
            assert await status(2) == 200  # the --config file's keys, not HH_CONFIG's none
            config.write_text(toml_text({key: value for key, value in raw.items()
                                         if key != "projects"}))
            proc.signal(signal.SIGHUP)
            await wait_until(lambda: said("keys_reload_failed", 1), 10, "the refused reload")
            assert await status(3) == 200  # the keys in use were kept
            [line] = [json.loads(raw_line) for raw_line in proc.lines
                      if b'"keys_reload_failed"' in raw_line]
            assert line["level"] == "error" and "no cash register" in line["error"]
    finally:
        assert await proc.stop() == 0, proc.output()[-3000:]
