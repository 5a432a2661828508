"""`hh-admin verify`'s diagnosis names what differs, and never prints secrets."""

from __future__ import annotations

import json

from ingest.diagnose import diagnose
from shared.settings import ProjectSettings
from shared.signature import Spelling, load_verify_key, sign_hmac, signing_message
from shared.wire import SIGNATURE_HEADER, TIMESTAMP_HEADER
from tests.keys import PROJECT_ID, gateway_hmac, key_pem, vectors

PROJECTS = {PROJECT_ID: ProjectSettings(PROJECT_ID, (
    load_verify_key(key_pem("gateway_callback_public_key_spki"), "rsa"),
    load_verify_key(key_pem("callback_hmac_key"), "hmac"),
))}
TS = str(vectors()["timestamp"])


def headers(signature: str, ts: str = TS) -> dict[str, str]:
    return {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: signature}


def test_good_alert_names_its_key() -> None:
    case = vectors()["cases"][1]
    report = diagnose(case["raw_body"].encode(), headers(case["rsa_signature_by_gateway_key"]),
                      PROJECTS)
    assert report.verified_by is not None and report.verified_by.startswith("rsa:")
    assert any(line.startswith("normalized string: ") for line in report.lines)


def test_single_hash_signature_is_recognised() -> None:
    [case] = [c for c in vectors()["negative_cases"] if "single-hash" in c["why"]]
    report = diagnose(case["raw_body"].encode(), headers(case["signature"]), PROJECTS)
    assert report.verified_by is None
    assert any("not its SHA-256 digest" in line for line in report.lines)
    assert case["signature"] not in "\n".join(report.lines)


def test_other_spelling_of_null_is_recognised() -> None:
    body = vectors()["cases"][1]["raw_body"]
    message = signing_message(json.loads(body), TS, Spelling(null="null"))
    secret = gateway_hmac().hmac_secret
    assert secret is not None
    signature = sign_hmac(secret, message)
    report = diagnose(body.encode(), headers(signature), PROJECTS)
    assert report.verified_by is None
    assert any("null written as 'null'" in line for line in report.lines)
    text = "\n".join(report.lines)
    assert signature not in text and secret.decode() not in text


def test_tampered_body_has_no_variant_and_says_so() -> None:
    [case] = [c for c in vectors()["negative_cases"] if "amount" in c["why"]]
    report = diagnose(case["raw_body"].encode(), headers(case["signature"]), PROJECTS)
    assert report.verified_by is None
    assert any("no variant verifies" in line for line in report.lines)


def test_unknown_project_and_bad_body() -> None:
    assert "not in the config" in diagnose(
        b'{"project_id":"x","general":{"payment_id":"p"},"status":{"status":"s"}}',
        headers("x"), PROJECTS).lines[-1]
    assert "400" in diagnose(b"[]", {}, PROJECTS).lines[0]


def test_the_verdict_is_the_ingests_own_timestamp_window_included() -> None:
    """`hh-admin verify` judges as the ingest does (verify_alert): a well-signed alert whose
    timestamp is outside the window would be refused, and is said so; judged at its time
    (--at), it is accepted."""
    case = vectors()["cases"][1]
    body, signed = case["raw_body"].encode(), headers(case["rsa_signature_by_gateway_key"])
    late = diagnose(body, signed, PROJECTS, now=int(TS) + 301)
    assert not late.accepted and late.verified_by is not None
    assert any("outside ±300 s" in line for line in late.lines)
    on_time = diagnose(body, signed, PROJECTS, now=int(TS) + 299)
    assert on_time.accepted and on_time.verified_by == late.verified_by
    assert on_time.lines[-1].endswith("ingest answers 200")
