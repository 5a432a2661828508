"""Fixtures over the real local services (RabbitMQ, FerretDB on loopback; `make services`)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ingest.app import BROKER, create_app
from shared import mongo
from shared.broker import check_delays
from shared.settings import (
    AmqpSettings,
    PollerSettings,
    Settings,
    WorkerSettings,
    parse_settings,
)
from shared.topology import (
    DEAD_QUEUE,
    DUE_QUEUE,
    ORDERS_EXCHANGE,
    PROCESS_QUEUE,
    REGISTER_QUEUE,
    contract_topology,
    declare,
    retry_queue,
    wait_queue,
)
from tests import (
    contract_check,
    logcapture,
    store_commands,  # noqa: F401 - its listener sees every client made later
)
from tests.console_fixtures import console_app  # noqa: F401 - fixtures for all tests
from tests.keys import PROJECT_ID, SIGNATURES_MADE, key_pem, vectors
from tests.logcapture import LOG_LINES
from tests.processes import ServiceProcess
from tests.sandbox_fixtures import http, start_sandbox  # noqa: F401 - fixtures for all tests
from worker.app import Worker

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
MONGO_URL = "mongodb://127.0.0.1:27017"

logcapture.configure()


def _secrets() -> dict[str, str]:
    """Key material and signature values that must never be logged."""
    found = {f"key {name}": body.strip() for name, body in vectors()["keys"].items()}
    for name, body in vectors()["keys"].items():
        if "-----BEGIN" in body:  # also any single line of a PEM body
            for n, line in enumerate(body.strip().splitlines()[1:-1]):
                found[f"{name} line {n}"] = line
    for case in vectors()["cases"]:
        for field in ("rsa_signature_by_gateway_key", "hmac_sha512_hex_by_callback_key"):
            found[f"vector {field}"] = case[field]
    for n, signature in enumerate(SIGNATURES_MADE):
        found[f"signature made in a test #{n}"] = signature
    return found


@pytest.fixture(scope="session", autouse=True)
def every_message_follows_the_contract() -> Iterator[None]:
    contract_check.install()
    yield
    assert not contract_check.FOUND, (
        f"{len(contract_check.FOUND)} messages broke the contract's schemas (checked "
        f"{dict(contract_check.SEEN)}): {contract_check.FOUND[:5]}")


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log_line() -> Iterator[None]:
    # One line through the same path as every other, so that the capture is known to work
    # even in a run whose tests log nothing (the unit tests alone).
    structlog.get_logger("tests").info("log_capture_started")
    yield
    text = "\n".join(LOG_LINES)
    leaked = [what for what, secret in _secrets().items() if len(secret) >= 16 and secret in text]
    assert LOG_LINES, "the log capture saw nothing: the check would prove nothing"
    assert not leaked, f"secrets in log lines: {leaked[:5]}"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(autouse=True)
async def no_leftover_processes() -> AsyncIterator[None]:
    yield
    await ServiceProcess.kill_leftovers()


@pytest.fixture(scope="session")
def services() -> None:
    missing = [name for name, port in (("RabbitMQ", 5672), ("FerretDB", 27017))
               if not _port_open(port)]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not running: `make services` starts them")


@pytest.fixture(scope="session")
def old_rsa_pem() -> bytes:
    """A second callback key, as during a rotation (the "old" one)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_config(
    tmp: Path, old_rsa_pem: bytes, project: dict[str, Any] | None = None,
    **sections: dict[str, Any],
) -> dict[str, Any]:
    from shared.signature import load_signing_key

    old_public = load_signing_key(old_rsa_pem, "rsa").rsa_private.public_key()  # type: ignore[union-attr]
    (tmp / "old_public.pem").write_bytes(old_public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (tmp / "gateway_public.pem").write_bytes(key_pem("gateway_callback_public_key_pkcs1"))
    (tmp / "callback_hmac.txt").write_bytes(key_pem("callback_hmac_key") + b"\n")
    (tmp / "merchant_private.pem").write_bytes(key_pem("merchant_request_private_key_pkcs8"))
    (tmp / "request_hmac.txt").write_bytes(key_pem("request_hmac_key"))
    raw: dict[str, Any] = {
        # The local MongoDB-compatible server slows down with many concurrent writers.
        "amqp": {"url": AMQP_URL, "publish_timeout_s": 5.0, "prefetch": 4},
        "mongo": {"url": MONGO_URL, "database": f"hh_test_{uuid.uuid4().hex[:10]}"},
        "ingest": {"host": "127.0.0.1", "port": 0},
        "worker": {"host": "127.0.0.1", "port": 0, "maintenance_interval_s": 2.0,
                   "relay_grace_s": 2.0},
        # Retention is run by its own test; every 2 s it would scan each test's collections.
        "retention": {"enabled": False},
        "projects": [{
            "project_id": PROJECT_ID,
            "callback_public_keys": ["old_public.pem", "gateway_public.pem"],
            "callback_hmac_keys": ["callback_hmac.txt"],
            "merchant_private_key": "merchant_private.pem",
            **(project or {}),
        }],
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return raw


def toml_text(raw: dict[str, Any]) -> str:
    """Enough TOML for our config shape (tables of scalars/lists, one array of tables)."""
    def scalar(v: Any) -> str:
        return json.dumps(v) if not isinstance(v, bool) else str(v).lower()

    lines = []
    for name, table in raw.items():
        if name == "projects":
            continue
        lines.append(f"[{name}]")
        lines += [f"{k} = {scalar(v)}" for k, v in table.items()]
    for project in raw.get("projects", []):
        lines.append("[[projects]]")
        lines += [f"{k} = {scalar(v)}" for k, v in project.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def make_settings(
    tmp_path: Path, old_rsa_pem: bytes
) -> Callable[..., Settings]:
    def make(project: dict[str, Any] | None = None, **sections: dict[str, Any]) -> Settings:
        raw = write_config(tmp_path, old_rsa_pem, project, **sections)
        return parse_settings(raw, tmp_path, env={})

    return make


@pytest.fixture
async def settings(
    services: None, make_settings: Callable[..., Settings]
) -> AsyncIterator[Settings]:
    value = make_settings()
    yield value
    client = mongo.client(value.mongo)
    await client.drop_database(value.mongo.database)
    await client.close()


@pytest.fixture
async def amqp(services: None) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A channel for tests, with the work queues emptied: each test starts from nothing."""
    connection = await aio_pika.connect_robust(AMQP_URL)
    channel = await connection.channel()
    delays = WorkerSettings().retry_delays_s
    waits = check_delays(PollerSettings())  # checks an earlier run (the soak) left waiting
    declared = await declare(channel, contract_topology(AmqpSettings().delivery_limit, delays,
                                                        waits))
    names = [PROCESS_QUEUE, DEAD_QUEUE, REGISTER_QUEUE, DUE_QUEUE, *map(retry_queue, delays),
             *map(wait_queue, waits)]
    for name in names:
        await declared.queues[name].purge()
    yield channel
    await connection.close()


class EventTap:
    """A private queue bound to hh.orders: every downstream event published during a test."""

    def __init__(self, queue: aio_pika.abc.AbstractQueue) -> None:
        self.queue = queue
        self.seen: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def drain(self) -> list[dict[str, Any]]:
        while True:
            message = await self.queue.get(no_ack=True, fail=False)
            if message is None:
                return [self.decode(m) for m in self.seen]
            contract_check.check(ORDERS_EXCHANGE, message.routing_key or "", message.body)
            self.seen.append(message)

    @staticmethod
    def decode(message: aio_pika.abc.AbstractIncomingMessage) -> dict[str, Any]:
        return {**json.loads(message.body), "_routing_key": message.routing_key,
                "_message_id": message.message_id}

    async def wait(self, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        return await wait_until(lambda: self._at_least(count), timeout, f"{count} events")

    async def _at_least(self, count: int) -> list[dict[str, Any]] | None:
        events = await self.drain()
        return events if len(events) >= count else None


@pytest.fixture
async def events(amqp: aio_pika.abc.AbstractChannel) -> EventTap:
    exchange = await amqp.get_exchange(ORDERS_EXCHANGE)
    queue = await amqp.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange, "order.#")
    return EventTap(queue)


async def take_queued(channel: aio_pika.abc.AbstractChannel, name: str = PROCESS_QUEUE
                      ) -> list[bytes]:
    """The bodies of the messages ready in a queue, taken off it. (basic.get is exact right
    after a publisher confirm; a passive declare's message count lags on a quorum queue.)"""
    queue = await channel.get_queue(name, ensure=False)
    bodies = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        bodies.append(message.body)
    return bodies


async def wait_until(
    probe: Callable[[], Awaitable[Any]], timeout: float = 20, what: str = "condition",
    every: float = 0.05,
) -> Any:
    """Await a condition on real services: probe until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)


@pytest.fixture
async def ingest(settings: Settings, amqp: Any) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(settings)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    await wait_until(lambda: _ready(app[BROKER].ready), 20, "ingest connected to the broker")
    yield client
    await client.close()


async def _ready(value: bool) -> bool:
    return value


@pytest.fixture
async def worker(settings: Settings, amqp: Any) -> AsyncIterator[Worker]:
    instance = Worker(settings)
    await instance.start(http=False)
    yield instance
    await instance.stop()


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[mongo.Collections]:
    client = mongo.client(settings.mongo)
    yield mongo.Collections.of(client[settings.mongo.database])
    await client.close()
