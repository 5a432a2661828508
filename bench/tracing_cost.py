"""What tracing costs: the ingest's closed-loop rate and latency, and the worker's drain rate,
with tracing off (no OTEL_* variable: nothing imported) and on (OTLP over HTTP to a local
collector that accepts and counts the export requests), alternating runs.

    python -m bench.tracing_cost        (part of make bench; HH_CONFIG as for make bench)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
from aiohttp import web

from bench import stages
from bench.loadgen import closed_loop, http_sender, signed_requests
from bench.processes import Service

COLLECTOR_PORT = 18083


class Collector:
    """A stand-in OTLP/HTTP collector: answers every export 200 and counts the bytes."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post("/v1/traces", self._export)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", COLLECTOR_PORT).start()

    async def _export(self, request: web.Request) -> web.Response:
        self.bytes += len(await request.read())
        self.requests += 1
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def traced_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{COLLECTOR_PORT}",
            "OTEL_SERVICE_NAME": "hh-bench"}


async def measure(env: dict[str, str], folder: Path, amqp_url: str, fresh: Any, *,
                  requests: int, concurrency: int, alerts: int, rounds: int,
                  ingest_port: int, worker_port: int) -> dict[str, Any]:
    """Median of `rounds` alternating off/on runs of each."""
    material = (folder / "gateway_callback_hmac.txt").read_bytes().strip()
    collector = Collector()
    await collector.start()
    runs: dict[str, dict[str, list[float]]] = {
        mode: {"ingest_rps": [], "ingest_p50_ms": [], "ingest_p99_ms": [], "worker_rps": []}
        for mode in ("off", "on")}
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            for round_ in range(rounds):
                for mode in ("off", "on"):
                    mode_env = traced_env(env) if mode == "on" else env
                    await fresh()
                    ingest = await Service.start(
                        "ingest", [], mode_env, f"http://127.0.0.1:{ingest_port}/readyz", folder)
                    try:
                        send = http_sender(http, f"http://127.0.0.1:{ingest_port}")
                        await closed_loop("warm-up", send, signed_requests(
                            material, "hmac", 300, f"tw-{mode}-{round_}"), concurrency)
                        result = await closed_loop(f"ingest tracing {mode}", send, signed_requests(
                            material, "hmac", requests, f"t-{mode}-{round_}"), concurrency)
                    finally:
                        ingest.stop()
                    summary: dict[str, Any] = result.summary()
                    runs[mode]["ingest_rps"].append(summary["throughput_rps"])
                    runs[mode]["ingest_p50_ms"].append(summary["latency_ms"]["p50"])
                    runs[mode]["ingest_p99_ms"].append(summary["latency_ms"]["p99"])

                    await fresh()
                    async with await aio_pika.connect_robust(amqp_url) as connection:
                        channel = await connection.channel(publisher_confirms=True)
                        await stages.events_queue(channel)
                        await stages.prefill(channel, [f"tdrain-{mode}-{round_}-{i}"
                                                       for i in range(alerts)])
                    worker = await Service.start(
                        "worker", [], mode_env, f"http://127.0.0.1:{worker_port}/readyz", folder)
                    try:
                        drained = await stages.drain_rate(
                            f"http://127.0.0.1:{worker_port}/metrics", alerts)
                    finally:
                        worker.stop()
                    runs[mode]["worker_rps"].append(drained["rate"])
                    print(f"  tracing {mode:<3} round {round_ + 1}: ingest "
                          f"{summary['throughput_rps']:.0f}/s (p99 "
                          f"{summary['latency_ms']['p99']:.1f} ms), worker {drained['rate']:.0f}/s",
                          flush=True)
    finally:
        await collector.stop()
    medians = {mode: {k: round(statistics.median(v), 2) for k, v in values.items()}
               for mode, values in runs.items()}
    return {
        "rounds": rounds, "requests": requests, "alerts": alerts, "runs": runs,
        "median": medians,
        "ingest_on_vs_off": round(medians["on"]["ingest_rps"] / medians["off"]["ingest_rps"], 3),
        "worker_on_vs_off": round(medians["on"]["worker_rps"] / medians["off"]["worker_rps"], 3),
        "exports": collector.requests, "exported_bytes": collector.bytes,
    }


def main() -> None:
    from bench.__main__ import INGEST_PORT, WORKER_PORT, Bench

    parser = argparse.ArgumentParser(prog="python -m bench.tracing_cost")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--alerts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = Path(".bench")
    if not (folder / "config.toml").exists():
        subprocess.run([sys.executable, "deploy/devkit.py", "init", str(folder)], check=True)  # noqa: S603
    bench = Bench(argparse.Namespace(), folder)
    result = asyncio.run(measure(
        bench.env, folder, bench.settings.amqp.url, bench.fresh, requests=args.requests,
        concurrency=args.concurrency, alerts=args.alerts, rounds=args.rounds,
        ingest_port=INGEST_PORT, worker_port=WORKER_PORT))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
