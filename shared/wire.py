"""HighHelp's wire vocabulary, in one place: header names, our callback paths, products and
flows, API paths, and how a signed alert or request is put on the wire (spec/highhelp.md)."""

from __future__ import annotations

import json
from typing import Any

from shared.signature import SigningKey, access_token, signing_message

# --- headers ----------------------------------------------------------------------------------
TIMESTAMP_HEADER = "x-access-timestamp"
SIGNATURE_HEADER = "x-access-signature"
MERCHANT_ID_HEADER = "x-access-merchant-id"
TOKEN_HEADER = "x-access-token"  # noqa: S105 - a header name
ALGORITHM_HEADER = "x-access-merchant-algorithm"
# [our choice] the value of x-access-merchant-algorithm: omitted for RSA, "HMAC" for HMAC.
HMAC_ALGORITHM = "HMAC"

# --- our callback endpoint: route name -> path, and the create-request field naming it -------
# A request with this header is a probe of a callback URL (`hh-admin doctor`): the ingest
# answers 200 {"status": "probe"} at once, reads nothing, publishes nothing. HighHelp never
# sends it; anyone may, to no effect.
PROBE_HEADER = "x-hh-callbacks-probe"
CALLBACK_PATHS = {
    "callback": "/callbacks/highhelp",
    "success": "/callbacks/highhelp/success",
    "decline": "/callbacks/highhelp/decline",
}
CALLBACK_URL_FIELDS = {
    "callback": "merchant_callback_url",
    "success": "merchant_success_callback_url",
    "decline": "merchant_decline_callback_url",
}

# --- products, flows and the API's paths ------------------------------------------------------
WIDGET = "widget"  # H2C: created by /api/v1/widget/payin; always a payin
PRODUCTS = ("p2p", "ecom", WIDGET)
FLOWS = ("payin", "payout")
# The spec gives /info only for these; a widget payment has no documented status endpoint.
POLLABLE_PRODUCTS = ("p2p", "ecom")
WIDGET_CREATE_PATH = "/api/v1/widget/payin"
BALANCE_PATH = "/api/v1/balance/info"


def create_path(product: str, flow: str) -> str:
    return WIDGET_CREATE_PATH if product == WIDGET else f"/api/v1/payment/{product}/{flow}"


def info_path(product: str, flow: str) -> str:
    return f"/api/v1/payment/{product}/{flow}/info"


def callback_urls(base_url: str) -> dict[str, str]:
    """The three callback URL fields of a create request, for our endpoint at `base_url`."""
    base = base_url.rstrip("/")
    return {CALLBACK_URL_FIELDS[route]: base + path for route, path in CALLBACK_PATHS.items()}


# --- signed messages --------------------------------------------------------------------------
def compact_json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def alert_headers(value: object, key: SigningKey, timestamp: int) -> dict[str, str]:
    """The headers HighHelp sends with an alert whose JSON is `value`, signed with `key`."""
    ts = str(timestamp)
    return {"Content-Type": "application/json", TIMESTAMP_HEADER: ts,
            SIGNATURE_HEADER: key.sign(signing_message(value, ts))}


def request_headers(project_id: str, key: SigningKey, value: object, timestamp: int
                    ) -> dict[str, str]:
    """The headers of a merchant request to HighHelp's API (RSA: with the access token)."""
    headers = {**alert_headers(value, key, timestamp), MERCHANT_ID_HEADER: project_id}
    if key.rsa_private is not None:
        headers[TOKEN_HEADER] = access_token(key.rsa_private.public_key())
    else:
        headers[ALGORITHM_HEADER] = HMAC_ALGORITHM
    return headers


def alert_value(
    project_id: str, payment_id: str, request_id: str | None, status: str,
    sub_status: str | None, *, status_description: str | None = None,
    payment: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An alert body shaped as HighHelp sends them (the blocks we read, and `payment`)."""
    return {
        "project_id": project_id,
        "general": {"project_id": project_id, "payment_id": payment_id, "request_id": request_id},
        "status": {"status": status, "sub_status": sub_status,
                   "status_description": status_description},
        **({"payment": payment} if payment is not None else {}),
    }
