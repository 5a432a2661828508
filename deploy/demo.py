"""`make demo`: ingest and worker (real processes), the sandbox playing HighHelp with
duplicates, reordering and drops, a few hundred payments; then hh-callbacks' order states
beside the sandbox's ground truth.

    python deploy/demo.py [--payments 300] [--rate 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import devkit  # deploy/devkit.py, beside this script
from aiohttp import web

from sandbox.app import SANDBOX, SandboxConfig, create_app
from sandbox.scenarios import Chaos
from sandbox.traffic import generate
from shared import logs, mongo
from shared.broker import Broker
from shared.gateway import GatewayClient
from shared.registrar import publish_registration
from shared.settings import load_settings
from shared.signature import load_signing_key

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / ".run"
PORTS = {"ingest": 18080, "worker": 18081, "sandbox": 18090}


def demo_config(database: str) -> Path:
    base = (RUN / "config.toml").read_text()
    text = base.replace('database = "hh_callbacks"', f'database = "{database}"')
    text = text.replace("port = 8080", f"port = {PORTS['ingest']}")
    text = text.replace("port = 8081", f"port = {PORTS['worker']}")
    text = text.replace('api_base_url = "http://127.0.0.1:8090"',
                        f'api_base_url = "http://127.0.0.1:{PORTS["sandbox"]}"')
    text = text.replace('format = "console"', 'format = "json"\nlevel = "warning"')
    # The local MongoDB-compatible server prefers few concurrent writers; polls start 3 s
    # after an order's alerts stop, so dropped alerts are settled within the demo.
    text = text.replace("[mongo]", "[poller]\nstale_after_s = 3.0\n"
                                   "ladder_s = [2.0, 5.0, 10.0]\n\n[mongo]")
    text = text.replace("[amqp]\n", "[amqp]\nprefetch = 4\n")
    path = RUN / "demo.toml"
    path.write_text(text)
    return path


async def main(payments: int, rate: float) -> int:
    devkit.init(RUN)
    database = f"hh_demo_{uuid.uuid4().hex[:6]}"
    config = demo_config(database)
    os.environ["HH_CONFIG"] = str(config)
    settings = load_settings(config)
    logs.configure("console", "warning")
    bin_dir = Path(sys.executable).parent
    procs = [await asyncio.create_subprocess_exec(
        bin_dir / name, env=os.environ.copy(), stdout=asyncio.subprocess.DEVNULL)
        for name in ("hh-ingest", "hh-worker")]
    project = next(iter(settings.projects.values()))
    merchant = load_signing_key((RUN / "merchant_private.pem").read_bytes(), "rsa")
    sandbox_config = SandboxConfig(
        {project.project_id: (merchant.verify_key(),)},
        load_signing_key((RUN / "gateway_callback_private.pem").read_bytes(), "rsa"),
        chaos=Chaos(duplicate_rate=0.3, reorder_rate=0.2, drop_rate=0.05, step_delay_s=0.2))
    app = create_app(sandbox_config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", PORTS["sandbox"]).start()
    broker = Broker.for_settings(settings)
    client = mongo.client(settings.mongo)
    db = mongo.Collections.of(client[settings.mongo.database])
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_ready(session)
            await broker.connect()
            gateway = GatewayClient(project, session,
                                    register=lambda reg: publish_registration(broker, reg))
            started = time.monotonic()
            print(f"creating {payments} payments at {rate}/s through the sandbox ...")
            created = await generate(gateway, payments, rate,
                                     f"http://127.0.0.1:{PORTS['ingest']}", prefix="demo")
            await app[SANDBOX].drain()
            print("alerts sent; waiting for every order to settle ...")
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                final = await db.orders.count_documents({"final": True})
                if final >= len(created):
                    break
                print(f"  {final}/{len(created)} final", flush=True)
                await asyncio.sleep(5)
            wall = time.monotonic() - started
            return await _report(app[SANDBOX].truth(), db, wall)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 30)
        await runner.cleanup()
        await broker.close()
        await client.drop_database(database)
        await client.close()


async def _wait_ready(session: aiohttp.ClientSession) -> None:
    for _ in range(120):
        try:
            async with session.get(f"http://127.0.0.1:{PORTS['ingest']}/readyz") as r1, \
                    session.get(f"http://127.0.0.1:{PORTS['worker']}/readyz") as r2:
                if r1.status == r2.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.5)
    raise SystemExit("ingest or worker did not become ready")


async def _report(truth: dict, db: mongo.Collections, wall: float) -> int:  # type: ignore[type-arg]
    rows = truth["payments"]
    outcome: Counter[str] = Counter()
    for row in rows:
        view = await db.orders.find_one({"_id": f"{row['project_id']}:{row['payment_id']}"})
        got = view["status"] if view else None
        outcome["match" if got == row["status"] else "mismatch"] += 1
    t = truth["totals"]
    transitions = await db.transitions.count_documents({})
    polls = await db.polls.count_documents({})
    lines = [
        ("payments", t["payments"]), ("alerts delivered", t["alerts_sent"]),
        ("duplicates sent (absorbed)", t["duplicates_sent"]),
        ("alerts dropped", t["alerts_dropped"]), ("polls made", polls),
        ("/info calls", t["info_calls"]), ("transitions", transitions),
        ("final state matches", outcome["match"]), ("mismatches", outcome["mismatch"]),
        ("wall time, s", f"{wall:.1f}"),
    ]
    by_status = Counter(row["status"] for row in rows)
    print("\n| measure | value |\n|---|---|")
    for name, value in lines:
        print(f"| {name} | {value} |")
    print("\nsandbox final statuses:", dict(by_status))
    return 0 if outcome["mismatch"] == 0 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payments", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0)
    options = parser.parse_args()
    sys.exit(asyncio.run(main(options.payments, options.rate)))
