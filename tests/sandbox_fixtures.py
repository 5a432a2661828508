"""The sandbox as HighHelp in tests: in-process, on loopback, with the vectors' keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from sandbox.app import SANDBOX, Sandbox, SandboxConfig, create_app
from sandbox.scenarios import Chaos
from shared.signature import load_verify_key
from tests.keys import PROJECT_ID, gateway_rsa, key_pem


def sandbox_config(chaos: Chaos | None = None, seed: int = 1) -> SandboxConfig:
    merchant = (load_verify_key(key_pem("merchant_request_public_key_spki"), "rsa"),
                load_verify_key(key_pem("request_hmac_key"), "hmac"))
    return SandboxConfig({PROJECT_ID: merchant}, gateway_rsa(),
                         chaos=chaos or Chaos(step_delay_s=0.05), seed=seed)


class RunningSandbox:
    def __init__(self, server: TestServer) -> None:
        self.server = server
        self.url = str(server.make_url("")).rstrip("/")
        self.state: Sandbox = server.app[SANDBOX]


@pytest.fixture
async def start_sandbox() -> AsyncIterator[Callable[..., Any]]:
    servers: list[TestServer] = []

    async def start(config: SandboxConfig | None = None) -> RunningSandbox:
        server = TestServer(create_app(config or sandbox_config()))
        await server.start_server()
        servers.append(server)
        return RunningSandbox(server)

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
