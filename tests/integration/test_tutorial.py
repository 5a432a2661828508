"""The tutorial (docs/tutorial/first-payment.md) as written: each command of its shell blocks
run in order from the checkout (those marked "leave it running" in the background, as a
second shell would), then the console signed in to and the payment's page read."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import aiohttp
import pytest

from shared.settings import Settings
from tests.conftest import wait_until
from tests.console_fixtures import csrf_of
from tests.logcapture import LOG_LINES
from tests.processes import answers, free_port

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial" / "first-payment.md"
RUNNING = "# leave it running"
PROJECT_ID = "57aff4db-b45d-42bf-bc5f-b7a499a01782"


def commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", TUTORIAL.read_text(), flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


async def test_the_tutorial_runs_as_written(
    settings: Settings, tmp_path: Path, http: aiohttp.ClientSession,
) -> None:
    run_dir = tmp_path / "run"
    ports = {name: free_port() for name in ("ingest", "worker", "sandbox", "console")}
    ingest = f"http://127.0.0.1:{ports['ingest']}"
    env = {**os.environ, "HH_RUN_DIR": str(run_dir), "HH_MONGO_DB": settings.mongo.database,
           "HH_INGEST_PORT": str(ports["ingest"]), "HH_WORKER_PORT": str(ports["worker"]),
           "HH_SANDBOX_PORT": str(ports["sandbox"]), "HH_CONSOLE_PORT": str(ports["console"]),
           "HH_INGEST_PUBLIC_URL": ingest}
    env.pop("HH_CONFIG", None)
    ready = {"make run": [f"{ingest}/readyz", f"http://127.0.0.1:{ports['worker']}/healthz"],
             "hh-console": [f"http://127.0.0.1:{ports['console']}/healthz"]}
    background: list[asyncio.subprocess.Process] = []
    said: dict[str, str] = {}
    try:
        for line in commands():
            command = line.replace(".run/", f"{run_dir}/")
            if RUNNING in command:
                proc = await asyncio.create_subprocess_exec(
                    "bash", "-c", command, env=env, cwd=ROOT, start_new_session=True,
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
                background.append(proc)
                [urls] = [urls for what, urls in ready.items() if what in command]
                for url in urls:
                    await wait_until(answers(http, url, 200), 120, f"{url} ({line})")
                continue
            done = await asyncio.create_subprocess_exec(
                "bash", "-c", command, env=env, cwd=ROOT,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await asyncio.wait_for(done.communicate(), 300)
            said[line] = out.decode(errors="replace")
            LOG_LINES.extend(said[line].splitlines())
            assert done.returncode == 0, f"{line}\n{said[line][-3000:]}"
        [doctor] = [out for line, out in said.items() if "doctor" in line]
        assert "✗" not in doctor and doctor.count("✓") >= 10, doctor
        [story] = [out for line, out in said.items() if "orders show" in line]
        assert '"final": true' in story and '"status": "success"' in story, story[-2000:]
        # The console: sign in as the tutorial's operator, read the payment's page.
        console = f"http://127.0.0.1:{ports['console']}"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            async with browser.get(f"{console}/login") as form:
                token = csrf_of(await form.text())
            async with browser.post(f"{console}/login", data={
                    "login_csrf": token, "name": "ana", "password": "a-long-tutorial-password",
                    "next": "/"}, allow_redirects=False) as signed:
                assert signed.status == 303
            async with browser.get(f"{console}/payments/{PROJECT_ID}/tutorial-1") as page:
                text = await page.text()
        assert page.status == 200 and "1,500.00 RUB" in text and "success" in text
    finally:
        for proc in background:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as in the shell
        for proc in background:
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
