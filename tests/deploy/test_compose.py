"""The compose file, checked with `podman-compose config` (it is not run here: no public
image can be pulled): loopback-only ports, the config folder mounted read-only and never
created empty, and one config path across the image, compose and the Helm chart."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.containers import PODMAN_ENV, ROOT

pytestmark = pytest.mark.deploy

COMPOSE = ROOT / "deploy" / "compose.yaml"


def compose_config() -> dict[str, Any]:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "podman-compose"), "-f", str(COMPOSE),
         "--profile", "console", "config"],
        capture_output=True, text=True, timeout=60, env=PODMAN_ENV, cwd=COMPOSE.parent,
        check=False)
    assert done.returncode == 0, done.stderr
    value: dict[str, Any] = yaml.safe_load(done.stdout)
    return value


def image_config_path() -> str:
    match = re.search(r"HH_CONFIG=(\S+)", (ROOT / "deploy" / "Dockerfile").read_text())
    assert match
    return match.group(1)


def test_compose_publishes_on_loopback_only_and_mounts_the_config_read_only() -> None:
    services = compose_config()["services"]
    assert set(services) == {"rabbitmq", "mongo", "ingest", "worker", "console"}
    assert services["console"]["profiles"] == ["console"]  # optional: off unless asked for
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    config_dir = str(Path(image_config_path()).parent)
    for name in ("ingest", "worker", "console"):
        service = services[name]
        assert service["read_only"] is True
        [mount] = service["volumes"]
        assert mount["target"] == config_dir and mount["read_only"] is True
        assert mount["bind"]["create_host_path"] is False  # a missing folder fails loudly
        assert "HH_CONFIG" not in service.get("environment", {})  # the image's own path
    assert services["ingest"]["command"] == ["hh-ingest"]
    assert services["worker"]["command"] == ["hh-worker"]


def test_one_config_path_for_image_compose_and_chart() -> None:
    path = image_config_path()
    assert path == "/etc/hh-callbacks/config.toml"
    helpers = (ROOT / "deploy" / "helm" / "hh-callbacks" / "templates" / "_helpers.tpl")
    text = helpers.read_text()
    assert f"value: {path}" in text and f"mountPath: {Path(path).parent}" in text
