"""A running ingest, fuzzed from docs/openapi.yaml by schemathesis: every answer is one the
document gives for that operation, with its content type and body schema, and never a 500."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import toml_text, write_config
from tests.processes import free_port

pytestmark = pytest.mark.services

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
schema = schemathesis.openapi.from_path(DOC)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our http URL
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def ingest_url(services: None, tmp_path_factory: pytest.TempPathFactory,
               old_rsa_pem: bytes) -> Iterator[str]:
    """A real ingest process (its own event loop, apart from the tests')."""
    folder = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    config = folder / "config.toml"
    config.write_text(toml_text(write_config(folder, old_rsa_pem, ingest={"port": port})))
    process = subprocess.Popen(
        [sys.executable, "-m", "ingest"], env={**os.environ, "HH_CONFIG": str(config)},
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not _ready(f"{base}/readyz"):
            assert process.poll() is None, "ingest exited"
            assert time.monotonic() < deadline, "ingest not ready in 30 s"
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        assert process.wait(30) == 0


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_ingest_answers_only_as_documented(case: schemathesis.Case, ingest_url: str) -> None:
    # Every check but "positive data acceptance": data that fits the schema still lacks a
    # valid signature, so 401 is the documented answer to it.
    case.call_and_validate(base_url=ingest_url, excluded_checks=[positive_data_acceptance])
