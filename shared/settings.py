"""Settings: one TOML file (HH_CONFIG) with HH_* environment overrides for the common keys.

Key material is never in the TOML itself: each key entry is a file path (relative paths are
taken from the config file's folder) or `env:NAME`, the name of an environment variable.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from shared.signature import (
    KeyLoadError,
    SigningKey,
    VerifyKey,
    load_signing_key,
    load_verify_key,
)


class SettingsError(ValueError):
    """The configuration cannot be used; the message names the setting, never key material."""


@dataclass(frozen=True)
class AmqpSettings:
    url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # A cluster's nodes (each an amqp:// URL, tried in turn; the connection moves to the next
    # when its node is lost). Empty: `url` alone.
    urls: tuple[str, ...] = ()
    publish_timeout_s: float = 5.0
    prefetch: int = 64
    delivery_limit: int = 20
    # After the broker is lost, the first reconnection attempts come this often; the pause
    # grows with the outage (a tenth of its length so far) up to reconnect_max_interval_s.
    reconnect_interval_s: float = 1.0
    reconnect_max_interval_s: float = 10.0
    # How often each process reads the depth and consumers of the queues (passive declare).
    queue_watch_interval_s: float = 15.0

    @property
    def addresses(self) -> tuple[str, ...]:
        return self.urls or (self.url,)


@dataclass(frozen=True)
class MongoSettings:
    url: str = "mongodb://127.0.0.1:27017"
    database: str = "hh_callbacks"
    timeout_ms: int = 5000


@dataclass(frozen=True)
class IngestSettings:
    host: str = "0.0.0.0"  # noqa: S104 - a container listens on all its interfaces
    port: int = 8080
    max_body_bytes: int = 65536
    timestamp_tolerance_s: int = 300
    # Source networks that may post alerts (empty: any). Behind a reverse proxy, list it in
    # trusted_proxies so that its X-Forwarded-For is used instead of the proxy's own address.
    allowed_networks: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    # On SIGTERM, /readyz answers 503 for this long while alerts are still served, so that a
    # load balancer stops sending before the listener closes (Kubernetes: a few seconds).
    drain_s: float = 0.0
    # Alerts being answered at once; past it an alert is refused at once (503, Retry-After)
    # rather than queued behind the others until the publish timeout ("Past its capacity" in
    # docs/how-to/production.md). The bound follows latency (ingest.admission): cut while
    # the event loop lags past latency_target_s or alerts keep queueing longer than it, grown
    # otherwise, never past max_in_flight: about the alerts/s it may take times the longest
    # confirm stall it should ride out (5,000 x 0.1). latency_target_s = 0: the bound is
    # max_in_flight, fixed.
    max_in_flight: int = 500
    latency_target_s: float = 0.02
    # The ingest's public address as HighHelp reaches it (https://pay.example.com): the three
    # callback URLs are this and CALLBACK_PATHS; `hh-admin doctor` probes them.
    public_url: str = ""
    # A connection must send a request's headers within header_timeout_s (also how long an
    # idle kept-alive connection stays open), and its body within body_timeout_s after them;
    # past max_connections open at once, a new one is answered 503 and closed.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    max_connections: int = 1000

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise SettingsError("[ingest] max_in_flight: expected at least 1")
        if self.latency_target_s < 0:
            raise SettingsError("[ingest] latency_target_s: expected 0 (a fixed bound) or more")
        if self.max_connections < 1:
            raise SettingsError("[ingest] max_connections: expected at least 1")


@dataclass(frozen=True)
class WorkerSettings:
    host: str = "0.0.0.0"  # noqa: S104
    port: int = 8081  # /healthz, /readyz, /metrics
    # The hourly maintenance (one replica per period, claimed by a unique insert): the outbox
    # relay (events a crash left unpublished that no redelivery will finish) and the poll
    # sweep. Both read whole collections on the local server: rare by design.
    maintenance_interval_s: float = 3600.0
    relay_grace_s: float = 10.0  # an event younger than this is left to the worker that wrote it
    relay_window_s: float = 7200.0  # how far back the relay looks (two periods)
    # A failure is first retried in place after these short pauses (every step is idempotent),
    # which absorbs brief lock conflicts; only then does the message wait in a retry queue.
    quick_retries_s: tuple[float, ...] = (0.05, 0.2, 1.0)
    # A failure that may pass is retried after these delays in turn (the last one repeats)
    # until max_attempts; then the message goes to the dead letters.
    retry_delays_s: tuple[int, ...] = (1, 5, 30, 120, 600)
    max_attempts: int = 12
    # The inserts and view writes of the alerts in flight go out together: a batch goes when
    # every alert in flight has joined it, or this long after its first write (a lone alert's
    # write goes at once).
    batch_window_s: float = 0.01


@dataclass(frozen=True)
class PollerSettings:
    stale_after_s: float = 600
    give_up_after_s: float = 259200
    # After a poll that changed nothing, the next one waits the next rung of the ladder.
    ladder_s: tuple[float, ...] = (60, 300, 900, 3600, 21600, 86400)
    lease_s: float = 120.0  # a claimed poll not finished by then is taken as abandoned
    # The safety net (in the hourly maintenance): a non-final order whose poll is overdue by
    # this much lost its pending check (a purged queue): it gets a new one. Orders are read
    # at most sweep_rate_per_s a second.
    sweep_grace_s: float = 600.0
    sweep_rate_per_s: float = 2000.0
    enabled: bool = True  # consume due checks (off: checks wait in hh.orders.checks.due)


@dataclass(frozen=True)
class RetentionSettings:
    """Ages (days after an order settled or was given up) after which its records go. Longer
    than any sender's retry horizon: a late alert must still find the order settled."""

    enabled: bool = True
    inbox_days: float = 35.0
    transitions_days: float = 35.0
    polls_days: float = 35.0
    anomalies_days: float = 35.0
    rate_per_s: float = 1000.0  # documents deleted a second, at most


@dataclass(frozen=True)
class ConsoleSettings:
    """The operator console (`hh-console`): off unless enabled; loopback unless told."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8082
    # Operators, one a line: `name:role:scrypt$...` (role `operator` or `viewer`); make a line
    # with `hh-console hash-password NAME ROLE`. Relative to the config file.
    users_file: str = ""
    session_ttl_s: float = 8 * 3600.0  # a sign-in lasts this long (then sign in again)
    # Behind a trusted authenticating proxy: the header naming the operator (and, optionally,
    # the one giving the role; else `viewer`). Only for a proxy that strips these from clients.
    proxy_user_header: str = ""
    proxy_role_header: str = ""
    # The processes' /metrics, read for the overview (alerts in the last hour, rejections).
    metrics_urls: tuple[str, ...] = ("http://127.0.0.1:8080/metrics",
                                     "http://127.0.0.1:8081/metrics")


@dataclass(frozen=True)
class ProjectSettings:
    project_id: str
    callback_keys: tuple[VerifyKey, ...]
    api_base_url: str = "https://api.hh-processing.com"
    request_key: SigningKey | None = field(default=None, repr=False)
    default_product: str = "p2p"
    default_flow: str = "payin"


@dataclass(frozen=True)
class Settings:
    amqp: AmqpSettings = AmqpSettings()
    mongo: MongoSettings = MongoSettings()
    ingest: IngestSettings = IngestSettings()
    worker: WorkerSettings = WorkerSettings()
    poller: PollerSettings = PollerSettings()
    retention: RetentionSettings = RetentionSettings()
    console: ConsoleSettings = ConsoleSettings()
    projects: Mapping[str, ProjectSettings] = field(default_factory=dict)
    log_format: str = "json"
    log_level: str = "info"
    config_file: str | None = None  # the file these were read from (a reload reads it again)


def flag(text: str) -> bool:
    """true/false (or 1/0, yes/no), as an environment variable says it."""
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise ValueError(text)


def comma_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


# environment variable -> (section, key, type)
ENV_OVERRIDES: dict[str, tuple[str, str, Callable[[str], Any]]] = {
    "HH_AMQP_URL": ("amqp", "url", str),
    "HH_AMQP_URLS": ("amqp", "urls", comma_list),
    "HH_MONGO_URL": ("mongo", "url", str),
    "HH_MONGO_DB": ("mongo", "database", str),
    "HH_INGEST_HOST": ("ingest", "host", str),
    "HH_INGEST_PORT": ("ingest", "port", int),
    "HH_INGEST_DRAIN_S": ("ingest", "drain_s", float),
    "HH_INGEST_MAX_IN_FLIGHT": ("ingest", "max_in_flight", int),
    "HH_INGEST_LATENCY_TARGET_S": ("ingest", "latency_target_s", float),
    "HH_INGEST_PUBLIC_URL": ("ingest", "public_url", str),
    "HH_INGEST_MAX_CONNECTIONS": ("ingest", "max_connections", int),
    "HH_WORKER_HOST": ("worker", "host", str),
    "HH_WORKER_PORT": ("worker", "port", int),
    "HH_CONSOLE_HOST": ("console", "host", str),
    "HH_CONSOLE_PORT": ("console", "port", int),
    "HH_CONSOLE_ENABLED": ("console", "enabled", flag),
    "HH_CONSOLE_USERS_FILE": ("console", "users_file", str),
    "HH_CONSOLE_METRICS_URLS": ("console", "metrics_urls", comma_list),
    "HH_CONSOLE_PROXY_USER_HEADER": ("console", "proxy_user_header", str),
    "HH_CONSOLE_PROXY_ROLE_HEADER": ("console", "proxy_role_header", str),
    "HH_LOG_FORMAT": ("log", "format", str),
    "HH_LOG_LEVEL": ("log", "level", str),
}


def _read_material(ref: str, base: Path, env: Mapping[str, str], what: str) -> bytes:
    if ref.startswith("env:"):
        name = ref[4:]
        if name not in env:
            raise SettingsError(f"{what}: environment variable {name} is not set")
        return env[name].encode("utf-8")
    path = Path(ref) if Path(ref).is_absolute() else base / ref
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"{what}: cannot read {path}: {exc.strerror}") from None


def _project(raw: Mapping[str, Any], base: Path, env: Mapping[str, str]) -> ProjectSettings:
    project_id = str(raw.get("project_id") or "")
    if not project_id:
        raise SettingsError("[[projects]] entry without project_id")
    where = f"project {project_id}"
    keys: list[VerifyKey] = []
    try:
        for ref in raw.get("callback_public_keys", []):
            keys.append(load_verify_key(_read_material(ref, base, env, where), "rsa"))
        for ref in raw.get("callback_hmac_keys", []):
            keys.append(load_verify_key(_read_material(ref, base, env, where), "hmac"))
        request_key = None
        if raw.get("request_hmac_key"):
            material = _read_material(raw["request_hmac_key"], base, env, where)
            request_key = load_signing_key(material, "hmac")
        elif raw.get("merchant_private_key"):
            material = _read_material(raw["merchant_private_key"], base, env, where)
            request_key = load_signing_key(material, "rsa")
    except KeyLoadError as exc:
        raise SettingsError(f"{where}: {exc}") from None
    if not keys:
        raise SettingsError(f"{where}: no callback_public_keys or callback_hmac_keys")
    return ProjectSettings(
        project_id=project_id,
        callback_keys=tuple(keys),
        api_base_url=str(raw.get("api_base_url", ProjectSettings.api_base_url)),
        request_key=request_key,
        default_product=str(raw.get("default_product", "p2p")),
        default_flow=str(raw.get("default_flow", "payin")),
    )


_KINDS: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}


def _fits(value: object, annotation: str) -> bool:
    if annotation.startswith("tuple["):
        inner = annotation.removeprefix("tuple[").split(",")[0]
        return isinstance(value, tuple) and all(_fits(item, inner) for item in value)
    kinds = _KINDS.get(annotation)
    if kinds is None:
        return True
    return isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))


def _section(name: str, cls: type, raw: Mapping[str, Any]) -> Any:
    fields = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    unknown = set(raw) - set(fields)
    if unknown:
        raise SettingsError(f"[{name}] has unknown settings: {', '.join(sorted(unknown))}")
    for key, value in raw.items():
        if not _fits(value, fields[key]):
            wanted = fields[key].replace("tuple[", "a list of ").replace(", ...]", "")
            raise SettingsError(f"[{name}] {key}: expected {wanted}, got {type(value).__name__}")
    return cls(**raw)


def _tuples(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}


def parse_settings(
    raw: Mapping[str, Any], base: Path, env: Mapping[str, str] | None = None
) -> Settings:
    env = os.environ if env is None else env
    sections: dict[str, dict[str, Any]] = {
        name: dict(raw.get(name, {}))
        for name in ("amqp", "mongo", "ingest", "worker", "poller", "retention", "console",
                     "log")
    }
    for var, (section, key, kind) in ENV_OVERRIDES.items():
        if env.get(var):
            try:
                sections[section][key] = kind(env[var])
            except ValueError:
                raise SettingsError(f"{var} is not a valid {kind.__name__}") from None
    projects = {}
    for entry in raw.get("projects", []):
        project = _project(entry, base, env)
        if project.project_id in projects:
            raise SettingsError(f"project {project.project_id} is listed twice")
        projects[project.project_id] = project
    try:
        return Settings(
            amqp=_section("amqp", AmqpSettings, _tuples(sections["amqp"])),
            mongo=_section("mongo", MongoSettings, sections["mongo"]),
            ingest=_section("ingest", IngestSettings, _tuples(sections["ingest"])),
            worker=_section("worker", WorkerSettings, _tuples(sections["worker"])),
            poller=_section("poller", PollerSettings, _tuples(sections["poller"])),
            retention=_section("retention", RetentionSettings, sections["retention"]),
            console=_console(_section("console", ConsoleSettings, _tuples(sections["console"])),
                             base),
            projects=projects,
            log_format=str(sections["log"].get("format", "json")),
            log_level=str(sections["log"].get("level", "info")),
        )
    except TypeError as exc:
        raise SettingsError(str(exc)) from None


def _console(console: ConsoleSettings, base: Path) -> ConsoleSettings:
    if console.users_file and not Path(console.users_file).is_absolute():
        return replace(console, users_file=str(base / console.users_file))
    return console


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Settings from `path`, else from $HH_CONFIG, else the defaults (no projects)."""
    location = path or os.environ.get("HH_CONFIG")
    if not location:
        return parse_settings({}, Path.cwd())
    file = Path(location)
    try:
        raw = tomllib.loads(file.read_text("utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read config {file}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config {file} is not valid TOML: {exc}") from None
    try:
        settings = parse_settings(raw, file.resolve().parent)
    except SettingsError as exc:
        raise SettingsError(f"config {file}: {exc}") from None
    return replace(settings, config_file=str(file.resolve()))
