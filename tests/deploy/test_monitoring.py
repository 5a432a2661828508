"""Alerting rules and dashboard against what the processes really export: `promtool test
rules`, `promtool check metrics` on both live /metrics, and every metric a rule or a panel
names is exported."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path

import aiohttp
import pytest

from shared.settings import Settings
from tests.conftest import toml_text, wait_until, write_config
from tests.processes import ServiceProcess, answers, free_port

pytestmark = [pytest.mark.services, pytest.mark.deploy]

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "deploy" / "helm" / "hh-callbacks" / "files"
RULES = FILES / "alerts.yaml"
DASHBOARD = FILES / "dashboard.json"
OUR_METRIC = re.compile(r"\b(?:hh|process|python)_[a-z0-9_]+\b")
HISTOGRAM_SAMPLES = ("_bucket", "_count", "_sum")


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], input=stdin, capture_output=True, text=True,
                          timeout=120, check=False)


def test_alerting_rules_pass_their_promtool_unit_tests() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(ROOT / "tests" / "deploy" / "alerts_test.yaml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def exported_names(exposition: str) -> set[str]:
    """Every name a query may use: each family, and a histogram's sample names."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names.update(name + suffix for suffix in HISTOGRAM_SAMPLES)
    return names


@pytest.fixture
async def scraped(settings: Settings, tmp_path: Path, old_rsa_pem: bytes) -> dict[str, str]:
    """The /metrics text of a real ingest and a real worker process."""
    ingest_port, worker_port = free_port(), free_port()
    raw = write_config(tmp_path, old_rsa_pem, ingest={"port": ingest_port},
                       worker={"port": worker_port}, amqp={"queue_watch_interval_s": 0.2},
                       mongo={"database": settings.mongo.database})
    config = tmp_path / "config.toml"
    config.write_text(toml_text(raw))
    processes = await asyncio.gather(ServiceProcess.start(config, "ingest"),
                                     ServiceProcess.start(config, "worker"))
    texts = {}
    try:
        async with aiohttp.ClientSession() as http:
            for name, port in (("ingest", ingest_port), ("worker", worker_port)):
                url = f"http://127.0.0.1:{port}/metrics"
                await wait_until(answers(http, url, 200), 30, f"{name} metrics")

                async def queues_read(url: str = url) -> str | None:
                    async with http.get(url) as response:
                        text = await response.text()
                    return text if "hh_queue_messages{" in text else None
                texts[name] = await wait_until(queues_read, 30, f"{name}'s queue gauges")
    finally:
        for process in processes:
            assert await process.stop() == 0
    return texts


async def test_both_processes_metrics_pass_promtool_and_name_every_metric_rules_and_panels_use(
    scraped: dict[str, str],
) -> None:
    for name, text in scraped.items():
        linted = promtool("check", "metrics", stdin=text)
        assert linted.returncode == 0 and not linted.stdout.strip(), (
            f"{name}: {linted.stdout}{linted.stderr}")
    exported = exported_names(scraped["ingest"]) | exported_names(scraped["worker"])
    queries = [*dashboard_queries(), RULES.read_text()]
    used = {name for query in queries for name in OUR_METRIC.findall(query)}
    assert used, "no metric found in the rules and the dashboard"
    missing = sorted(used - exported)
    assert not missing, f"named by a rule or a panel but exported by neither process: {missing}"
    # The panels the issue asks for are there.
    titles = {panel["title"] for panel in json.loads(DASHBOARD.read_text())["panels"]}
    for title in ("Worker alerts by outcome", "Rejections by reason", "Ingest request latency",
                  "Queue depth", "Polls by outcome", "Dead letters"):
        assert title in titles
