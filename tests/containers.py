"""Containers of the project's image for tests, run by podman with host networking against
the local services (deploy/image.sh builds the image; make test-deploy runs these tests)."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path
from typing import Any, ClassVar

from tests.logcapture import LOG_LINES

ROOT = Path(__file__).resolve().parent.parent
IMAGE = os.environ.get("HH_IMAGE", "localhost/hh-callbacks:dev")
PODMAN_ENV = {**os.environ,
              "CONTAINERS_CONF": str(ROOT / "deploy" / "containers" / "containers.conf")}


async def podman(*args: str, check: bool = True, timeout: float = 120) -> str:
    """Run a podman command; its standard output. A failure raises with what it printed."""
    proc = await asyncio.create_subprocess_exec(
        "podman", *args, env=PODMAN_ENV, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])} failed ({proc.returncode}): "
                             f"{err.decode(errors='replace')[-2000:]}")
    return out.decode(errors="replace")


class Container:
    alive: ClassVar[set[Container]] = set()  # removed after each test if still there

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    async def run(cls, command: list[str], config_dir: Path, *extra: str) -> Container:
        """Detached, host network, the config folder mounted read-only where the image looks
        for it, and a read-only root filesystem (as the Helm chart runs it)."""
        name = f"hh-test-{command[0]}-{uuid.uuid4().hex[:8]}"
        await podman("run", "--detach", "--name", name, "--network", "host", "--read-only",
                     "--volume", f"{config_dir}:/etc/hh-callbacks:ro",
                     "--env", "HH_LOG_FORMAT=json", *extra, IMAGE, *command)
        container = cls(name)
        cls.alive.add(container)
        return container

    async def exec(self, *command: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            "podman", "exec", self.name, *command, env=PODMAN_ENV,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace")

    async def inspect(self) -> dict[str, Any]:
        value: list[dict[str, Any]] = json.loads(await podman("inspect", self.name))
        return value[0]

    async def host_pid(self) -> int:
        return int((await self.inspect())["State"]["Pid"])

    async def signal(self, name: str) -> None:
        await podman("kill", "--signal", name, self.name)

    async def wait(self, timeout: float = 60) -> int:
        """The exit code, once it has exited."""
        return int((await podman("wait", self.name, timeout=timeout)).strip())

    async def logs(self) -> str:
        return await podman("logs", self.name)

    async def remove(self) -> None:
        Container.alive.discard(self)
        # the session-wide check looks for secrets in what the container logged
        LOG_LINES.extend((await podman("logs", self.name, check=False)).splitlines())
        await podman("rm", "--force", "--time", "0", self.name, check=False)

    @classmethod
    async def remove_leftovers(cls) -> None:
        for container in list(cls.alive):
            await container.remove()
