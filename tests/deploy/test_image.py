"""The image, run as containers (podman, host network) against the local services: a signed
alert becomes an event, the admin tool works inside, SIGTERM drains to exit 0 losing nothing,
and nothing runs as root."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shared.mongo import Collections
from shared.settings import Settings
from shared.wire import CALLBACK_PATHS
from tests.conftest import EventTap, wait_until
from tests.containers import Container
from tests.keys import PROJECT_ID, alert_body, gateway_rsa, signed_headers
from tests.processes import answers, free_port
from worker.app import Worker

pytestmark = [pytest.mark.services, pytest.mark.deploy]


def uid_of(pid: int) -> int:
    """The real uid of a process on this host, from /proc (not what the image claims)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


async def post_alert(http: aiohttp.ClientSession, base: str, payment_id: str,
                     status: str = "success", sub_status: str | None = None) -> int:
    body = alert_body(payment_id, status, sub_status)
    async with http.post(f"{base}{CALLBACK_PATHS['callback']}", data=body,
                         headers=signed_headers(body, gateway_rsa())) as response:
        return response.status


async def test_image_serves_an_alert_to_an_event_and_stops_cleanly_on_sigterm(
    container_config: Callable[..., Path], settings: Settings, events: EventTap,
    db: Collections, amqp: Any,
) -> None:
    ingest_port, worker_port = free_port(), free_port()
    config = container_config(ingest_port, worker_port)
    ingest = await Container.run(["hh-ingest"], config)
    worker = await Container.run(["hh-worker"], config)
    base = f"http://127.0.0.1:{ingest_port}"
    async with aiohttp.ClientSession() as http:
        await wait_until(answers(http, f"{base}/readyz", 200), 60, "ingest container ready")
        await wait_until(answers(http, f"http://127.0.0.1:{worker_port}/healthz", 200), 60,
                         "worker container consuming")

        # Neither process runs as root: their real uid on the host.
        assert uid_of(await ingest.host_pid()) == 10001
        assert uid_of(await worker.host_pid()) == 10001

        assert await post_alert(http, base, "img-1") == 200
        [event] = await events.wait(1, timeout=30)
        assert (event["_routing_key"], event["payment_id"]) == ("order.success", "img-1")

        # The operator's tools work inside the image, with the mounted config.
        code, out = await worker.exec("hh-admin", "orders", "show", PROJECT_ID, "img-1")
        assert code == 0, out
        assert "img-1" in out and "success" in out
        code, out = await worker.exec("hh-admin", "dlq", "list")
        assert code == 0, out
        # Every console script the image installs has its package (and the console its pages).
        for script in ("hh-ingest", "hh-worker", "hh-admin", "hh-sandbox", "hh-console"):
            code, out = await worker.exec(script, "--help")
            assert code == 0 and "usage" in out, (script, out)
        code, out = await worker.exec("python3", "-c", "import importlib.resources as r; print("
                                      "r.files('console').joinpath('templates/payment.html')"
                                      ".is_file())")
        assert out.strip() == "True", out

        # A burst, then SIGTERM to both while the worker is busy with it.
        burst = [f"img-burst-{n}" for n in range(40)]
        answers_ = await asyncio.gather(*(post_alert(http, base, p, "processing", "requisites")
                                          for p in burst))
        assert answers_ == [200] * len(burst)
    await ingest.signal("TERM")
    await worker.signal("TERM")
    assert await ingest.wait() == 0, await ingest.logs()
    assert await worker.wait() == 0, await worker.logs()
    assert '"worker_stopped"' in await worker.logs()

    # Lost nothing: what the stopped worker did not take is still queued, and a new worker
    # finishes it.
    replacement = Worker(settings)
    await replacement.start(http=False)
    try:
        async def all_orders() -> bool:
            ids = [f"{PROJECT_ID}:{p}" for p in burst]
            return await db.orders.count_documents({"_id": {"$in": ids}}) == len(burst)
        await wait_until(all_orders, 60, "every accepted alert's order")
    finally:
        await replacement.stop()
