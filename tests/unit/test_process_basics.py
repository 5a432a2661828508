"""What every process does before it serves: settings read and checked, logs rendered, the
broker's reconnection pause. No services needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.broker import reconnect_delay
from shared.settings import SettingsError, load_settings, parse_settings


def test_console_logs_have_no_colour_codes_off_a_terminal() -> None:
    code = ("from shared import logs; import structlog; logs.configure('console', 'info'); "
            "structlog.get_logger().warning('hello', n=1)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "hello" in out and "\x1b[" not in out


@pytest.mark.parametrize(("toml", "names"), [
    ('[worker]\nport = "eighty"\n', ["[worker] port", "int"]),
    ("[amqp]\nprefetch = true\n", ["[amqp] prefetch", "int"]),
    ("[poller]\nladder_s = [60, \"x\"]\n", ["[poller] ladder_s", "list of float"]),
    ("[ingest]\nmax_body = 1\n", ["[ingest]", "unknown settings: max_body"]),
    ("[worker\n", ["not valid TOML"]),
    ('[[projects]]\nproject_id = "p"\ncallback_hmac_keys = ["missing.txt"]\n',
     ["project p", "missing.txt"]),
])
def test_a_config_error_names_the_file_and_the_setting(
    tmp_path: Path, toml: str, names: list[str]
) -> None:
    config = tmp_path / "hh.toml"
    config.write_text(toml)
    with pytest.raises(SettingsError) as raised:
        load_settings(config)
    message = str(raised.value)
    assert str(config) in message and "\n" not in message.strip()
    for name in names:
        assert name in message


def test_reconnection_pause_starts_short_and_grows_with_the_outage() -> None:
    assert reconnect_delay(0.0, 1.0, 10.0) == 1.0
    assert reconnect_delay(8.0, 1.0, 10.0) == 1.0  # a restart's outage: still every second
    assert reconnect_delay(60.0, 1.0, 10.0) == 6.0
    assert reconnect_delay(3600.0, 1.0, 10.0) == 10.0


def test_both_processes_can_be_told_where_to_listen_from_the_environment(tmp_path: Path) -> None:
    """A container's probes come from outside it: its config may bind loopback, the
    environment says otherwise."""
    raw = {"ingest": {"host": "127.0.0.1"}, "worker": {"host": "127.0.0.1"}}
    pod = "192.0.2.10"  # the pod's address (a documentation range: nothing is sent there)
    env = {"HH_INGEST_HOST": pod, "HH_WORKER_HOST": pod, "HH_WORKER_PORT": "9091"}
    settings = parse_settings(raw, tmp_path, env=env)
    assert (settings.ingest.host, settings.worker.host, settings.worker.port) == (pod, pod, 9091)


def test_oldest_waiting_message_age_is_estimated_from_the_last_one_taken() -> None:
    from prometheus_client import CollectorRegistry

    from shared.queue_watch import QueueWatch

    watch = QueueWatch(None, CollectorRegistry(), ["q"], 15, consumed=["q"])  # type: ignore[arg-type]
    assert watch._age("q", 5, now=1000.0) == 0.0  # first sight of a backlog, nothing taken
    assert watch._age("q", 5, now=1030.0) == 30.0  # still nothing taken: it grows
    watch.taken("q", published_at=1020.0)
    assert watch._age("q", 5, now=1100.0) == 80.0  # nothing taken since: it keeps growing
    watch.taken("q", published_at=1090.0)
    assert watch._age("q", 2, now=1100.0) == 10.0
    assert watch._age("q", 0, now=1100.0) == 0.0  # nothing waits


def test_tracing_off_imports_nothing_of_opentelemetry() -> None:
    """Off (no OTEL_* variable), the processes load no OpenTelemetry module at all: tracing
    off costs nothing but one look at the environment."""
    import subprocess
    import sys

    probe = ("import os, sys; import ingest.__main__, worker.__main__; from shared import tracing;"
             "assert tracing.start_if_wanted('x', {}) is None;"
             "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, env={"PATH": "/usr/bin:/bin"})
    assert done.stdout.strip() == "[]"


def test_console_settings_from_the_environment() -> None:
    from pathlib import Path

    import pytest

    from shared.settings import SettingsError, parse_settings

    env = {"HH_CONSOLE_ENABLED": "true", "HH_CONSOLE_PORT": "9090",
           "HH_CONSOLE_USERS_FILE": "users.txt",
           "HH_CONSOLE_METRICS_URLS": "http://a:8080/metrics, http://b:8081/metrics"}
    console = parse_settings({}, Path("/etc/hh"), env=env).console
    assert (console.enabled, console.port) == (True, 9090)
    assert console.users_file == "/etc/hh/users.txt"  # relative to the config's folder
    assert console.metrics_urls == ("http://a:8080/metrics", "http://b:8081/metrics")
    assert parse_settings({}, Path("/"), env={}).console.enabled is False  # off by default
    with pytest.raises(SettingsError, match="HH_CONSOLE_ENABLED"):
        parse_settings({}, Path("/"), env={"HH_CONSOLE_ENABLED": "maybe"})
