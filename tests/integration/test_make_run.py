"""`make run` (deploy/run-local.sh) as a new user meets it: ingest, worker and the sandbox
playing HighHelp come up on a fresh dev kit folder, payments the sandbox makes reach the orders,
and Ctrl-C stops all three while the local store keeps running."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from shared import mongo
from shared.settings import Settings
from tests.conftest import _port_open, wait_until
from tests.logcapture import LOG_LINES
from tests.processes import answers, free_port

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[2]


async def test_make_run_serves_the_whole_loop_offline_and_stops_on_ctrl_c(
    settings: Settings, tmp_path: Path, http: aiohttp.ClientSession,
) -> None:
    ports = {name: free_port() for name in ("ingest", "worker", "sandbox")}
    env = {**os.environ, "HH_RUN_DIR": str(tmp_path / "run"),
           "HH_INGEST_PORT": str(ports["ingest"]), "HH_WORKER_PORT": str(ports["worker"]),
           "HH_SANDBOX_PORT": str(ports["sandbox"]), "HH_MONGO_DB": settings.mongo.database}
    env.pop("HH_CONFIG", None)
    run = await asyncio.create_subprocess_exec(
        "bash", str(ROOT / "deploy" / "run-local.sh"), env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output = asyncio.create_task(run.communicate())
    try:
        ingest, worker = (f"http://127.0.0.1:{ports[n]}" for n in ("ingest", "worker"))
        sandbox = f"http://127.0.0.1:{ports['sandbox']}"
        for url, what in ((f"{ingest}/readyz", "ingest"), (f"{worker}/healthz", "worker"),
                          (f"{sandbox}/sandbox/truth", "the sandbox at api_base_url")):
            await wait_until(answers(http, url, 200), 60, f"{what} up")

        traffic = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sandbox", "traffic", "--count", "3", "--rate", "20",
            "--callback-base-url", ingest,
            env={**env, "HH_CONFIG": str(tmp_path / "run" / "config.toml")},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        assert await asyncio.wait_for(traffic.wait(), 60) == 0
        async with http.post(f"{sandbox}/sandbox/drain") as response:
            assert response.status == 200
        async with http.get(f"{sandbox}/sandbox/truth") as response:
            truth = {row["payment_id"]: row["status"]
                     for row in (await response.json())["payments"]}
        assert len(truth) == 3

        client = mongo.client(settings.mongo)
        orders = client[settings.mongo.database]["orders"]

        async def as_the_gateway_says() -> bool:
            views = {v["payment_id"]: v["status"] async for v in orders.find({})}
            return views == truth
        try:
            await wait_until(as_the_gateway_says, 60, "the orders to match the sandbox")
        finally:
            await client.close()

        run.send_signal(signal.SIGINT)  # what Ctrl-C in make's terminal sends the script
        await asyncio.wait_for(asyncio.shield(output), 60)
        for name, port in ports.items():
            assert not _port_open(port), f"{name} still listening after Ctrl-C"
        assert _port_open(27017)  # the local store was not taken down with it
    finally:
        if run.returncode is None:
            run.kill()
        out, _ = await output
        LOG_LINES.extend(out.decode(errors="replace").splitlines())
