"""`hh-sandbox`: play HighHelp offline.

    hh-sandbox serve --project-id ID --merchant-public-key F --callback-private-key F [chaos]
    hh-sandbox traffic --count 300 --rate 50      (merchant side: HH_CONFIG, via the sandbox)
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import aiohttp
from aiohttp import web

from sandbox.app import SandboxConfig, create_app
from sandbox.scenarios import DEFAULT_MIX, Chaos
from sandbox.traffic import generate
from shared import logs
from shared.broker import Broker
from shared.gateway import GatewayClient
from shared.registrar import publish_registration
from shared.settings import Settings, SettingsError, load_settings
from shared.signature import SigningKey, VerifyKey, load_signing_key, load_verify_key


def _keys(args: argparse.Namespace) -> tuple[tuple[VerifyKey, ...], SigningKey]:
    merchant = tuple(
        [load_verify_key(Path(f).read_bytes(), "rsa") for f in args.merchant_public_key]
        + [load_verify_key(Path(f).read_bytes(), "hmac") for f in args.request_hmac_key])
    if args.callback_hmac_key:
        callback = load_signing_key(Path(args.callback_hmac_key).read_bytes(), "hmac")
    else:
        callback = load_signing_key(Path(args.callback_private_key).read_bytes(), "rsa")
    return merchant, callback


def serve(args: argparse.Namespace) -> None:
    merchant, callback = _keys(args)
    mix = dict(DEFAULT_MIX)
    if args.mix:
        mix = {name: int(weight) for name, weight in
               (part.split("=") for part in args.mix.split(","))}
    config = SandboxConfig(
        merchant_keys={args.project_id: merchant}, callback_key=callback, mix=mix, seed=args.seed,
        chaos=Chaos(args.duplicate_rate, args.reorder_rate, args.drop_rate, args.step_delay,
                    args.info_failure_rate))
    web.run_app(create_app(config), host=args.host, port=args.port, access_log=None, print=None)


async def traffic(settings: Settings, args: argparse.Namespace) -> None:
    broker = Broker.for_settings(settings)
    await broker.connect()
    project = next(iter(settings.projects.values()))
    async with aiohttp.ClientSession() as session:
        client = GatewayClient(project, session,
                               register=lambda reg: publish_registration(broker, reg))
        base = (args.callback_base_url or settings.ingest.public_url
                or f"http://127.0.0.1:{settings.ingest.port}")
        created = await generate(client, args.count, args.rate, base)
    await broker.close()
    print(json.dumps({"created": len(created)}))


def main() -> None:
    parser = argparse.ArgumentParser(prog="hh-sandbox", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--project-id", required=True)
    p.add_argument("--merchant-public-key", action="append", default=[])
    p.add_argument("--request-hmac-key", action="append", default=[])
    p.add_argument("--callback-private-key")
    p.add_argument("--callback-hmac-key")
    p.add_argument("--duplicate-rate", type=float, default=0.0)
    p.add_argument("--reorder-rate", type=float, default=0.0)
    p.add_argument("--drop-rate", type=float, default=0.0)
    p.add_argument("--step-delay", type=float, default=0.2)
    p.add_argument("--info-failure-rate", type=float, default=0.0)
    p.add_argument("--mix", help="weights, e.g. success=55,decline=20,3ds=10,dispute=10,error=5")
    p.add_argument("--seed", type=int, default=1)
    t = sub.add_parser("traffic")
    t.add_argument("--count", type=int, default=100)
    t.add_argument("--rate", type=float, default=50.0)
    t.add_argument("--callback-base-url",
                   help="where the alerts go (default: ingest.public_url, else the local ingest)")
    args = parser.parse_args()
    logs.configure("console", "info")
    if args.command == "serve":
        if not (args.callback_private_key or args.callback_hmac_key):
            parser.error("serve needs --callback-private-key or --callback-hmac-key")
        serve(args)
    else:
        try:
            settings = load_settings()
        except SettingsError as exc:
            parser.exit(2, f"hh-sandbox: {exc}\n")
        asyncio.run(traffic(settings, args))


if __name__ == "__main__":
    main()
