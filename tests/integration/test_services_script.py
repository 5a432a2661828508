"""deploy/services.sh, the script behind `make run` and `make test`: the local MongoDB-compatible
server runs in a session of its own, a stale pid file never gets another process signalled,
and a Go too old to build the server is said in one line."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.processes import free_port

pytestmark = pytest.mark.services

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "services.sh"


def services(*args: str, env: dict[str, str], timeout: float = 120
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], env={**os.environ, **env}, text=True,
                          capture_output=True, timeout=timeout, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text()


@pytest.fixture
def own_server(tmp_path: Path) -> dict[str, str]:
    """Another FerretDB on a port of its own, with its state in tmp_path; the shared RabbitMQ
    is left alone (its port given as one where nothing listens)."""
    return {"HH_SERVICES_DIR": str(tmp_path), "HH_MONGO_PORT": str(free_port()),
            "HH_AMQP_PORT": str(free_port())}


def test_the_server_runs_in_its_own_session(own_server: dict[str, str], tmp_path: Path) -> None:
    amqp_up = {**own_server, "HH_AMQP_PORT": "5672"}  # up already: start leaves it be
    started = services("start", env=amqp_up)
    assert started.returncode == 0, started.stderr
    pid = int((tmp_path / "ferretdb.pid").read_text())
    try:
        assert _alive(pid)
        # A Ctrl-C reaches the terminal's foreground process group: the server is in none of
        # ours, so it outlives an interrupted `make run`.
        assert os.getsid(pid) != os.getsid(0) and os.getpgid(pid) != os.getpgid(0)
    finally:
        stopped = services("stop", env=own_server)
    assert stopped.returncode == 0 and "ferretdb stopped" in stopped.stderr
    assert not (tmp_path / "ferretdb.pid").exists()


async def test_a_stale_pid_file_never_gets_another_process_signalled(
    own_server: dict[str, str], tmp_path: Path,
) -> None:
    bystander = await asyncio.create_subprocess_exec("sleep", "60")
    try:
        (tmp_path / "ferretdb.pid").write_text(f"{bystander.pid}\n")  # the number was reused
        result = services("stop", env=own_server)
        assert result.returncode == 0
        assert "left alone" in result.stderr
        assert bystander.returncode is None and _alive(bystander.pid)
        assert not (tmp_path / "ferretdb.pid").exists()
    finally:
        bystander.send_signal(signal.SIGKILL)
        await bystander.wait()


def test_a_go_too_old_is_one_line_and_a_failure(own_server: dict[str, str],
                                                tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "go").write_text('#!/bin/sh\n[ "$1 $2" = "env GOVERSION" ] && echo go1.19.8\n')
    (fake / "go").chmod(0o755)
    env = {**own_server, "HH_AMQP_PORT": "5672", "HH_TOOLS_DIR": str(tmp_path / "tools"),
           "PATH": f"{fake}:{os.environ['PATH']}"}
    result = services("start", env=env, timeout=60)
    assert result.returncode != 0
    [line] = [line for line in result.stderr.splitlines() if "Go 1.24" in line]
    assert "go1.19.8" in line
    assert "did not come up" not in result.stderr  # no wait for a server that cannot exist
