"""The sandbox gateway: HighHelp's routes, request signature checks, payments driven through
scenarios, and signed alerts delivered with the configured chaos."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from sandbox.scenarios import (
    DEFAULT_MIX,
    SCENARIOS,
    Chaos,
    Delivery,
    Step,
    pick_scenario,
    plan_deliveries,
    route_of,
)
from shared.alert import InvalidAlert, decode_body, is_final
from shared.signature import SigningKey, VerifyKey, find_verifying_key
from shared.wire import (
    BALANCE_PATH,
    CALLBACK_URL_FIELDS,
    MERCHANT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WIDGET,
    WIDGET_CREATE_PATH,
    alert_headers,
    alert_value,
    compact_json,
    create_path,
    info_path,
)

log = structlog.get_logger("sandbox")


@dataclass(frozen=True)
class SandboxConfig:
    merchant_keys: Mapping[str, tuple[VerifyKey, ...]]  # project_id -> keys that sign requests
    callback_key: SigningKey  # signs alerts, as HighHelp's callback key
    chaos: Chaos = field(default_factory=Chaos)
    mix: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_MIX))
    seed: int = 1
    delivery_attempts: int = 8
    timestamp_tolerance_s: int = 300


@dataclass
class Payment:
    project_id: str
    payment_id: str
    request_id: str
    product: str
    flow: str
    amount: int
    currency: str
    scenario: str
    steps: tuple[Step, ...]
    urls: dict[str, str]
    reached: int = 0
    alerts_sent: int = 0
    alerts_dropped: int = 0
    duplicates_sent: int = 0
    undelivered: int = 0

    @property
    def current(self) -> Step:
        return self.steps[self.reached]

    def alert(self, step: int) -> dict[str, Any]:
        status, sub_status = self.steps[step]
        return alert_value(
            self.project_id, self.payment_id, self.request_id, status, sub_status,
            status_description="Declined by the sandbox" if status == "decline" else None,
            payment={"method": "card-p2p", "amount": self.amount, "currency": self.currency,
                     "type": self.flow})


class Sandbox:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.chaos = config.chaos
        self.rng = random.Random(config.seed)
        self.payments: dict[tuple[str, str], Payment] = {}
        self.forced_info: deque[int] = deque()
        self.info_calls = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.session: aiohttp.ClientSession | None = None

    # --- requests from the merchant ---------------------------------------------------------
    def verify(self, headers: Mapping[str, str], body: bytes) -> tuple[str, dict[str, Any]]:
        """The project and JSON of a correctly signed merchant request; raises HTTPException."""
        try:
            _text, value = decode_body(body)
        except InvalidAlert as exc:
            raise web.HTTPBadRequest(text=json.dumps({"status_description": exc.reason})) from None
        general = value.get("general") if isinstance(value, dict) else None
        project_id = headers.get(MERCHANT_ID_HEADER, "")
        if not isinstance(general, dict) or general.get("project_id") != project_id:
            raise web.HTTPBadRequest(text='{"status_description": "project_id mismatch"}')
        keys = self.config.merchant_keys.get(project_id, ())
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        fresh = timestamp.isdigit() and abs(int(timestamp) - time.time()) <= (
            self.config.timestamp_tolerance_s)
        signature = headers.get(SIGNATURE_HEADER, "")
        if not keys or not fresh or not find_verifying_key(keys, value, timestamp, signature):
            raise web.HTTPUnauthorized(text='{"status_description": "unauthorized"}')
        assert isinstance(value, dict)
        return project_id, value

    def create(self, project_id: str, product: str, flow: str, body: dict[str, Any]) -> Payment:
        general, payment = body["general"], body.get("payment") or {}
        payment_id = str(general.get("payment_id") or "")
        if not payment_id or (project_id, payment_id) in self.payments:
            raise web.HTTPBadRequest(text='{"status_description": "payment_id missing or used"}')
        wanted = (body.get("sandbox") or {}).get("scenario")
        scenario = wanted if wanted in SCENARIOS else pick_scenario(self.rng, dict(self.config.mix))
        created = Payment(
            project_id, payment_id, str(uuid.uuid4()), product, flow,
            int(payment.get("amount") or 0), str(payment.get("currency") or "RUB"), scenario,
            SCENARIOS[scenario],
            {route: str(general[name])
             for route, name in CALLBACK_URL_FIELDS.items() if general.get(name)},
        )
        self.payments[(project_id, payment_id)] = created
        self._spawn(self._drive(created))
        return created

    def info_answer(self, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self.info_calls += 1
        if self.forced_info:
            forced = self.forced_info.popleft()
            if forced != 200:
                raise _http(forced)
        elif self.rng.random() < self.chaos.info_failure_rate:
            raise _http(503)
        payment = self.payments.get((project_id, str(body["general"].get("payment_id"))))
        if payment is None:
            raise web.HTTPNotFound(text='{"status_description": "no such payment"}')
        status, sub_status = payment.current
        return {"general": {"project_id": project_id, "payment_id": payment.payment_id,
                            "request_id": payment.request_id},
                "status": {"status": status, "sub_status": sub_status,
                           "status_description": None}}

    # --- driving payments and delivering alerts ---------------------------------------------
    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _drive(self, payment: Payment) -> None:
        plan = {d.step: d for d in plan_deliveries(len(payment.steps), self.chaos, self.rng)}
        for step in range(len(payment.steps)):
            if step:
                await asyncio.sleep(self.chaos.step_delay_s)
            payment.reached = step
            delivery = plan.get(step)
            if delivery is None:
                payment.alerts_dropped += 1
                continue
            # Signed when the status changed: a delayed delivery keeps its original time.
            self._spawn(self._deliver(payment, delivery, int(time.time())))

    async def _deliver(self, payment: Payment, delivery: Delivery, signed_at: int) -> None:
        await asyncio.sleep(delivery.delay_s)
        status = payment.steps[delivery.step][0]
        url = payment.urls.get(route_of(status)) or payment.urls.get("callback")
        if url is None:
            return
        value = payment.alert(delivery.step)
        body, headers = compact_json(value), alert_headers(value, self.config.callback_key,
                                                           signed_at)
        for copy in range(delivery.copies):
            if await self._send(url, body, headers):
                payment.alerts_sent += 1
                payment.duplicates_sent += copy
            else:
                payment.undelivered += 1

    async def _send(self, url: str, body: bytes, headers: dict[str, str]) -> bool:
        """POST until a 2xx, with backoff, as HighHelp retries (its schedule is unpublished)."""
        assert self.session is not None
        delay = 0.1
        for _ in range(self.config.delivery_attempts):
            try:
                async with self.session.post(url, data=body, headers=headers,
                                             timeout=aiohttp.ClientTimeout(total=10)) as response:
                    if 200 <= response.status < 300:
                        return True
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        return False

    async def drain(self) -> None:
        """Wait until every payment reached its end and every alert was delivered or given up."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    def truth(self) -> dict[str, Any]:
        rows = [
            {"project_id": p.project_id, "payment_id": p.payment_id, "scenario": p.scenario,
             "status": p.current[0], "sub_status": p.current[1], "final": is_final(p.current[0]),
             "alerts_sent": p.alerts_sent, "alerts_dropped": p.alerts_dropped,
             "duplicates_sent": p.duplicates_sent, "undelivered": p.undelivered}
            for p in self.payments.values()
        ]
        totals = {k: sum(getattr(p, k) for p in self.payments.values()) for k in
                  ("alerts_sent", "alerts_dropped", "duplicates_sent", "undelivered")}
        return {"payments": rows, "totals": {**totals, "payments": len(rows),
                                             "info_calls": self.info_calls},
                "outstanding_tasks": len(self.tasks)}


def _http(status: int) -> web.HTTPException:
    error = web.HTTPException(text=json.dumps({"status_description": f"sandbox {status}"}))
    error.set_status(status)
    return error


SANDBOX = web.AppKey("sandbox", Sandbox)


async def _handle_create(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX]
    project_id, body = sandbox.verify(request.headers, await request.read())
    product = request.match_info.get("product", WIDGET)
    flow = request.match_info.get("flow", "payin")
    payment = sandbox.create(project_id, product, flow, body)
    status, sub_status = payment.current
    return web.json_response({"status": status, "sub_status": sub_status,
                              "request_id": payment.request_id, "payment_id": payment.payment_id})


async def _handle_info(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX]
    project_id, body = sandbox.verify(request.headers, await request.read())
    return web.json_response(sandbox.info_answer(project_id, body))


async def _handle_balance(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX]
    sandbox.verify(request.headers, await request.read())
    return web.json_response({"balance": [{"currency": "RUB", "amount": 1343800,
                                           "locked_amount": 1755400}]})


async def _handle_truth(request: web.Request) -> web.Response:
    return web.json_response(request.app[SANDBOX].truth())


async def _handle_drain(request: web.Request) -> web.Response:
    await request.app[SANDBOX].drain()
    return web.json_response(request.app[SANDBOX].truth()["totals"])


async def _handle_control(request: web.Request) -> web.Response:
    """Test and demo knobs: {"info_responses": [503, 400, ...], "chaos": {...}}."""
    sandbox = request.app[SANDBOX]
    control = await request.json()
    sandbox.forced_info.extend(int(code) for code in control.get("info_responses", []))
    if "chaos" in control:
        sandbox.chaos = replace(sandbox.chaos, **control["chaos"])
    return web.json_response({"chaos": asdict(sandbox.chaos),
                              "forced_info": list(sandbox.forced_info)})


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    sandbox = app[SANDBOX]
    sandbox.session = aiohttp.ClientSession()
    yield
    for task in list(sandbox.tasks):
        task.cancel()
    await asyncio.gather(*list(sandbox.tasks), return_exceptions=True)
    await sandbox.session.close()


def create_app(config: SandboxConfig) -> web.Application:
    app = web.Application()
    app[SANDBOX] = Sandbox(config)
    app.cleanup_ctx.append(_session_ctx)
    # The path templates come from the same functions the client uses.
    product, flow = "{product:p2p|ecom}", "{flow:payin|payout}"
    app.router.add_post(create_path(product, flow), _handle_create)
    app.router.add_post(info_path(product, flow), _handle_info)
    app.router.add_post(WIDGET_CREATE_PATH, _handle_create)
    app.router.add_post(BALANCE_PATH, _handle_balance)
    app.router.add_get("/sandbox/truth", _handle_truth)
    app.router.add_post("/sandbox/drain", _handle_drain)
    app.router.add_post("/sandbox/control", _handle_control)
    return app
