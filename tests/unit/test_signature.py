"""The signature scheme against the independent implementation's vectors, and its edges."""

from __future__ import annotations

import base64
import json

import pytest

from shared.signature import (
    access_token,
    b64url,
    find_verifying_key,
    load_signing_key,
    load_verify_key,
    normalize,
    sign_hmac,
    signing_message,
    verify_hmac,
    verify_rsa,
)
from tests.keys import key_pem, vectors

CASES = vectors()["cases"]
TS = str(vectors()["timestamp"])


def rsa_public(name: str = "gateway_callback_public_key_spki"):  # type: ignore[no-untyped-def]
    key = load_verify_key(key_pem(name), "rsa")
    assert key.rsa_public is not None
    return key.rsa_public


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_normalized_and_message_match_vectors(case: dict[str, str]) -> None:
    body = json.loads(case["raw_body"])
    assert normalize(body) == case["normalized"]
    assert signing_message(body, TS).decode() == case["message"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
@pytest.mark.parametrize(
    "public", ["gateway_callback_public_key_spki", "gateway_callback_public_key_pkcs1"]
)
def test_gateway_rsa_signature_verifies(case: dict[str, str], public: str) -> None:
    message = case["message"].encode()
    assert verify_rsa(rsa_public(public), message, case["rsa_signature_by_gateway_key"])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
@pytest.mark.parametrize(
    "private", ["gateway_callback_private_key_pkcs8", "gateway_callback_private_key_pkcs1"]
)
def test_our_rsa_signature_is_the_vectors(case: dict[str, str], private: str) -> None:
    # PKCS#1 v1.5 is deterministic, so equal bytes prove the same scheme.
    key = load_signing_key(key_pem(private), "rsa")
    assert key.sign(case["message"].encode()) == case["rsa_signature_by_gateway_key"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_merchant_request_signatures_match(case: dict[str, str]) -> None:
    key = load_signing_key(key_pem("merchant_request_private_key_pkcs8"), "rsa")
    assert key.sign(case["message"].encode()) == case["rsa_signature_by_merchant_key"]
    hmac_key = load_signing_key(key_pem("request_hmac_key"), "hmac")
    assert hmac_key.sign(case["message"].encode()) == case["hmac_sha512_hex_by_request_key"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_hmac_matches_and_accepts_base64_forms(case: dict[str, str]) -> None:
    key = load_verify_key(key_pem("callback_hmac_key"), "hmac")
    assert key.hmac_secret is not None
    message = case["message"].encode()
    hex_mac = case["hmac_sha512_hex_by_callback_key"]
    assert sign_hmac(key.hmac_secret, message) == hex_mac
    raw = bytes.fromhex(hex_mac)
    for form in (hex_mac, hex_mac.upper(), base64.b64encode(raw).decode(), b64url(raw)):
        assert verify_hmac(key.hmac_secret, message, form)
    assert not verify_hmac(key.hmac_secret, message, hex_mac[:-2] + "00")


def test_hmac_key_text_is_stripped() -> None:
    a = load_verify_key(b"  secret-key\n", "hmac")
    b = load_verify_key(b"secret-key", "hmac")
    assert a.hmac_secret == b.hmac_secret == b"secret-key" and a.key_id == b.key_id


@pytest.mark.parametrize("case", vectors()["negative_cases"], ids=lambda c: c["why"])
def test_negative_cases_fail(case: dict[str, object]) -> None:
    keys = [
        load_verify_key(key_pem("gateway_callback_public_key_spki"), "rsa"),
        load_verify_key(key_pem("callback_hmac_key"), "hmac"),
    ]
    body = json.loads(str(case["raw_body"]))
    assert find_verifying_key(keys, body, str(case["timestamp"]), str(case["signature"])) is None


def test_access_token_matches_vectors() -> None:
    key = load_signing_key(key_pem("merchant_request_private_key_pkcs8"), "rsa")
    assert key.rsa_private is not None
    assert access_token(key.rsa_private.public_key()) == vectors()["merchant_access_token"]


def test_find_verifying_key_names_the_key_that_matched() -> None:
    case = CASES[1]
    other = load_verify_key(key_pem("merchant_request_public_key_spki"), "rsa")
    gateway = load_verify_key(key_pem("gateway_callback_public_key_pkcs1"), "rsa")
    body = json.loads(case["raw_body"])
    found = find_verifying_key([other, gateway], body, TS, case["rsa_signature_by_gateway_key"])
    assert found is gateway
    assert found.key_id.startswith("rsa:") and found.key_id != other.key_id


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": 1.0}, "a:1"),
        ({"a": 1.5}, "a:1.5"),
        ({"a": None, "b": True, "c": False}, "a:None;b:1;c:0"),
        ({"a": {}, "b": []}, ""),
        ({"b": [{"c": 1}], "a": "x"}, "a:x;b:0:c:1"),
    ],
)
def test_normalize_edges(value: object, expected: str) -> None:
    assert normalize(value) == expected


def test_key_errors_do_not_echo_material() -> None:
    from shared.signature import KeyLoadError

    secret = b"-----BEGIN PUBLIC KEY-----\nTOPSECRETMATERIAL\n-----END PUBLIC KEY-----\n"
    with pytest.raises(KeyLoadError) as info:
        load_verify_key(secret, "rsa")
    assert "TOPSECRET" not in str(info.value)
    assert "TOPSECRET" not in repr(load_verify_key(b"TOPSECRET", "hmac"))
