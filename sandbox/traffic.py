"""Traffic for demos, tests and benchmarks: N payments created through the merchant's own
API client (so they are registered too), open-loop at a set rate."""

from __future__ import annotations

import asyncio
import time
import uuid

import structlog

from shared.gateway import Created, GatewayClient, GatewayError

log = structlog.get_logger("sandbox.traffic")


async def generate(
    client: GatewayClient, count: int, rate_per_s: float, callback_base_url: str,
    prefix: str | None = None, scenario: str | None = None,
) -> list[Created]:
    prefix = prefix or f"sbx-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()

    async def one(n: int) -> Created | None:
        await asyncio.sleep(max(0.0, started + n / rate_per_s - time.monotonic()))
        try:
            return await client.create_payment(
                "p2p", "payin", f"{prefix}-{n}", 100_00 + n, "RUB", "card-p2p", callback_base_url,
                extra={"sandbox": {"scenario": scenario}} if scenario else None)
        except GatewayError as exc:
            log.warning("traffic_create_failed", n=n, error=str(exc))
            return None

    results = await asyncio.gather(*(one(n) for n in range(count)))
    return [r for r in results if r is not None]
