"""`hh-admin`: look at and act on hh-callbacks' state, configured by HH_CONFIG.

    hh-admin orders show PROJECT_ID PAYMENT_ID
    hh-admin orders register PROJECT_ID PAYMENT_ID --product p2p --flow payin [--amount N]
                                                   [--currency C]
    hh-admin orders poll-now PROJECT_ID PAYMENT_ID
    hh-admin verify --body FILE --headers FILE [--at T]  (would ingest accept it? if not, why)
    hh-admin dlq list | show ID | redrive (--id ID ... | --reason-contains TEXT | --all)
    hh-admin dlq purge --yes
    hh-admin retention --dry-run | --now          (what retention would delete; or run it now)
    hh-admin keys new --kind rsa|hmac [--out DIR] [--name NAME]  (the merchant's key, 0600)
    hh-admin keys show [--json]                   (each configured key's id, kind and use)
    hh-admin doctor [--json]                      (the go-live check: ✓ or ✗ and what to do)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from admin import doctor, keys
from ingest.diagnose import diagnose
from shared import logs, mongo
from shared.alert import order_id
from shared.broker import Broker
from shared.registrar import publish_registration
from shared.registration import Registration
from shared.settings import Settings, SettingsError, load_settings
from shared.wire import FLOWS, PRODUCTS
from worker import dlq, parts, story
from worker.retention import Retention, ttl_seconds


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str, ensure_ascii=False))


async def orders_show(settings: Settings, project_id: str, payment_id: str) -> int:
    """The payment's whole story, as the console shows it (worker.story: each read by _id)."""
    client = mongo.client(settings.mongo)
    c = mongo.Collections.of(client[settings.mongo.database])
    key = order_id(project_id, payment_id)
    try:
        found = await story.story(c, key, settings.retention)
    finally:
        await client.close()
    if found is None:
        print(f"no order {key}", file=sys.stderr)
        return 1
    _print(found)
    return 0


async def orders_register(settings: Settings, args: argparse.Namespace) -> int:
    broker = Broker.for_settings(settings)
    await broker.connect()
    await publish_registration(broker, Registration(
        args.project_id, args.payment_id, args.product, args.flow, args.amount, args.currency))
    await broker.close()
    print(f"registered {order_id(args.project_id, args.payment_id)}")
    return 0


async def orders_poll_now(settings: Settings, project_id: str, payment_id: str) -> int:
    """Poll one order now, from this process, through the same claim and state machine."""
    client = mongo.client(settings.mongo)
    broker = Broker.for_settings(settings)
    await broker.connect()
    key = order_id(project_id, payment_id)
    try:
        async with aiohttp.ClientSession() as session:
            worker = parts.build(settings, client, broker, session)
            outcome = await worker.poller.poll_now(key)
        if outcome != "polled":
            print(f"{key}: {outcome}", file=sys.stderr)
            return 1
        _print({"polled": key, "order": await worker.store.views.find(key)})
        return 0
    finally:
        await broker.close()
        await client.close()


async def retention(settings: Settings, dry_run: bool) -> int:
    """Run the retention job once from here, or count what it would delete (--dry-run)."""
    client = mongo.client(settings.mongo)
    try:
        collections = mongo.Collections.of(client[settings.mongo.database])
        # What a TTL index expires is not the job's (MongoDB; never the local server).
        expiring = set(ttl_seconds(settings.retention, settings.poller,
                                   await mongo.is_ferretdb(client)))
        counts = await Retention(collections, settings.retention, expiring).run(
            dry_run=dry_run)
        _print({"dry_run": dry_run, "ages_days": {
            "inbox": settings.retention.inbox_days,
            "transitions": settings.retention.transitions_days,
            "polls": settings.retention.polls_days,
            "anomalies": settings.retention.anomalies_days},
            "expired_by_ttl_index": sorted(expiring),
            "would_delete" if dry_run else "deleted": counts})
        return 0
    finally:
        await client.close()


def _headers(path: Path) -> dict[str, str]:
    """A JSON object, or `Name: value` lines as captured from a request."""
    text = path.read_text("utf-8")
    try:
        raw = json.loads(text)
        return {str(k).lower(): str(v) for k, v in raw.items()}
    except ValueError:
        pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
        return {name.strip().lower(): value.strip() for name, value in pairs}


def verify(settings: Settings, args: argparse.Namespace) -> int:
    report = diagnose(Path(args.body).read_bytes(), _headers(Path(args.headers)),
                      settings.projects, args.at, settings.ingest.timestamp_tolerance_s)
    print("\n".join(report.lines))
    return 0 if report.accepted else 1


def new_key_command(args: argparse.Namespace) -> int:
    try:
        made = keys.new_key(args.kind, args.out, args.name)
    except keys.KeyFileExists as exc:
        print(f"hh-admin: {exc}", file=sys.stderr)
        return 1
    print("\n".join(made.lines()))
    return 0


async def doctor_command(settings: Settings, as_json: bool) -> int:
    checks = await doctor.run(settings)
    if as_json:
        _print([{"check": c.name, "ok": c.ok, "detail": c.detail} for c in checks])
    else:
        print("\n".join(c.line() for c in checks))
    return 0 if all(c.ok for c in checks) else 1


def show_keys(settings: Settings, as_json: bool) -> int:
    rows = keys.configured_keys(settings)
    if as_json:
        _print(rows)
    elif not rows:
        print("no cash register is configured (HH_CONFIG names none)")
    else:
        print("\n".join(f"{r['project_id']}  {r['key_id']:<20} {r['kind']:<4}  {r['use']}"
                        for r in rows))
    return 0 if rows else 1


async def dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    broker = Broker.for_settings(settings)
    await broker.connect()
    try:
        now = time.time()
        if args.action == "list":
            _print([letter.summary(now) for letter in await dlq.list_letters(broker)])
        elif args.action == "show":
            found = [d for d in await dlq.list_letters(broker) if d.message_id == args.id]
            if not found:
                print(f"no dead letter {args.id}", file=sys.stderr)
                return 1
            _print({**found[0].summary(now), "body": found[0].body.decode(errors="replace")})
        elif args.action == "redrive":
            if not (args.id or args.reason_contains or args.all):
                print("say which: --id, --reason-contains or --all", file=sys.stderr)
                return 2
            sent = await dlq.redrive(broker, dlq.matcher(args.id, args.reason_contains, args.all))
            print(f"redriven: {len(sent)}")
        elif args.action == "purge":
            if not args.yes:
                print("purge deletes every dead letter: add --yes", file=sys.stderr)
                return 2
            print(f"purged: {await dlq.purge(broker)}")
        return 0
    finally:
        await broker.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hh-admin", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    orders = sub.add_parser("orders").add_subparsers(dest="action", required=True)
    for name in ("show", "poll-now", "register"):
        p = orders.add_parser(name)
        p.add_argument("project_id")
        p.add_argument("payment_id")
        if name == "register":
            p.add_argument("--product", choices=PRODUCTS, required=True)
            p.add_argument("--flow", choices=FLOWS, required=True)
            p.add_argument("--amount", type=int)
            p.add_argument("--currency")
    v = sub.add_parser("verify")
    v.add_argument("--body", required=True, help="the alert body exactly as received")
    v.add_argument("--headers", required=True, help="JSON object or 'Name: value' lines")
    v.add_argument("--at", type=float, metavar="UNIX_TIME",
                   help="judge the timestamp window as of this time, e.g. when the alert was "
                        "captured (default: now, as the ingest would)")
    d = sub.add_parser("dlq").add_subparsers(dest="action", required=True)
    d.add_parser("list")
    d.add_parser("show").add_argument("id")
    r = d.add_parser("redrive")
    r.add_argument("--id", action="append", default=[])
    r.add_argument("--reason-contains")
    r.add_argument("--all", action="store_true")
    d.add_parser("purge").add_argument("--yes", action="store_true")
    ret = sub.add_parser("retention", help="what retention would delete, or run it now")
    mode = ret.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    mode.add_argument("--now", action="store_true", help="run the job once, now")
    k = sub.add_parser("keys", help="make the merchant's keys; list the configured ones")
    keys_sub = k.add_subparsers(dest="action", required=True)
    made = keys_sub.add_parser("new", help="write a new key (never over an existing file)")
    made.add_argument("--kind", choices=("rsa", "hmac"), required=True)
    made.add_argument("--out", type=Path, default=Path("."), help="folder (default: here)")
    made.add_argument("--name", default="merchant", help="file name prefix")
    keys_sub.add_parser("show", help="configured keys: id, kind, use").add_argument(
        "--json", action="store_true")
    sub.add_parser("doctor", help="the go-live check, one line per check").add_argument(
        "--json", action="store_true")
    return parser


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    if args.command == "keys" and args.action == "new":  # needs no config
        sys.exit(new_key_command(args))
    try:
        settings = load_settings()
    except SettingsError as exc:
        if args.command == "doctor":  # the first check, failed: said as a check says it
            print(doctor.Check("config", False, str(exc)).line())
            sys.exit(1)
        parser.exit(2, f"hh-admin: {exc}\n")
    logs.configure("console", "warning")
    sys.exit(_run(settings, args))


def _run(settings: Settings, args: argparse.Namespace) -> int:
    if args.command == "verify":
        return verify(settings, args)
    if args.command == "keys":
        return show_keys(settings, args.json)
    if args.command == "doctor":
        return asyncio.run(doctor_command(settings, args.json))
    if args.command == "dlq":
        return asyncio.run(dead_letters(settings, args))
    if args.command == "retention":
        return asyncio.run(retention(settings, args.dry_run))
    if args.action == "show":
        return asyncio.run(orders_show(settings, args.project_id, args.payment_id))
    if args.action == "register":
        return asyncio.run(orders_register(settings, args))
    return asyncio.run(orders_poll_now(settings, args.project_id, args.payment_id))


if __name__ == "__main__":
    main()
