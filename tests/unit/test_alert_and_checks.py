"""The alert model and ingest's checks, in the contract's order, without any I/O."""

from __future__ import annotations

import json

import pytest

from ingest.verify import Accepted, Rejected, verify_alert
from shared.alert import InvalidAlert, decode_body, idempotency_key, parse_alert
from shared.settings import ProjectSettings
from shared.signature import load_verify_key
from shared.wire import SIGNATURE_HEADER, TIMESTAMP_HEADER
from tests.keys import PROJECT_ID, alert_body, gateway_hmac, gateway_rsa, key_pem, signed_headers

NOW = 1_800_000_000
PROJECTS = {
    PROJECT_ID: ProjectSettings(
        PROJECT_ID,
        (
            load_verify_key(key_pem("gateway_callback_public_key_spki"), "rsa"),
            load_verify_key(key_pem("callback_hmac_key"), "hmac"),
        ),
    )
}


def check(body: bytes, headers: dict[str, str]) -> Accepted | Rejected:
    return verify_alert(body, headers, PROJECTS, NOW, 300)


def test_signed_alert_is_accepted_with_its_key_id() -> None:
    body = alert_body()
    result = check(body, signed_headers(body, gateway_rsa(), NOW))
    assert isinstance(result, Accepted)
    assert result.key_id == gateway_rsa().key_id
    assert result.alert.idempotency_key == f"{PROJECT_ID}:order-1001:processing:new"
    assert result.body_text == body.decode()


def test_hmac_alert_is_accepted_beside_rsa_key() -> None:
    body = alert_body()
    result = check(body, signed_headers(body, gateway_hmac(), NOW))
    assert isinstance(result, Accepted) and result.key_id.startswith("hmac:")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not_json"),
        (b"[1,2]", "not_an_object"),
        (b"\xff\xfe{}", "invalid_utf8"),
        (b'{"a":1,"a":2}', "duplicate_key"),
        (b'{"a": NaN}', "non_json_number"),
        (b"[" * 100 + b"]" * 100, "too_deep"),
        (json.dumps({"general": {"payment_id": "x"}, "status": {"status": "s"}}).encode(),
         "missing_project_id"),
        (json.dumps({"project_id": PROJECT_ID, "general": {}, "status": {"status": "s"}}).encode(),
         "missing_payment_id"),
        (json.dumps({"project_id": PROJECT_ID, "general": {"payment_id": "p"},
                     "status": {"sub_status": "x"}}).encode(), "missing_status"),
        (json.dumps({"project_id": PROJECT_ID, "general": {"payment_id": "p",
                     "project_id": "other"}, "status": {"status": "s"}}).encode(),
         "project_id_mismatch"),
    ],
)
def test_malformed_bodies_get_400(body: bytes, reason: str) -> None:
    assert check(body, {}) == Rejected(400, reason)


def test_unknown_project_is_401_before_signature() -> None:
    body = alert_body(project_id="11111111-2222-3333-4444-555555555555")
    result = check(body, signed_headers(body, gateway_rsa(), NOW))
    assert isinstance(result, Rejected) and (result.http_status, result.reason) == (
        401, "unknown_project")


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b, h: (b.replace(b"150000", b"150001"), h), "bad_signature"),
        (lambda b, h: (b, {**h, TIMESTAMP_HEADER: str(NOW - 1)}), "bad_signature"),
        (lambda b, h: (b, {k: v for k, v in h.items() if k != SIGNATURE_HEADER}),
         "missing_signature"),
        (lambda b, h: (b, {k: v for k, v in h.items() if k != TIMESTAMP_HEADER}),
         "missing_timestamp"),
        (lambda b, h: (b, {**h, TIMESTAMP_HEADER: "12ab"}), "timestamp_outside_window"),
    ],
)
def test_tampering_is_401(mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    body = alert_body()
    body, headers = mutate(body, signed_headers(body, gateway_rsa(), NOW))
    result = check(body, headers)
    assert isinstance(result, Rejected) and (result.http_status, result.reason) == (401, reason)


@pytest.mark.parametrize("skew", [-301, 301, -10_000])
def test_timestamp_window_both_directions(skew: int) -> None:
    body = alert_body()
    result = check(body, signed_headers(body, gateway_rsa(), NOW + skew))
    assert isinstance(result, Rejected) and result.reason == "timestamp_outside_window"


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_timestamp_window_edges_pass(skew: int) -> None:
    body = alert_body()
    assert isinstance(check(body, signed_headers(body, gateway_rsa(), NOW + skew)), Accepted)


def test_wrong_key_is_401() -> None:
    from tests.keys import merchant_rsa

    body = alert_body()
    result = check(body, signed_headers(body, merchant_rsa(), NOW))
    assert isinstance(result, Rejected) and result.reason == "bad_signature"


def test_null_sub_status_key_and_general_project_only() -> None:
    value = {"general": {"project_id": "p", "payment_id": 42}, "status": {"status": "decline"}}
    alert = parse_alert(value)
    assert alert.idempotency_key == "p:42:decline:None"
    assert idempotency_key("p", "42", "decline", None) == "p:42:decline:None"
    assert alert.final


def test_unknown_blocks_are_kept_opaque() -> None:
    text, value = decode_body(alert_body(acs_info={"url": "https://x", "params": [1, {"a": None}]}))
    assert parse_alert(value).status == "processing"
    assert "acs_info" in text


def test_non_text_sub_status_is_refused() -> None:
    with pytest.raises(InvalidAlert):
        parse_alert({"project_id": "p", "general": {"payment_id": "x"},
                     "status": {"status": "processing", "sub_status": {"a": 1}}})
