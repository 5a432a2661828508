"""Starting the real processes: --help, a broken config, a failure while starting (one clear
error line and exit 1, never a silent process that looks alive), and /healthz while starting."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shared.settings import Settings
from tests.conftest import toml_text, wait_until, write_config
from tests.logcapture import LOG_LINES
from tests.processes import answers, free_port, http_status
from worker.app import Worker

pytestmark = pytest.mark.services

SCRIPTS = ["worker", "ingest", "admin", "sandbox"]


async def run(module: str, *args: str, config: Path | None = None, timeout: float = 60
              ) -> tuple[int, str, str]:
    env = {**os.environ, "HH_LOG_FORMAT": "json"}
    if config is not None:
        env["HH_CONFIG"] = str(config)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:  # a process that does not end is a failure: leave none
            proc.kill()
            await proc.wait()
    LOG_LINES.extend(out.decode().splitlines())
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def config_file(tmp_path: Path, old_rsa_pem: bytes, settings: Settings,
                **sections: dict[str, Any]) -> Path:
    sections["mongo"] = {"database": settings.mongo.database, **sections.get("mongo", {})}
    raw = write_config(tmp_path, old_rsa_pem, **sections)
    path = tmp_path / "hh.toml"
    path.write_text(toml_text(raw))
    return path


@pytest.mark.parametrize("module", SCRIPTS)
async def test_every_console_script_answers_help_without_starting(module: str) -> None:
    code, out, err = await run(module, "--help", config=Path("/nonexistent/hh.toml"))
    assert code == 0 and out.startswith("usage: hh-"), err
    assert "_started" not in out


@pytest.mark.parametrize("module", ["worker", "ingest", "admin"])
async def test_a_broken_config_is_one_line_naming_file_and_setting(
    module: str, tmp_path: Path,
) -> None:
    config = tmp_path / "broken.toml"
    config.write_text("[worker]\nport = \"eighty\"\n")
    args = ("dlq", "list") if module == "admin" else ()
    code, out, err = await run(module, *args, config=config)
    assert code == 2 and "Traceback" not in err + out
    [line] = err.strip().splitlines()
    assert str(config) in line and "[worker] port" in line


def _occupied_port() -> socket.socket:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


@pytest.mark.parametrize("module", ["worker", "ingest"])
async def test_port_taken_is_one_error_line_and_exit_1(
    module: str, settings: Settings, tmp_path: Path, old_rsa_pem: bytes,
) -> None:
    with _occupied_port() as holder:
        port = holder.getsockname()[1]
        config = config_file(tmp_path, old_rsa_pem, settings, **{module: {"port": port}})
        code, out, err = await run(module, config=config)
    assert code == 1
    assert "Traceback" not in out + err and "never retrieved" not in out + err
    [failure] = [line for line in out.splitlines() if f"{module}_start_failed" in line]
    assert "address already in use" in failure.lower() or "98" in failure
    assert f"{module}_started" not in out


@pytest.mark.parametrize("module", ["worker", "ingest"])
async def test_refused_broker_declaration_is_no_outage_but_exit_1(
    module: str, settings: Settings, tmp_path: Path, old_rsa_pem: bytes, amqp: Any,
) -> None:
    """The work queue exists with x-delivery-limit 20; a process configured otherwise is
    refused by the broker (PRECONDITION_FAILED): it must say so and stop, not retry for ever."""
    config = config_file(tmp_path, old_rsa_pem, settings, amqp={"delivery_limit": 21},
                         **{module: {"port": free_port()}})
    code, out, _err = await run(module, config=config)
    assert code == 1
    [failure] = [line for line in out.splitlines() if f"{module}_start_failed" in line]
    assert "PRECONDITION_FAILED" in failure or "Precondition" in failure


async def test_worker_health_is_503_until_it_consumes(
    settings: Settings, tmp_path: Path, old_rsa_pem: bytes,
) -> None:
    port = free_port()
    unreachable = f"mongodb://127.0.0.1:{free_port()}"  # nobody listens: the start waits
    config = config_file(tmp_path, old_rsa_pem, settings, worker={"port": port},
                         mongo={"url": unreachable, "timeout_ms": 300})
    env = {**os.environ, "HH_CONFIG": str(config), "HH_LOG_FORMAT": "json"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/healthz"
            await wait_until(lambda: _answers_any(http, url), 30, "the worker's HTTP server")
            assert await http_status(http, url) == 503
            assert await answers(http, f"http://127.0.0.1:{port}/readyz", 503)()
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    LOG_LINES.extend(out.decode().splitlines())
    assert proc.returncode == 0 and b"worker_started" not in out


async def _answers_any(http: aiohttp.ClientSession, url: str) -> bool:
    return await http_status(http, url) is not None


async def test_both_processes_export_the_standard_process_series(
    make_settings: Any, ingest: Any, amqp: Any,
) -> None:
    port = free_port()
    settings = make_settings(worker={"port": port})
    worker = Worker(settings)
    await worker.start()
    try:
        async with aiohttp.ClientSession() as http, http.get(
                f"http://127.0.0.1:{port}/metrics") as response:
            worker_text = await response.text()
        ingest_text = await (await ingest.get("/metrics")).text()
    finally:
        await worker.mongo_client.drop_database(settings.mongo.database)
        await worker.stop()
    for text in (worker_text, ingest_text):
        for series in ("process_resident_memory_bytes", "process_cpu_seconds_total",
                       "process_open_fds", "python_info"):
            assert f"\n{series}" in text, series
    assert "# TYPE hh_worker_alerts" in worker_text and "# TYPE hh_ingest_alerts" in ingest_text
