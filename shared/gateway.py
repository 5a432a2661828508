"""The HighHelp API client (merchant -> gateway): every request signed with the x-access-*
headers; reads retried by tenacity, payment creation never retried once it may have arrived."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from shared.alert import Alert, InvalidAlert, parse_alert
from shared.registration import Registration
from shared.settings import ProjectSettings
from shared.wire import (
    BALANCE_PATH,
    FLOWS,
    POLLABLE_PRODUCTS,
    PRODUCTS,
    WIDGET,
    callback_urls,
    compact_json,
    create_path,
    info_path,
    request_headers,
)

log = structlog.get_logger("gateway")


class GatewayError(Exception):
    """A call to HighHelp failed. Messages carry status codes and descriptions, never keys."""


class GatewayUnavailable(GatewayError):
    """Network error, timeout, 429 or 5xx, still so after the retries allowed."""


class NotPollable(GatewayError):
    """The spec gives no status endpoint for this kind of payment (the widget's)."""


class GatewayRejected(GatewayError):
    """A 4xx (other than 429) or an answer we cannot read: retrying would not help."""

    def __init__(self, http_status: int, status_description: str | None) -> None:
        described = status_description or 'no description'
        super().__init__(f"gateway answered {http_status}: {described}")
        self.http_status = http_status
        self.status_description = status_description


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    total_s: float = 30.0
    base_s: float = 0.2
    max_wait_s: float = 5.0
    request_timeout_s: float = 10.0


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _description(payload: object) -> str | None:
    if isinstance(payload, dict):
        for holder in (payload, payload.get("status")):
            if isinstance(holder, dict) and isinstance(holder.get("status_description"), str):
                return str(holder["status_description"])
    return None


@dataclass(frozen=True)
class Created:
    status: str
    sub_status: str | None
    request_id: str | None
    payment_id: str
    raw: dict[str, Any]


Register = Callable[[Registration], Awaitable[None]]


class GatewayClient:
    """One per process and cash register; share the aiohttp session between them."""

    def __init__(
        self,
        project: ProjectSettings,
        session: aiohttp.ClientSession,
        policy: RetryPolicy = RetryPolicy(),
        register: Register | None = None,
    ) -> None:
        if project.request_key is None:
            raise GatewayError(f"project {project.project_id} has no request signing key")
        self.project = project
        self._key = project.request_key
        self._session = session
        self._policy = policy
        self._register = register

    # --- reads: retried ---------------------------------------------------------------------
    async def info(self, product: str, flow: str, payment_id: str) -> Alert:
        """The payment's current status, read like an alert ([our choice] of request body)."""
        if product not in POLLABLE_PRODUCTS and product in PRODUCTS:
            raise NotPollable(f"no status endpoint for {product} payments")
        path = info_path(_check(product, POLLABLE_PRODUCTS), _check(flow, FLOWS))
        payload = await self._read(path, self._general(payment_id=payment_id))
        try:
            return parse_alert(_with_project(payload, self.project.project_id))
        except InvalidAlert as exc:
            raise GatewayRejected(200, f"unreadable info answer ({exc.reason})") from None

    async def balance(self) -> list[dict[str, Any]]:
        payload = await self._read(BALANCE_PATH, self._general())
        balance = payload.get("balance") if isinstance(payload, dict) else None
        if not isinstance(balance, list):
            raise GatewayRejected(200, "unreadable balance answer")
        return balance

    # --- creation: never retried after the request may have reached the gateway -------------
    async def create_payment(
        self, product: str, flow: str, payment_id: str, amount: int, currency: str,
        method: str, callback_base_url: str, extra: dict[str, Any] | None = None,
    ) -> Created:
        """Create a p2p/ecom payin or payout, or (product "widget") a widget payin, and
        register the order so it can be polled even if no alert ever comes."""
        if product == WIDGET:
            flow = "payin"
        path = create_path(_check(product, PRODUCTS), _check(flow, FLOWS))
        body = {
            "general": {"project_id": self.project.project_id, "payment_id": payment_id,
                        **callback_urls(callback_base_url)},
            "payment": {"method": method, "amount": amount, "currency": currency},
            **(extra or {}),
        }
        if self._register is not None:
            # Registered first: if the call then fails halfway, polling finds out what happened.
            await self._register(Registration(
                self.project.project_id, payment_id, product, flow, amount, currency))
        try:
            payload = await self._post_once(path, body)
        except _Retryable as exc:
            raise GatewayUnavailable(f"create {path}: {exc}") from None
        status = payload.get("status") if isinstance(payload, dict) else None
        status_block = status if isinstance(status, dict) else payload
        if not isinstance(status_block, dict) or not isinstance(status_block.get("status"), str):
            raise GatewayRejected(200, "unreadable create answer")
        request_id = payload.get("request_id") or (payload.get("general") or {}).get("request_id")
        return Created(str(status_block["status"]), status_block.get("sub_status"),
                       request_id, payment_id, payload)

    # --- transport --------------------------------------------------------------------------
    def _general(self, **fields: str) -> dict[str, Any]:
        return {"general": {"project_id": self.project.project_id, **fields}}

    async def _read(self, path: str, body: dict[str, Any]) -> Any:
        policy = self._policy
        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.attempts) | stop_after_delay(policy.total_s),
            wait=_wait(policy),
            retry=retry_if_exception_type(_Retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._post_once(path, body)
        except _Retryable as exc:
            raise GatewayUnavailable(f"{path}: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _post_once(self, path: str, body: dict[str, Any]) -> Any:
        url = self.project.api_base_url.rstrip("/") + path
        data = compact_json(body)
        headers = request_headers(self.project.project_id, self._key, body, int(time.time()))
        try:
            async with self._session.post(
                url, data=data, headers=headers,
                timeout=aiohttp.ClientTimeout(total=self._policy.request_timeout_s),
            ) as response:
                text = await response.text()
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("gateway_call_failed", path=path, error=type(exc).__name__)
            raise _Retryable(type(exc).__name__) from None
        try:
            payload = json.loads(text) if text else None
        except ValueError:
            payload = None
        if status == 429 or status >= 500:
            log.warning("gateway_call_failed", path=path, http_status=status)
            raise _Retryable(f"HTTP {status}", _retry_after(retry_after))
        if status >= 300:
            log.warning("gateway_call_rejected", path=path, http_status=status)
            raise GatewayRejected(status, _description(payload))
        if payload is None:
            raise GatewayRejected(status, "answer is not JSON")
        return payload


def _wait(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    backoff = wait_random_exponential(multiplier=policy.base_s, max=policy.max_wait_s)

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _Retryable) and error.retry_after_s is not None:
            return min(error.retry_after_s, policy.max_wait_s * 4)
        return float(backoff(state))

    return wait


def _check(value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise GatewayError(f"unknown product or flow {value!r}")
    return value


def _with_project(payload: Any, project_id: str) -> Any:
    """An /info answer may omit the project id; it is ours, so add it for parsing."""
    if isinstance(payload, dict) and "project_id" not in payload:
        general = payload.get("general")
        if not (isinstance(general, dict) and general.get("project_id")):
            return {**payload, "project_id": project_id}
    return payload
