"""The reference pages made from the code, so that they cannot drift from it: every setting
(the settings dataclasses and their environment variables), every console script and
subcommand (their argument parsers' help), the broker contract (docs/asyncapi.yaml), the
metrics (the processes' registries) and the alerts (the chart's rules). Run by `make docs`
before the site is built; the pages are not committed.

Also checks what Zensical does not: every page is in the navigation, and every page the
navigation names exists."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GENERATED = ("reference/settings.md", "reference/commands.md", "reference/broker-contract.md",
             "reference/metrics.md")


def settings_page() -> str:
    from shared import settings as s

    env_of = {(section, key): var for var, (section, key, _kind) in s.ENV_OVERRIDES.items()}
    lines = ["# Settings", "", "Every setting of the TOML file HH_CONFIG (or `--config`) names, "
             "with its default; a variable in the last column overrides the file. Made from "
             "`shared/settings.py` by `docs/generate.py`. What they mean: "
             "[Configuration](configuration.md).", ""]
    sections = {"amqp": s.AmqpSettings, "mongo": s.MongoSettings, "ingest": s.IngestSettings,
                "worker": s.WorkerSettings, "poller": s.PollerSettings,
                "retention": s.RetentionSettings, "console": s.ConsoleSettings}
    for name, cls in sections.items():
        lines += [f"## [{name}]", "", "| setting | type | default | environment |",
                  "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            default: Any = (f.default if f.default is not dataclasses.MISSING
                            else f.default_factory())  # type: ignore[misc]
            variable = env_of.get((name, f.name))
            shown_env = f"`{variable}`" if variable else ""
            lines.append(f"| `{f.name}` | {f.type} | `{_toml(default)}` | {shown_env} |")
        lines.append("")
    lines += ["## [log]", "", "| setting | default | environment |", "|---|---|---|",
              "| `format` | `json` (or `console`) | `HH_LOG_FORMAT` |",
              "| `level` | `info` | `HH_LOG_LEVEL` |", "",
              "## [[projects]]", "", "One entry per cash register: `project_id`, "
              "`callback_public_keys` and/or `callback_hmac_keys` (files or `env:NAME`), "
              "`merchant_private_key` or `request_hmac_key`, `api_base_url`, "
              "`default_product`, `default_flow` ([Configuration](configuration.md)).", ""]
    return "\n".join(lines)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _help_of(run: Callable[[], Any], argv: list[str]) -> str:
    out = io.StringIO()
    saved = sys.argv
    sys.argv = argv
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            run()
    finally:
        sys.argv = saved
    return out.getvalue().rstrip()


def commands_page() -> str:
    from admin.__main__ import _parser

    lines = ["# Commands", "", "Every console script and subcommand, as its `--help` says it "
             "(made by `docs/generate.py` from the argument parsers).", ""]
    scripts = {"hh-ingest": "ingest.__main__", "hh-worker": "worker.__main__",
               "hh-console": "console.__main__", "hh-sandbox": "sandbox.__main__"}
    for script, module in scripts.items():
        main = __import__(module, fromlist=["main"]).main
        lines += [f"## {script}", "", "```text", _help_of(main, [script, "--help"]), "```", ""]
    parser = _parser()
    lines += ["## hh-admin", "", "```text", parser.format_help().rstrip(), "```", ""]
    for command, sub in _subparsers(parser):
        lines += [f"### hh-admin {command}", "", "```text", sub.format_help().rstrip(), "```",
                  ""]
    return "\n".join(lines)


def _subparsers(parser: argparse.ArgumentParser, prefix: str = ""
                ) -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:  # argparse has no public walk of its subcommands
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((f"{prefix}{name}", sub))
                found += _subparsers(sub, f"{prefix}{name} ")
    return found


def contract_page() -> str:
    doc = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())
    lines = ["# Broker contract", "", f"{doc['info']['title']} {doc['info']['version']}, "
             "from [asyncapi.yaml](../asyncapi.yaml) (AsyncAPI 3.0, validated by `make lint`). "
             "The prose: [The contract](contract.md).", "", "## Channels", "",
             "| channel | address | messages | description |", "|---|---|---|---|"]
    for name, channel in doc["channels"].items():
        messages = ", ".join(f"`{m}`" for m in channel.get("messages", {}))
        about = " ".join(str(channel.get("description", "")).split())
        lines.append(f"| `{name}` | `{channel.get('address', '')}` | {messages} | {about} |")
    lines += ["", "## Operations", "", "| operation | action | channel |", "|---|---|---|"]
    for name, op in doc.get("operations", {}).items():
        ref = op["channel"]["$ref"].rsplit("/", 1)[-1]
        lines.append(f"| `{name}` | {op['action']} | `{ref}` |")
    lines += ["", "## A downstream consumer", "", "`examples/consumer.py`, in full:", "",
              "```python", (ROOT / "examples" / "consumer.py").read_text().rstrip(), "```", ""]
    return "\n".join(lines)


def metrics_page() -> str:
    from console.app import METRICS_REGISTRY
    from console.app import create_app as console_app
    from ingest.app import IngestMetrics
    from shared.metrics import export_broker_node
    from shared.settings import Settings
    from worker.metrics import WorkerMetrics

    lines = ["# Metrics and alerts", "", "Each process serves `/metrics` (Prometheus text). "
             "Made by `docs/generate.py` from the processes' registries and the chart's rules "
             "(`deploy/helm/hh-callbacks/files/alerts.yaml`).", ""]
    registries = {"ingest": IngestMetrics().registry, "worker": WorkerMetrics().registry,
                  "console": console_app(Settings())[METRICS_REGISTRY]}
    for process, registry in registries.items():
        # Registered once the process has its broker: here with a stand-in of one.
        export_broker_node(registry, SimpleNamespace(node="127.0.0.1:5672", ready=True))
        lines += [f"## {process}", "", "| metric | type | help |", "|---|---|---|"]
        for family in registry.collect():
            if family.name.startswith(("process_", "python_")):
                continue
            suffix = "_total" if family.type == "counter" else ""
            lines.append(f"| `{family.name}{suffix}` | {family.type} | {family.documentation} |")
        lines += ["", "(and the standard `process_*` and `python_*` series)", ""]
    rules = yaml.safe_load((ROOT / "deploy/helm/hh-callbacks/files/alerts.yaml").read_text())
    lines += ["## Alerts", "", "| alert | for | severity | summary |", "|---|---|---|---|"]
    for group in rules["groups"]:
        for rule in group["rules"]:
            annotations = rule.get("annotations", {})
            lines.append(f"| `{rule['alert']}` | {rule.get('for', '')} | "
                         f"{rule.get('labels', {}).get('severity', '')} | "
                         f"{' '.join(str(annotations.get('summary', '')).split())} |")
    return "\n".join(lines) + "\n"


def nav_pages(nav: list[Any]) -> list[str]:
    pages = []
    for entry in nav:
        for value in (entry.values() if isinstance(entry, dict) else [entry]):
            pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def check_navigation(config_file: Path = ROOT / "zensical.toml", docs: Path = DOCS) -> list[str]:
    config = tomllib.loads(config_file.read_text())
    named = set(nav_pages(config["project"]["nav"]))
    present = {str(p.relative_to(docs)) for p in docs.rglob("*.md")} | set(GENERATED)
    problems = [f"the navigation names {p}, which does not exist" for p in sorted(named - present)]
    problems += [f"{p} is in no navigation entry" for p in sorted(present - named)]
    return problems


def main() -> None:
    makers = dict(zip(GENERATED, (settings_page, commands_page, contract_page, metrics_page),
                      strict=True))
    for path, make in makers.items():
        (DOCS / path).write_text(make())
    problems = check_navigation()
    for problem in problems:
        print(f"docs: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
