"""Local development kit: make test keys and a sample config, and POST signed sample alerts.

    python deploy/devkit.py init [DIR] [--sandbox-port 8090]
                                              keys + config.toml in DIR (default .run), once
    python deploy/devkit.py sandbox [DIR]     run hh-sandbox as the config's HighHelp, with
                                              the dev kit's keys (make run starts it)
    python deploy/devkit.py send [--route success] [--status success] [--sub-status ...]
                                 [--payment-id ID] [--url http://127.0.0.1:8080]
The keys are for local use only: the "gateway" private key stands in for HighHelp's.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import NoReturn

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.signature import load_signing_key
from shared.wire import CALLBACK_PATHS, alert_headers, alert_value, compact_json

PROJECT_ID = "57aff4db-b45d-42bf-bc5f-b7a499a01782"

CONFIG = """# Local development config, made by deploy/devkit.py. Keys here are test keys.
[amqp]
url = "amqp://guest:guest@127.0.0.1:5672/"
[mongo]
url = "mongodb://127.0.0.1:27017"
database = "hh_callbacks"
[ingest]
host = "127.0.0.1"
port = 8080
public_url = "http://127.0.0.1:8080"  # as the sandbox reaches the ingest (hh-admin doctor)
[worker]
host = "127.0.0.1"
port = 8081
[log]
format = "console"

[[projects]]
project_id = "{project_id}"
callback_public_keys = ["gateway_callback_public.pem"]
callback_hmac_keys = ["gateway_callback_hmac.txt"]
api_base_url = "http://127.0.0.1:{sandbox_port}"  # the sandbox plays HighHelp
merchant_private_key = "merchant_private.pem"
"""


def _private_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _public_pem(private_pem: bytes) -> bytes:
    public = load_signing_key(private_pem, "rsa").rsa_private.public_key()  # type: ignore[union-attr]
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo)


def init(folder: Path, sandbox_port: int = 8090) -> None:
    if (folder / "config.toml").exists():
        print(f"{folder}/config.toml exists; keeping it")
        _add_merchant_public(folder)  # a folder made before the sandbox ran with make run
        return
    folder.mkdir(parents=True, exist_ok=True)
    gateway = _private_pem()
    files = {
        "gateway_callback_private.pem": gateway,
        "gateway_callback_public.pem": _public_pem(gateway),
        "gateway_callback_hmac.txt": secrets.token_hex(24).encode() + b"\n",
        "merchant_private.pem": _private_pem(),
        "config.toml": CONFIG.format(project_id=PROJECT_ID, sandbox_port=sandbox_port).encode(),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
        (folder / name).chmod(0o600)
    _add_merchant_public(folder)
    print(f"wrote test keys and {folder}/config.toml")


def _add_merchant_public(folder: Path) -> None:
    """The sandbox checks our requests with the merchant key's public half."""
    public = folder / "merchant_public.pem"
    if not public.exists():
        public.write_bytes(_public_pem((folder / "merchant_private.pem").read_bytes()))


def sandbox(folder: Path) -> NoReturn:
    """Become `hh-sandbox serve` on the port of the config's api_base_url, with our keys."""
    config = tomllib.loads((folder / "config.toml").read_text("utf-8"))
    project = config["projects"][0]
    port = urllib.parse.urlsplit(project["api_base_url"]).port or 8090
    os.execv(sys.executable, [  # noqa: S606 - our own interpreter, our own arguments
        sys.executable, "-m", "sandbox", "serve", "--port", str(port),
        "--project-id", project["project_id"],
        "--merchant-public-key", str(folder / "merchant_public.pem"),
        "--callback-private-key", str(folder / "gateway_callback_private.pem")])


def send(args: argparse.Namespace) -> int:
    key = load_signing_key((Path(args.dir) / "gateway_callback_private.pem").read_bytes(), "rsa")
    value = alert_value(PROJECT_ID, args.payment_id, str(uuid.uuid4()), args.status,
                        args.sub_status,
                        payment={"method": "card-p2p", "amount": 150000, "currency": "RUB"})
    request = urllib.request.Request(  # noqa: S310 - a local URL given by the developer
        args.url.rstrip("/") + CALLBACK_PATHS[args.route], data=compact_json(value),
        method="POST", headers=alert_headers(value, key, int(time.time())))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            print(response.status, response.read().decode())
            return 0
    except urllib.error.HTTPError as exc:
        print(exc.code, exc.read().decode())
        return 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_init = sub.add_parser("init")
    p_init.add_argument("dir", nargs="?", default=".run")
    p_init.add_argument("--sandbox-port", type=int, default=8090)
    p_sandbox = sub.add_parser("sandbox")
    p_sandbox.add_argument("dir", nargs="?", default=".run")
    p_send = sub.add_parser("send")
    # The defaults follow make run's: its folder and the ingest's port, as run-local.sh reads them.
    p_send.add_argument("--dir", default=os.environ.get("HH_RUN_DIR", ".run"))
    p_send.add_argument("--url", default="http://127.0.0.1:"
                        + os.environ.get("HH_INGEST_PORT", "8080"))
    p_send.add_argument("--route", choices=sorted(CALLBACK_PATHS), default="callback")
    p_send.add_argument("--status", default="processing")
    p_send.add_argument("--sub-status", default="new")
    p_send.add_argument("--payment-id", default=f"demo-{uuid.uuid4().hex[:8]}")
    args = parser.parse_args()
    if args.command == "init":
        init(Path(args.dir), args.sandbox_port)
        return 0
    if args.command == "sandbox":
        sandbox(Path(args.dir))
    if args.sub_status in ("", "null", "None"):
        args.sub_status = None
    return send(args)


if __name__ == "__main__":
    sys.exit(main())
