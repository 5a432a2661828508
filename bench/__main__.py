"""`make bench` / `python -m bench`: measure each stage beside its ceilings, in one run on this
machine against the local services, and write docs/benchmarks.{md,json,png}."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp

from bench import ceilings, costs, overload, report, stages, tracing_cost
from bench.loadgen import (
    KeyKind,
    Result,
    closed_loop,
    http_sender,
    open_loop,
    signed_requests,
)
from bench.processes import Service
from shared import logs, mongo
from shared.broker import check_delays
from shared.settings import Settings, load_settings
from shared.topology import DUE_QUEUE, PROCESS_QUEUE, contract_topology, declare, wait_queue

INGEST_PORT, WORKER_PORT, NOOP_PORT = 18080, 18081, 18082
LOAD_SHARES = (0.25, 0.50, 0.80)
KINDS: tuple[KeyKind, ...] = ("rsa", "hmac")


def bench_env(folder: Path) -> dict[str, str]:
    return {"HH_CONFIG": str((folder / "config.toml").resolve()), "HH_MONGO_DB": "hh_bench",
            "HH_INGEST_HOST": "127.0.0.1", "HH_INGEST_PORT": str(INGEST_PORT),
            "HH_WORKER_PORT": str(WORKER_PORT), "HH_LOG_FORMAT": "json", "HH_LOG_LEVEL": "info"}


class Bench:
    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args = args
        self.folder = folder
        self.env = bench_env(folder)
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("HH_")})
        self.settings: Settings = load_settings()
        self.results: dict[str, Any] = {"runs": []}
        self.rss: dict[str, float] = {"ingest": 0.0, "worker": 0.0}

    def record(self, result: Result, **extra: Any) -> dict[str, Any]:
        row = {**result.summary(), **extra}
        self.results["runs"].append(row)
        lat = row["latency_ms"]
        print(f"  {row['name']:<44} {row['throughput_rps']:>8.1f}/s  p50 {lat.get('p50', 0):.2f}"
              f" p99 {lat.get('p99', 0):.2f} ms  {row['statuses']}", flush=True)
        return row

    async def fresh(self, *, last: bool = False) -> None:
        """Empty queues and database between stages: the alerts, the stale checks waiting or
        due (they would reach a later stage, or the next test run), the events queue; `last`:
        the events queue goes (bound to order.#, it would make every event routable)."""
        client: Any = mongo.client(self.settings.mongo)
        await client.drop_database(self.settings.mongo.database)
        await client.close()
        async with await aio_pika.connect_robust(self.settings.amqp.url) as connection:
            channel = await connection.channel()
            delays = check_delays(self.settings.poller)
            declared = await declare(channel, contract_topology(
                self.settings.amqp.delivery_limit, self.settings.worker.retry_delays_s, delays))
            for name in (PROCESS_QUEUE, DUE_QUEUE, *map(wait_queue, delays)):
                await declared.queues[name].purge()
            events = await stages.events_queue(channel)
            await (events.delete(if_unused=False, if_empty=False) if last else events.purge())

    async def http_runs(self) -> None:
        """Ceiling (a), ceilings (b)/(c), and ingest with RSA and HMAC."""
        n, c = self.args.requests, self.args.concurrency
        material: dict[KeyKind, bytes] = {
            "rsa": (self.folder / "gateway_callback_private.pem").read_bytes(),
            "hmac": (self.folder / "gateway_callback_hmac.txt").read_bytes().strip()}
        print("signing requests ...", flush=True)
        warmup = signed_requests(material["hmac"], "hmac", 500, "warm")
        closed = {kind: signed_requests(material[kind], kind, n, f"closed-{kind}")
                  for kind in KINDS}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            noop = await Service.start("bench.noop", [str(NOOP_PORT)], {},
                                       f"http://127.0.0.1:{NOOP_PORT}/readyz", self.folder)
            try:
                send = http_sender(http, f"http://127.0.0.1:{NOOP_PORT}")
                await closed_loop("warm-up", send, warmup, c)
                noop_row = self.record(await closed_loop(
                    "ceiling (a): no-op aiohttp handler", send, closed["rsa"], c), stage="ceiling")
            finally:
                noop.stop()
            publish = await ceilings.publish_ceiling(self.settings.amqp.url, closed["rsa"], c)
            publish_row = self.record(publish, stage="ceiling")
            consume = await ceilings.consume_ceiling(self.settings.amqp.url, n, c)
            self.record(consume, stage="ceiling")
            lower = min(noop_row["throughput_rps"], publish_row["throughput_rps"])
            self.results["lower_ceiling_rps"] = lower

            await self.fresh()
            ingest = await Service.start("ingest", [], self.env,
                                         f"http://127.0.0.1:{INGEST_PORT}/readyz", self.folder)
            try:
                send = http_sender(http, f"http://127.0.0.1:{INGEST_PORT}")
                await closed_loop("warm-up", send, warmup, c)
                for kind in KINDS:
                    row = self.record(await closed_loop(
                        f"ingest {kind.upper()}: closed loop", send, closed[kind], c),
                        stage="ingest", kind=kind)
                    maximum = row["throughput_rps"]
                    self.results[f"ingest_{kind}_max_rps"] = maximum
                    self.results[f"ingest_{kind}_ratio"] = round(maximum / lower, 3)
                    await self.fresh()
                    for share in LOAD_SHARES:
                        rate = maximum * share
                        requests = signed_requests(
                            material[kind], kind, int(rate * self.args.open_seconds),
                            f"open-{kind}-{share}")
                        self.record(await open_loop(
                            f"ingest {kind.upper()}: open loop {share:.0%}", send, requests,
                            rate), stage="ingest", kind=kind, load_share=share)
                        await self.fresh()
                self.rss["ingest"] = ingest.peak_rss_mb()
            finally:
                ingest.stop()

    async def overload_runs(self) -> None:
        """The ingest (HMAC) past its capacity, with vegeta: its closed-loop maximum, then
        open-loop arrival rates at shares of it; the ingest before issue 18 beside today's, in
        the same run. The closed loops alternate between the two, round by round, as the
        issue's own comparison did: this machine's speed drifts by a third within the hour,
        and a round compares two runs a minute apart."""
        vegeta = overload.vegeta_path()
        self.results["overload"] = []
        before = overload.baseline_code(self.folder)
        if before is None:
            print(f"  (no git history: the ingest at {overload.BASELINE_REV} is not measured)")
        variants = [(variant, cwd) for variant, cwd in (("before", before), ("now", None))
                    if variant in self.args.overload_variants
                    and not (variant == "before" and cwd is None)]
        cores = overload.split_cores() if self.args.overload_own_cpu else None
        self.results["overload_cores"] = cores.describe() if cores else None
        print(f"  {cores.describe() if cores else 'all processes share the CPUs'}")
        with overload.others_pinned(cores):
            maxima: dict[str, list[float]] = {variant: [] for variant, _ in variants}
            for round_ in range(1, self.args.overload_rounds + 1):
                for variant, cwd in variants:
                    maxima[variant].append(
                        await self._overload_closed(vegeta, variant, cwd, cores, round_))
            for variant, cwd in variants:
                maximum = statistics.median(maxima[variant])
                self.results[f"overload_{variant}_max_rps"] = maximum
                await self._overload_open(vegeta, variant, cwd, cores, maximum)
        for leftover in self.folder.glob("overload-*.targets"):
            leftover.unlink()

    def _overload_targets(self, variant: str, name: str, count: int) -> Path:
        material = (self.folder / "gateway_callback_hmac.txt").read_bytes().strip()
        requests = signed_requests(material, "hmac", count, f"{variant}-{name}")
        return overload.targets_file(requests, f"http://127.0.0.1:{INGEST_PORT}",
                                     self.folder / f"{name}.targets")

    async def _overload_ingest(self, vegeta: str, variant: str, cwd: Path | None,
                               cores: overload.Cores | None, extra: dict[str, str]) -> Service:
        """The ingest at `variant`'s code, on its CPU, warmed by 2 s of a closed loop."""
        await self.fresh()
        env = self.env if cwd is None else {
            **self.env, "HH_CONFIG": str(overload.baseline_config(Path(self.env["HH_CONFIG"])))}
        ingest = await Service.start("ingest", [], {**env, **extra},
                                     f"http://127.0.0.1:{INGEST_PORT}/readyz", self.folder,
                                     cwd=cwd)
        try:
            if cores is not None:
                overload.pin(ingest.proc.pid, cores.ingest)
            overload.attack(vegeta, self._overload_targets(variant, "overload-warm", 2000),
                            ingest.proc.pid, rate=None, seconds=2)
        except BaseException:
            ingest.stop()
            raise
        await self.fresh()
        return ingest

    async def _overload_closed(self, vegeta: str, variant: str, cwd: Path | None,
                               cores: overload.Cores | None, round_: int) -> float:
        """One round's closed loop: the maximum, returned. The ingest's bound is fixed at the
        ceiling (32 connections stay under it): one that follows latency would refuse part
        of the closed loop, whose connections send again at once, and the loop would measure
        a storm of refusals instead. The open loops run the ingest as configured."""
        ingest = await self._overload_ingest(vegeta, variant, cwd, cores, overload.FIXED_BOUND)
        try:
            targets = self._overload_targets(variant, f"overload-max-{round_}",
                                             self.args.overload_targets)
            closed = overload.attack(vegeta, targets, ingest.proc.pid, rate=None,
                                     seconds=self.args.overload_seconds).row("closed loop", None)
        finally:
            self._overload_stopped(variant, ingest)
        self.results["overload"].append({**closed, "variant": variant, "round": round_})
        self._overload_row(variant, closed, f" {round_}")
        return float(closed["goodput_rps"])

    async def _overload_open(self, vegeta: str, variant: str, cwd: Path | None,
                             cores: overload.Cores | None, maximum: float) -> None:
        seconds = self.args.overload_seconds
        ingest = await self._overload_ingest(vegeta, variant, cwd, cores, {})
        try:
            for share in overload.SHARES:
                await self.fresh()
                rate = maximum * share
                targets = self._overload_targets(variant, f"overload-{share:g}",
                                                 int(rate * seconds) + 1)
                row = overload.attack(vegeta, targets, ingest.proc.pid, rate=rate,
                                      seconds=seconds).row(f"open loop {share:.0%}", rate)
                self.results["overload"].append({**row, "load_share": share, "variant": variant})
                self._overload_row(variant, row)
        finally:
            self._overload_stopped(variant, ingest)
            await self.fresh()

    def _overload_stopped(self, variant: str, ingest: Service) -> None:
        if variant == "now":
            self.rss["ingest"] = max(self.rss["ingest"], ingest.peak_rss_mb())
        ingest.stop()

    @staticmethod
    def _overload_row(variant: str, row: dict[str, Any], suffix: str = "") -> None:
        ok, no = row["accepted_ms"], row["refused_ms"]
        print(f"  ingest HMAC {variant:<6} {row['name'] + suffix:<18} goodput "
              f"{row['goodput_rps']:>7.1f}/s "
              f"accepted {row['accepted_share']:.2%} p50 {ok.get('p50', 0):.1f} p99 "
              f"{ok.get('p99', 0):.1f} max {ok.get('max', 0):.0f} ms; refused {row['refused']}"
              f" p99 {no.get('p99', 0):.1f} ms; {row['cpu_s_per_1000_accepted']:.2f} CPU-s per "
              f"1000, {row['requests_per_cpu_s']:.0f} req/CPU-s {row['statuses']}", flush=True)

    async def worker_runs(self) -> None:
        n = self.args.alerts
        await self.fresh()
        async with await aio_pika.connect_robust(self.settings.amqp.url) as connection:
            channel = await connection.channel(publisher_confirms=True)
            await stages.events_queue(channel)
            metrics = f"http://127.0.0.1:{WORKER_PORT}/metrics"
            distinct = [f"drain-{i}" for i in range(n)]
            mixed = [f"mixed-{i}" for i in range(int(n * 0.7))]
            mixed += mixed[: n - len(mixed)]  # 30 % repeats
            runs = {"new alerts (distinct orders)": distinct,
                    "duplicates only (the same alerts again)": distinct,
                    "30 % duplicates": mixed}
            for name, payment_ids in runs.items():
                await stages.prefill(channel, payment_ids)
                worker = await self._start_worker()
                try:
                    row = await stages.drain_rate(metrics, len(payment_ids))
                finally:
                    self.rss["worker"] = max(self.rss["worker"], worker.peak_rss_mb())
                    worker.stop()
                self._worker_row(name, row)
            await self.fresh()
            await stages.events_queue(channel)
            await stages.prefill(channel, [f"bare-{i}" for i in range(n)])
            self._worker_row("bare baseline (insert, update, publish, ack)",
                             await stages.bare_baseline(self.settings, n))
        rows = {r["name"]: r for r in self.results["worker"]}
        new = rows["new alerts (distinct orders)"]
        bare = rows["bare baseline (insert, update, publish, ack)"]
        dup = rows["duplicates only (the same alerts again)"]
        self.results["worker_ratio"] = round(new["rate"] / bare["rate"], 3)
        self.results["duplicate_cost_ratio"] = round(dup["ms_per_alert"] / new["ms_per_alert"], 3)

    def _worker_row(self, name: str, row: dict[str, Any]) -> None:
        self.results.setdefault("worker", []).append({"name": name, **row})
        print(f"  worker {name:<44} {row['rate']:>8.1f}/s  {row['ms_per_alert']:.2f} ms/alert",
              flush=True)

    async def _start_worker(self) -> Service:
        return await Service.start("worker", [], self.env,
                                   f"http://127.0.0.1:{WORKER_PORT}/readyz", self.folder)

    async def end_to_end(self) -> None:
        await self.fresh()
        rate = self.args.e2e_rate
        material = (self.folder / "gateway_callback_private.pem").read_bytes()
        requests = signed_requests(material, "rsa", int(rate * self.args.open_seconds), "e2e")
        worker = await self._start_worker()
        ingest = await Service.start("ingest", [], self.env,
                                     f"http://127.0.0.1:{INGEST_PORT}/readyz", self.folder)
        try:
            async with await aio_pika.connect_robust(self.settings.amqp.url) as connection:
                channel = await connection.channel()
                queue = await stages.events_queue(channel)
                row = await stages.end_to_end(f"http://127.0.0.1:{INGEST_PORT}", queue,
                                              requests, rate)
        finally:
            self.rss["worker"] = max(self.rss["worker"], worker.peak_rss_mb())
            self.rss["ingest"] = max(self.rss["ingest"], ingest.peak_rss_mb())
            ingest.stop()
            worker.stop()
        self.results["end_to_end"] = row
        print(f"  end to end at {rate}/s: {row['latency_ms']}", flush=True)

    async def growth(self) -> None:
        await self.fresh()
        rows = []
        async with await aio_pika.connect_robust(self.settings.amqp.url) as connection:
            channel = await connection.channel(publisher_confirms=True)
            await stages.events_queue(channel)
            for size in (self.args.small, self.args.large):
                fill_s = await stages.store_orders(self.settings, size)
                due = await stages.due_query_ms(self.settings)
                per_op = await costs.measure(self.settings, alerts=100,
                                             idle_s=self.args.idle_s)
                ids = [f"growth-{size}-{i}" for i in range(self.args.growth_alerts)]
                await stages.prefill(channel, ids)
                worker = await self._start_worker()
                try:
                    drain = await stages.drain_rate(
                        f"http://127.0.0.1:{WORKER_PORT}/metrics", len(ids))
                finally:
                    self.rss["worker"] = max(self.rss["worker"], worker.peak_rss_mb())
                    worker.stop()
                row = {"orders": size, "fill_s": round(fill_s, 1), "due_query_ms":
                       due["median_ms"], "due_found": due["found"],
                       "worker_ms_per_alert": drain["ms_per_alert"], **per_op}
                rows.append(row)
                print(f"  {size:>9,} orders stored: sweep query {row['due_query_ms']} ms, worker "
                      f"{row['worker_ms_per_alert']} ms/alert; one alert {per_op['alert_ms']} ms "
                      f"({per_op['alert_commands']} commands), one due poll {per_op['poll_ms']}"
                      f" ms ({per_op['poll_commands']}), idle "
                      f"{per_op['idle_commands_per_min']} commands/min", flush=True)
        self.results["growth"] = rows
        small, large = rows
        self.results["growth_worker_ratio"] = round(
            large["worker_ms_per_alert"] / small["worker_ms_per_alert"], 3)
        self.results["growth_due_ratio"] = round(large["due_query_ms"] / small["due_query_ms"], 3)
        self.results["growth_poll_ratio"] = round(large["poll_ms"] / small["poll_ms"], 3)


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")))
    rabbit = subprocess.run(["rabbitmqctl", "version"],  # noqa: S607 - the service script's
                            capture_output=True, text=True, check=False).stdout.strip()
    return {"cpu": cpu, "cores": str(os.cpu_count()), "memory_gib": f"{mem_kb / 2**20:.1f}",
            "kernel": platform.release(), "python": platform.python_version(),
            "rabbitmq": rabbit or "?", "store": "FerretDB 1.24.2 (SQLite), patched _id index"}


async def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    bench = Bench(args, folder)
    try:
        return await _stages(bench, args, folder)
    except BaseException:
        # A stage that dies must not leave its alerts and stale checks in the queues, where
        # the next `make run` would pick them up.
        print("a stage failed: emptying the benchmark's queues and database", flush=True)
        await bench.fresh(last=True)
        raise


async def _stages(bench: Bench, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    started = time.monotonic()
    print("ceilings and ingest", flush=True)
    await bench.http_runs()
    print("ingest past its capacity (vegeta)", flush=True)
    await bench.overload_runs()
    print("worker", flush=True)
    await bench.worker_runs()
    print("end to end", flush=True)
    await bench.end_to_end()
    print("growth", flush=True)
    await bench.growth()
    print("tracing off and on", flush=True)
    bench.results["tracing"] = await tracing_cost.measure(
        bench.env, folder, bench.settings.amqp.url, bench.fresh, requests=args.requests,
        concurrency=args.concurrency, alerts=args.alerts, rounds=args.tracing_rounds,
        ingest_port=INGEST_PORT, worker_port=WORKER_PORT)
    await bench.fresh(last=True)
    bench.results["peak_rss_mb"] = {k: round(v, 1) for k, v in bench.rss.items()}
    bench.results["machine"] = machine()
    bench.results["command"] = "make bench" + (f" ARGS=\"{' '.join(sys.argv[1:])}\""
                                               if sys.argv[1:] else "")
    bench.results["parameters"] = vars(args)
    bench.results["wall_s"] = round(time.monotonic() - started, 1)
    return bench.results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--requests", type=int, default=4000, help="per closed-loop run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--open-seconds", type=float, default=8.0, help="per open-loop run")
    parser.add_argument("--overload-seconds", type=float, default=10.0,
                        help="per vegeta run of the overload stage")
    parser.add_argument("--overload-targets", type=int, default=30_000,
                        help="distinct alerts for the closed-loop maximum (more than it sends)")
    parser.add_argument("--overload-variants", nargs="+", choices=["before", "now"],
                        default=["before", "now"], help="which ingests the overload stage runs")
    parser.add_argument("--overload-rounds", type=int, default=3,
                        help="closed loops per ingest, before and now alternating")
    parser.add_argument("--overload-own-cpu", action="store_true",
                        help="the overload stage's ingest on a CPU of its own, vegeta and "
                             "RabbitMQ on the others (by default all share them, as the peer "
                             "was measured)")
    parser.add_argument("--only", choices=["overload"],
                        help="run one stage alone and print it (docs/ is not written)")
    parser.add_argument("--alerts", type=int, default=1500, help="per worker drain run")
    parser.add_argument("--e2e-rate", type=float, default=20.0)
    parser.add_argument("--small", type=int, default=10_000, help="orders stored, growth")
    parser.add_argument("--large", type=int, default=100_000, help="orders stored, growth")
    parser.add_argument("--growth-alerts", type=int, default=600)
    parser.add_argument("--idle-s", type=float, default=20.0,
                        help="idle worker watched, per size (store commands and CPU)")
    parser.add_argument("--tracing-rounds", type=int, default=3,
                        help="alternating off/on rounds of the tracing stage")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    folder = Path(".bench")  # test keys and config (deploy/devkit.py), and the services' logs
    if not (folder / "config.toml").exists():
        subprocess.run([sys.executable, "deploy/devkit.py", "init", str(folder)], check=True)  # noqa: S603
    logs.configure("console", "warning")  # the in-process worker of the growth stage: quiet
    if args.only == "overload":
        alone = Bench(args, folder)
        asyncio.run(alone.overload_runs())
        r = {**alone.results, "peak_rss_mb": alone.rss}
        (folder / "overload.json").write_text(json.dumps(r, indent=2) + "\n")
        print("\n".join(report._overload(r)))
        print("\n".join(f"{t}: {v} ({ok})" for t, v, ok in report.overload_targets(r)))
        print(f"peak RSS, ingest: {alone.rss['ingest']:.0f} MB; figures in {folder}/overload.json")
        return
    results = asyncio.run(run(args, folder))
    args.out.mkdir(exist_ok=True)
    (args.out / "benchmarks.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    report.plot(results, args.out / "benchmarks.png")
    (args.out / "benchmarks.md").write_text(report.markdown(results))
    print(f"wrote {args.out}/benchmarks.md, .json, .png in {results['wall_s']} s")


if __name__ == "__main__":
    main()
