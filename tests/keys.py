"""Test keys and signing helpers (the vectors' keys: made by an independent implementation)."""

from __future__ import annotations

import json
import time
from functools import cache
from pathlib import Path
from typing import Any

from shared.signature import SigningKey, load_signing_key
from shared.wire import SIGNATURE_HEADER, alert_headers, alert_value, compact_json

DATA = Path(__file__).parent / "data"
PROJECT_ID = "57aff4db-b45d-42bf-bc5f-b7a499a01782"


@cache
def vectors() -> dict[str, Any]:
    return json.loads((DATA / "vectors.json").read_text("utf-8"))  # type: ignore[no-any-return]


def key_pem(name: str) -> bytes:
    return vectors()["keys"][name].encode()


@cache
def gateway_rsa() -> SigningKey:
    return load_signing_key(key_pem("gateway_callback_private_key_pkcs8"), "rsa")


@cache
def gateway_hmac() -> SigningKey:
    return load_signing_key(key_pem("callback_hmac_key"), "hmac")


@cache
def merchant_rsa() -> SigningKey:
    return load_signing_key(key_pem("merchant_request_private_key_pkcs8"), "rsa")


# Every signature the tests make, so that the run can check none reached a log line.
SIGNATURES_MADE: set[str] = set()


def signed_headers(body: bytes, key: SigningKey, timestamp: int | None = None) -> dict[str, str]:
    headers = alert_headers(json.loads(body), key,
                            int(time.time()) if timestamp is None else timestamp)
    SIGNATURES_MADE.add(headers[SIGNATURE_HEADER])
    return headers


def alert_body(
    payment_id: str = "order-1001",
    status: str = "processing",
    sub_status: str | None = "new",
    project_id: str = PROJECT_ID,
    **extra: Any,
) -> bytes:
    value = alert_value(project_id, payment_id, "req-1", status, sub_status,
                        payment={"method": "card-p2p", "amount": 150000, "currency": "RUB"})
    return compact_json({**value, **extra})
