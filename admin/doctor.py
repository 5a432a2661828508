"""`hh-admin doctor`: the go-live check, run before HighHelp is pointed at the service and after
every change. One line per check, ✓ or ✗ with what to do; never a key or a secret.

config and keys -> broker and its topology -> consumers -> store and indexes -> each cash
register's HighHelp API (a signed balance request) -> the public callback URLs (a probe).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import aiohttp
from pymongo.errors import PyMongoError

from shared import mongo
from shared.broker import Broker
from shared.gateway import GatewayClient, GatewayError, GatewayRejected, RetryPolicy
from shared.settings import ProjectSettings, Settings
from shared.topology import DUE_QUEUE, PROCESS_QUEUE, REGISTER_QUEUE
from shared.wire import CALLBACK_PATHS, PROBE_HEADER

CONSUMED = (PROCESS_QUEUE, REGISTER_QUEUE, DUE_QUEUE)  # a running worker consumes each
ONE_TRY = RetryPolicy(attempts=1, total_s=10.0, request_timeout_s=10.0)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was found; when not ok, what to do

    def line(self) -> str:
        return f"{'✓' if self.ok else '✗'} {self.name}: {self.detail}"


def _where(url: str) -> str:
    """host:port of a URL, without its credentials (safe to print)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def config_checks(settings: Settings) -> list[Check]:
    source = settings.config_file or "defaults and HH_* (no HH_CONFIG)"
    checks = [Check("config", bool(settings.projects),
                    f"{source}: {len(settings.projects)} cash register(s)" if settings.projects
                    else f"{source} names no cash register: add a [[projects]] entry")]
    for project in settings.projects.values():
        keys = ", ".join(f"{k.key_id} ({k.algorithm})" for k in project.callback_keys)
        checks.append(Check(f"{project.project_id} callback keys", True, keys))
        request = project.request_key
        checks.append(Check(
            f"{project.project_id} merchant key", request is not None,
            f"{request.key_id} ({request.algorithm})" if request else
            "none: set merchant_private_key (RSA) or request_hmac_key, or polls cannot run"))
    return checks


async def broker_checks(settings: Settings) -> list[Check]:
    where = _where(settings.amqp.url)
    broker = Broker.for_settings(settings)
    try:
        await asyncio.wait_for(broker.connect(), 10)
    except (TimeoutError, OSError) as exc:
        return [Check("broker", False, f"no answer from {where} ({type(exc).__name__}): start "
                      "RabbitMQ or fix [amqp] url")]
    except aio_pika.exceptions.AMQPError as exc:
        # A queue declared with other arguments than the contract's: PRECONDITION_FAILED.
        return [Check("broker", False, f"{where} refuses the contract's topology "
                      f"({type(exc).__name__}: {exc}): the queue must be moved or deleted "
                      "(docs/reference/contract.md)")]
    try:
        checks = [Check("broker", True, f"{where}: the contract's topology is declared")]
        assert broker.connection is not None
        channel = await broker.connection.channel()
        for name in CONSUMED:
            queue = await channel.declare_queue(name, passive=True)
            consumers = queue.declaration_result.consumer_count or 0
            checks.append(Check(f"consumers of {name}", consumers > 0,
                                f"{consumers}" if consumers else "none: start hh-worker"))
        await channel.close()
        return checks
    finally:
        await broker.close()


async def store_checks(settings: Settings) -> list[Check]:
    where = _where(settings.mongo.url)
    client: Any = mongo.client(settings.mongo)
    try:
        db = client[settings.mongo.database]
        await db.command("ping")
        checks = [Check("store", True, f"{where}, database {settings.mongo.database}")]
        for collection, index in mongo.REQUIRED_INDEXES.items():
            names = [ix["name"] async for ix in await db[collection].list_indexes()]
            checks.append(Check(f"index {collection}.{index}", index in names,
                                "present" if index in names else
                                "missing: start hh-worker once (it creates them)"))
        return checks
    except PyMongoError as exc:
        return [Check("store", False, f"no answer from {where} ({type(exc).__name__}): start "
                      "MongoDB or fix [mongo] url")]
    finally:
        await client.close()


async def api_check(project: ProjectSettings, http: aiohttp.ClientSession) -> Check:
    name = f"{project.project_id} HighHelp API"
    if project.request_key is None:
        return Check(name, False, "not tried: no merchant key to sign with")
    try:
        accounts = await GatewayClient(project, http, ONE_TRY).balance()
    except GatewayRejected as exc:
        if exc.http_status in (401, 403):
            return Check(name, False, f"{project.api_base_url} answered {exc.http_status}: "
                         f"HighHelp does not know our key {project.request_key.key_id} for "
                         "this project: paste its public key (hh-admin keys show) into the "
                         "cash register's settings, or check project_id")
        return Check(name, False, f"{project.api_base_url} answered {exc.http_status}: "
                     f"{exc.status_description or 'no description'}")
    except GatewayError as exc:
        return Check(name, False, f"{project.api_base_url} did not answer ({exc}): check "
                     "api_base_url and the network")
    return Check(name, True, f"{project.api_base_url} accepts our signature "
                 f"({len(accounts)} balance account(s))")


async def callback_checks(settings: Settings, http: aiohttp.ClientSession) -> list[Check]:
    base = settings.ingest.public_url.rstrip("/")
    if not base:
        return [Check("callback URLs", False, "ingest.public_url is not set: set it to the "
                      "address HighHelp is given, so the three URLs can be probed")]
    checks = []
    for route, path in CALLBACK_PATHS.items():
        url = base + path
        try:
            async with http.post(url, headers={PROBE_HEADER: "doctor"},
                                 timeout=aiohttp.ClientTimeout(total=10)) as response:
                answer = await response.read()
                ok = response.status == 200 and b'"probe"' in answer
                detail = (f"{url} reaches the ingest" if ok else
                          f"{url} answered {response.status}, not the ingest's probe answer: "
                          "check the proxy's route to the ingest")
        except (TimeoutError, aiohttp.ClientError) as exc:
            ok, detail = False, f"{url}: no answer ({type(exc).__name__})"
        checks.append(Check(f"{route} URL", ok, detail))
    return checks


async def run(settings: Settings) -> list[Check]:
    checks = config_checks(settings)
    checks += await broker_checks(settings)
    checks += await store_checks(settings)
    async with aiohttp.ClientSession() as http:
        for project in settings.projects.values():
            checks.append(await api_check(project, http))
        checks += await callback_checks(settings, http)
    return checks
