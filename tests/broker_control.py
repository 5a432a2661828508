"""Stopping and starting the local RabbitMQ node for outage tests, and seeing it return."""

from __future__ import annotations

import asyncio
import subprocess
import time

import aio_pika

from tests.conftest import AMQP_URL


async def rabbitmqctl(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert await asyncio.wait_for(proc.wait(), 120) == 0, f"rabbitmqctl {' '.join(args)}"


async def rabbitmqctl_output(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, f"rabbitmqctl {' '.join(args)}"
    return out.decode()


async def broker_accepts() -> float:
    """When the broker first takes an AMQP connection again (monotonic time)."""
    while True:
        try:
            connection = await aio_pika.connect(AMQP_URL, timeout=1)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.05)
            continue
        at = time.monotonic()
        await connection.close()
        return at
