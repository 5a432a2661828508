"""Fixtures for the deploy tests: containers removed after each test; a config folder the
image's user can read."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from shared.settings import Settings
from tests.conftest import toml_text, write_config
from tests.containers import Container


@pytest.fixture(autouse=True)
async def no_leftover_containers() -> AsyncIterator[None]:
    yield
    await Container.remove_leftovers()


@pytest.fixture
def container_config(
    tmp_path: Path, old_rsa_pem: bytes, settings: Settings,
) -> Callable[..., Path]:
    """Write config.toml and its keys into a folder of their own, on the given ports and the
    test's database, readable by the image's uid 10001 (mounted read-only)."""
    def make(ingest_port: int, worker_port: int, **sections: dict[str, Any]) -> Path:
        folder = tmp_path / "etc"
        folder.mkdir(exist_ok=True)
        raw = write_config(
            folder, old_rsa_pem,
            ingest={"host": "127.0.0.1", "port": ingest_port, "drain_s": 1},
            worker={"host": "127.0.0.1", "port": worker_port},
            mongo={"database": settings.mongo.database}, **sections)
        (folder / "config.toml").write_text(toml_text(raw))
        folder.chmod(0o755)
        for path in folder.iterdir():
            path.chmod(0o644)
        return folder
    return make
