"""The production shape: an ingest and two worker processes against a three-node RabbitMQ
cluster (deploy/cluster.sh), a steady stream of signed alerts with duplicates, and in turn the
leader of hh.callbacks.process killed (SIGKILL) then restarted, a rolling restart of the three
nodes, and the node a worker is on paused (SIGSTOP) past the heartbeat timeout. Each passes when
every alert answered 200 is applied exactly once, each transition is published under one
event_id, no answer is other than 200 or 503, and nothing is dead-lettered; each prints how long
the ingest and the workers took to come back. A last test makes the broker fault that
deploy/quorum-heal.erl mends and mends it. Run by `make test-cluster` (marker `cluster`)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest

from shared import mongo
from shared.alert import idempotency_key
from shared.broker import Broker
from shared.settings import Settings, load_settings
from shared.topology import DEAD_QUEUE, ORDERS_EXCHANGE, PROCESS_QUEUE
from shared.wire import CALLBACK_PATHS
from tests.conftest import toml_text, wait_until, write_config
from tests.keys import PROJECT_ID, alert_body, gateway_hmac, signed_headers
from tests.processes import ServiceProcess, answers, free_port

pytestmark = [pytest.mark.services, pytest.mark.cluster, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
NODES = (1, 2, 3)
# A short heartbeat, so that a paused node is noticed within seconds (aiormq's default is 60 s);
# the cluster's own net_ticktime is 10 s (deploy/cluster.sh).
URLS = [f"amqp://guest:guest@127.0.0.1:{5680 + n}/?heartbeat=2" for n in NODES]
TAP_QUEUE = "hh.test.cluster.events"
RATE_PER_S = 40
STEPS = [("processing", "new"), ("processing", "requisites"), ("success", None)]
# How long a member may take to come back by itself before what the nodes gave up on is
# restarted (a restarted node's members are back within a few seconds here).
HEAL_AFTER_S = 15


def sh(*args: str, check: bool = True) -> str:
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
    assert not check or done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
    return done.stdout


async def cluster(*args: str) -> str:
    return await asyncio.to_thread(sh, str(ROOT / "deploy/cluster.sh"), *args)


async def rabbitmqctl(node: int, *args: str) -> str:
    return await asyncio.to_thread(sh, "rabbitmqctl", "-q", "-n", f"hh-c{node}@localhost",
                                   *args)


async def ctl(node: int, *args: str) -> Any:
    return json.loads(await rabbitmqctl(node, *args, "--formatter", "json"))


async def evaluate(node: int, expression: str) -> str:
    return (await rabbitmqctl(node, "eval", expression)).strip()


def node_of(name: str) -> int:
    return int(re.fullmatch(r"hh-c(\d)@localhost", name).group(1))  # type: ignore[union-attr]


async def quorum_queues(via: int) -> list[dict[str, Any]]:
    rows = await ctl(via, "list_queues", "name", "type", "leader", "members", "online")
    return [r for r in rows if r["type"] == "quorum" and r["name"].startswith("hh.")]


async def dead_lettering_queues(via: int) -> list[str]:
    """The queues that dead-letter at-least-once (the retry and wait queues)."""
    return [r["name"] for r in await ctl(via, "list_queues", "name", "arguments")
            if ["x-dead-letter-strategy", "longstr", "at-least-once"] in r["arguments"]]


async def members_back(via: int) -> None:
    """Until every quorum queue has all three members online, no node has given up on a
    member or on its dead-letter workers, and none records a partition (as an upgrade
    waits). What a node gave up on is restarted, as an operator would (deploy/quorum-heal.erl
    says why RabbitMQ does so), and printed: that is the broker's fault, not the pipeline's,
    whose checks are unchanged."""
    heal_from = time.monotonic() + HEAL_AFTER_S

    async def back() -> bool:
        try:
            online = all(len(q["online"]) == len(NODES) for q in await quorum_queues(via))
        except (AssertionError, json.JSONDecodeError):
            return False
        if not online and time.monotonic() < heal_from:
            return False
        healed = (await cluster("heal")).strip()
        if healed:
            print(f"\nheal (what the broker had given up, restarted): {healed}")
        return online and not healed and await no_partition()
    await wait_until(back, 120, "the quorum queues' members back, no partition", every=0.5)


async def no_partition() -> bool:
    """No node records a partition: a node paused past net_ticktime leaves one, which the
    cluster's autoheal (deploy/cluster.sh) ends by restarting the node that was cut off."""
    try:
        return not any([(await ctl(n, "cluster_status"))["partitions"] for n in NODES])
    except (AssertionError, json.JSONDecodeError):
        return False


@dataclass
class Answer:
    started: float
    ended: float
    status: int
    key: str


@dataclass
class Traffic:
    """A steady stream of signed alerts (about a quarter repeated), paced at RATE_PER_S."""

    prefix: str
    answers: list[Answer] = field(default_factory=list)
    accepted: set[str] = field(default_factory=set)

    def alerts(self, orders: int) -> list[tuple[str, str, str | None, int]]:
        rng = random.Random(self.prefix)
        stream = [(f"{self.prefix}-{n}", status, sub, step) for n in range(orders)
                  for step, (status, sub) in enumerate(STEPS)]
        for _ in range(len(stream) // 3):
            at = rng.randrange(len(stream))
            stream.insert(min(len(stream), at + rng.randrange(1, 60)), stream[at])
        return stream

    async def send(self, http: aiohttp.ClientSession, base: str,
                   alerts: list[tuple[str, str, str | None, int]]) -> list[Any]:
        """Each alert at its time; those not answered 200 are returned (to send again)."""
        began, failed, lanes = time.monotonic(), [], []
        base_ts = int(time.time())
        for n, alert in enumerate(alerts):
            await asyncio.sleep(max(0.0, began + n / RATE_PER_S - time.monotonic()))
            lanes.append(asyncio.create_task(self._one(http, base, alert, base_ts, failed)))
        await asyncio.gather(*lanes)
        return failed

    async def _one(self, http: aiohttp.ClientSession, base: str,
                   alert: tuple[str, str, str | None, int], base_ts: int,
                   failed: list[Any]) -> None:
        payment_id, status, sub, step = alert
        body = alert_body(payment_id, status, sub)
        route = status if status in ("success", "decline") else "callback"
        key = idempotency_key(PROJECT_ID, payment_id, status, sub)
        started = time.time()
        try:
            async with http.post(base + CALLBACK_PATHS[route], data=body,
                                 headers=signed_headers(body, gateway_hmac(), base_ts + step),
                                 timeout=aiohttp.ClientTimeout(total=30)) as response:
                code = response.status
        except (aiohttp.ClientError, TimeoutError):
            code = 0
        self.answers.append(Answer(started, time.time(), code, key))
        if code == 200:
            self.accepted.add(key)
        else:
            failed.append(alert)

    def refused_between(self, since: float, until: float) -> int:
        return sum(a.status != 200 for a in self.answers if since <= a.started < until)

    def back_after(self, fault_at: float, until: float = float("inf")) -> float:
        """From the fault to the first 200 for a request sent after the last refusal that
        followed it, before `until` (0: nothing refused)."""
        refused = [a.started for a in self.answers
                   if fault_at <= a.started < until and a.status != 200]
        if not refused:
            return 0.0
        ok = [a.ended for a in self.answers if a.status == 200 and a.started > max(refused)]
        return (min(ok) if ok else float("inf")) - fault_at


@dataclass
class Pipeline:
    base: str
    ingest: ServiceProcess
    workers: list[ServiceProcess]
    db: mongo.Collections
    http: aiohttp.ClientSession

    def node_of(self, process: ServiceProcess) -> int:
        """The broker node the process last said it is on (its log lines)."""
        node = None
        for line in process.lines:
            if b'"broker_connected"' in line or b'"broker_node_connected"' in line:
                node = json.loads(line)["node"]
        assert node is not None, process.output()[-2000:]
        return int(node.rsplit(":", 1)[1]) - 5680

    def losses_found(self, fault_at: float) -> dict[str, float]:
        """For each process that lost its node: from the fault to its finding that out (a
        closed socket at once; a paused node only by the heartbeat)."""
        found = {}
        for name, process in (("ingest", self.ingest), *(
                (f"worker {n + 1}", w) for n, w in enumerate(self.workers))):
            lost = [_at(line) for line in process.lines if b'"broker_node_lost"' in line]
            lost = [t for t in lost if t >= fault_at]
            if lost:
                found[name] = round(min(lost) - fault_at, 2)
        return found

    def consuming_again(self, fault_at: float) -> list[float]:
        """For each worker, from the fault to its first alert processed after it (after it
        found its node lost, if it did: what it had prefetched does not count)."""
        gaps = []
        for worker in self.workers:
            lost = [_at(line) for line in worker.lines if b'"broker_node_lost"' in line]
            since = min([t for t in lost if t >= fault_at], default=fault_at)
            after = [_at(line) for line in worker.lines if b'"alert_processed"' in line]
            after = [t for t in after if t >= since]
            gaps.append(round(min(after) - fault_at, 2) if after else float("inf"))
        return gaps


def _at(line: bytes) -> float:
    return datetime.fromisoformat(json.loads(line)["timestamp"].replace("Z", "+00:00")
                                  ).timestamp()


@pytest.fixture(scope="module")
def cluster_up() -> None:
    sh(str(ROOT / "deploy/cluster.sh"), "start")


async def topology_declared(settings: Settings, tmp_path: Path, old_rsa_pem: bytes) -> None:
    """The contract's queues, declared as the pipeline's processes declare them: a cluster
    made afresh has none until a process connects."""
    raw = write_config(tmp_path, old_rsa_pem, mongo={"database": settings.mongo.database},
                       amqp={"urls": URLS}, poller={"enabled": False})
    config = tmp_path / "declare.toml"
    config.write_text(toml_text(raw))
    broker = Broker.for_settings(load_settings(str(config)))
    await broker.connect()
    await broker.close()


async def purge_dead_lettering(via: int) -> None:
    """Empty the queues that dead-letter at-least-once (the retry and wait queues): what a run
    left there would expire during the cluster's next start, the moment their dead-letter
    workers crash most (deploy/quorum-heal.erl), and arrive in the next run's queues."""
    for queue in await dead_lettering_queues(via):
        await rabbitmqctl(via, "purge_queue", queue)


@asynccontextmanager
async def pipeline(settings: Settings, tmp_path: Path, old_rsa_pem: bytes, first: int = 1
                   ) -> AsyncIterator[Pipeline]:
    """`first`: the node every process connects to first (the others follow in turn)."""
    port = free_port()
    urls = URLS[first - 1:] + URLS[:first - 1]
    raw = write_config(tmp_path, old_rsa_pem, mongo={"database": settings.mongo.database},
                       ingest={"port": port}, amqp={"urls": urls, "prefetch": 16},
                       poller={"enabled": False})
    config = tmp_path / "cluster.toml"
    config.write_text(toml_text(raw))
    ingest = await ServiceProcess.start(config, "ingest")  # each declares the topology
    workers = [await ServiceProcess.start(config) for _ in range(2)]
    connection = await aio_pika.connect(URLS[0])
    channel = await connection.channel()
    # What an earlier run left must not count as this one's.
    await (await channel.declare_queue(DEAD_QUEUE, passive=True)).purge()
    tap = await channel.declare_queue(TAP_QUEUE, durable=True,
                                      arguments={"x-queue-type": "quorum"})
    await tap.purge()
    await tap.bind(ORDERS_EXCHANGE, "#")
    await members_back(1)
    client = mongo.client(settings.mongo)
    try:
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{port}"
            await wait_until(answers(http, f"{base}/readyz", 200), 30, "ingest ready")
            yield Pipeline(base, ingest, workers, mongo.Collections.of(
                client[settings.mongo.database]), http)
        for process in (ingest, *workers):
            assert await process.stop() == 0, process.output()[-3000:]
        await purge_dead_lettering(first)
    finally:
        await connection.close()
        await client.drop_database(settings.mongo.database)
        await client.close()


async def judge(p: Pipeline, traffic: Traffic, orders: int) -> None:
    """Every alert answered 200 applied exactly once, each transition published under one
    event_id, answers only 200 or 503, nothing dead-lettered."""
    async def all_in_inbox() -> bool:
        found = [await p.db.callbacks.find_one({"_id": k}, projection={"_id": 1})
                 for k in traffic.accepted]
        return all(found)
    await wait_until(all_in_inbox, 120, "every accepted alert processed", every=0.5)
    counts = Counter(a.status for a in traffic.answers)
    assert set(counts) <= {200, 503}, counts
    assert len(traffic.accepted) == orders * len(STEPS)
    steps: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    event_ids: dict[str, str] = {}
    for n in range(orders):
        order_id = f"{PROJECT_ID}:{traffic.prefix}-{n}"
        seq = 1
        while (step := await p.db.transitions.find_one({"_id": f"{order_id}:{seq}"})):
            steps[order_id].append((step["to"]["status"], step["to"]["sub_status"]))
            event_ids[step["_id"]] = step["event"]["event_id"]
            assert await p.db.published.find_one({"_id": step["event"]["event_id"]}), step["_id"]
            seq += 1
        view = await p.db.orders.find_one({"_id": order_id})
        assert view is not None and view["status"] == "success", (order_id, view)
    duplicates = {o: s for o, s in steps.items() if len(s) != len(set(s))}
    assert not duplicates, duplicates
    connection = await aio_pika.connect(URLS[0])
    try:
        channel = await connection.channel()
        seen: defaultdict[str, set[str]] = defaultdict(set)  # step -> event ids published
        tap = await channel.declare_queue(TAP_QUEUE, passive=True)
        while (message := await tap.get(no_ack=True, fail=False)) is not None:
            event = json.loads(message.body)
            if event["type"] == "transition" and event["payment_id"].startswith(traffic.prefix):
                seen[f"{event['project_id']}:{event['payment_id']}:{event['status']}:"
                     f"{event['sub_status']}"].add(event["event_id"])
        assert all(len(ids) == 1 for ids in seen.values()), seen
        assert len(seen) == len(event_ids), (len(seen), len(event_ids))
        dead = await channel.declare_queue(DEAD_QUEUE, passive=True)
        assert await dead.get(no_ack=True, fail=False) is None, "something was dead-lettered"
    finally:
        await connection.close()


async def run_with_fault(p: Pipeline, prefix: str, orders: int,
                         fault: Callable[[], Awaitable[dict[str, Any]]]
                         ) -> tuple[dict[str, Any], Traffic]:
    traffic = Traffic(prefix)
    alerts = traffic.alerts(orders)
    sending = asyncio.create_task(traffic.send(p.http, p.base, alerts))
    await asyncio.sleep(3)  # steady state first
    fault_at = time.time()
    figures = await fault()
    retry = await sending
    while retry:  # HighHelp retries what was not answered 200
        await asyncio.sleep(1)
        retry = await traffic.send(p.http, p.base, retry)
    figures.update(
        sent=len(traffic.answers), answers=dict(Counter(a.status for a in traffic.answers)),
        ingest_back_s=round(traffic.back_after(fault_at), 2),
        workers_consuming_again_s=p.consuming_again(fault_at),
        node_lost_found_after_s=p.losses_found(fault_at),
        channels_renewed=sum(process.count("broker_channel_renewed")
                             for process in (p.ingest, *p.workers)))
    print(f"\n{prefix}: {json.dumps(figures)}")
    await judge(p, traffic, orders)
    return figures, traffic


async def test_the_leader_killed_mid_stream_then_restarted(
    cluster_up: None, settings: Settings, tmp_path: Path, old_rsa_pem: bytes,
) -> None:
    await topology_declared(settings, tmp_path, old_rsa_pem)
    queue = next(q for q in await quorum_queues(1) if q["name"] == PROCESS_QUEUE)
    leader = node_of(queue["leader"])
    # The hardest case: the ingest and the workers are on the node that is lost.
    async with pipeline(settings, tmp_path, old_rsa_pem, first=leader) as p:
        async def kill_leader() -> dict[str, Any]:
            assert p.node_of(p.ingest) == leader
            pid = int((await cluster("pid", str(leader))).strip())
            os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(8)  # the stream goes on with two nodes of three
            await cluster("start-node", str(leader))
            await members_back(leader % 3 + 1)
            return {"fault": f"SIGKILL hh-c{leader} (leader of {PROCESS_QUEUE})"}
        await run_with_fault(p, "kill", 120, kill_leader)


async def test_a_rolling_restart_of_all_three_nodes(
    cluster_up: None, settings: Settings, tmp_path: Path, old_rsa_pem: bytes,
) -> None:
    # The processes start on hh-c3: the restarts of hh-c1 and hh-c2 come while they are on
    # another node, then hh-c3's moves them.
    async with pipeline(settings, tmp_path, old_rsa_pem, first=3) as p:
        windows: list[tuple[int, int, float, float]] = []  # node, ingest's node, from, to

        async def roll() -> dict[str, Any]:
            for n in NODES:
                on = p.node_of(p.ingest)
                began = time.time()
                await cluster("stop-node", str(n))
                await cluster("start-node", str(n))
                await members_back(n % 3 + 1)
                windows.append((n, on, began, time.time()))
            return {"fault": "rolling restart hh-c1, hh-c2, hh-c3"}
        _figures, traffic = await run_with_fault(p, "roll", 640, roll)  # past the third
    refusals = [{"restarted": f"hh-c{n}", "ingest_on": f"hh-c{on}",
                 "seconds": round(until - since, 1),
                 "refused": traffic.refused_between(since, until),
                 "ingest_back_s": round(traffic.back_after(since, until), 2)}
                for n, on, since, until in windows]
    print(f"roll, per node restarted: {json.dumps(refusals)}")
    # The target: no refusal at all for a client whose node is not the one restarting.
    assert all(r["refused"] == 0 for r in refusals if r["restarted"] != r["ingest_on"]), refusals


async def test_the_node_a_worker_is_on_paused_past_the_heartbeat_timeout(
    cluster_up: None, settings: Settings, tmp_path: Path, old_rsa_pem: bytes,
) -> None:
    async with pipeline(settings, tmp_path, old_rsa_pem) as p:
        async def pause() -> dict[str, Any]:
            node = p.node_of(p.workers[0])
            pid = int((await cluster("pid", str(node))).strip())
            os.kill(pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(20)  # the heartbeat is 5 s: past its timeout
            finally:
                os.kill(pid, signal.SIGCONT)
            await members_back(node % 3 + 1)
            return {"fault": f"SIGSTOP hh-c{node} for 20 s (worker 1's node)"}
        await run_with_fault(p, "pause", 150, pause)


async def test_what_a_node_gave_up_on_is_restarted_by_the_heal(cluster_up: None) -> None:
    """The fault behind deploy/quorum-heal.erl, made on purpose: hh-c3's dead-letter
    supervisor stopped, then a dead-lettering queue's leader moved onto hh-c3 until Ra gave
    up its member there. The heal names both and restarts them; the queue has its three
    members again; a second heal finds nothing to do."""
    await members_back(1)
    queue = (await dead_lettering_queues(1))[0]
    member = f"'%2F_{queue}'"
    assert await evaluate(3, "supervisor:terminate_child(rabbit_sup, rabbit_fifo_dlx_sup).") \
        == "ok"

    async def given_up() -> bool:
        if await evaluate(3, f"whereis({member}).") == "undefined":
            return True
        leader = next(q["leader"] for q in await quorum_queues(1) if q["name"] == queue)
        await evaluate(1, f"ra:transfer_leadership({{{member}, '{leader}'}}, "
                          f"{{{member}, 'hh-c3@localhost'}}).")
        return False
    await wait_until(given_up, 60, f"Ra to give up {queue}'s member on hh-c3", every=0.3)

    healed = await cluster("heal")
    assert "hh-c3@localhost" in healed and "rabbit_fifo_dlx_sup" in healed, healed
    assert member in healed, healed
    await members_back(1)
    assert (await cluster("heal")).strip() == ""
