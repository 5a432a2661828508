"""The ingest's cheap paths: the admission bound, the key tried first, the log line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.admission import LOG_EVERY_S, Admission
from shared import logs, signature
from shared.settings import SettingsError, parse_settings
from tests.keys import gateway_hmac, gateway_rsa


def test_admission_takes_places_up_to_its_bound_and_frees_them() -> None:
    admission = Admission(2)
    assert [admission.enter() for _ in range(3)] == [True, True, False]
    admission.leave()
    assert admission.enter() is True
    assert admission.in_flight == 2


def test_refusals_are_logged_once_a_second_with_their_count() -> None:
    admission = Admission(1)
    said = [admission.refusals_to_log(t) for t in (0.0, 0.1, 0.2, LOG_EVERY_S + 0.05)]
    assert said == [1, 0, 0, 3]


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(SettingsError, match="max_in_flight"):
        parse_settings({"ingest": {"max_in_flight": 0}}, Path("."), env={})


@pytest.mark.parametrize("kind", ["hmac", "rsa"])
def test_the_key_of_the_signatures_kind_is_tried_first(
    kind: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    signer = gateway_hmac() if kind == "hmac" else gateway_rsa()
    other = gateway_rsa() if kind == "hmac" else gateway_hmac()
    body, ts = {"general": {"payment_id": "p-1"}}, "1700000000"
    sig = signer.sign(signature.signing_message(body, ts))
    tried: list[str] = []
    real = signature.verify_with

    def counting(key: signature.VerifyKey, message: bytes, text: str) -> bool:
        tried.append(key.algorithm)
        return real(key, message, text)

    monkeypatch.setattr(signature, "verify_with", counting)
    keys = [other.verify_key(), signer.verify_key()]  # the other kind configured first
    found = signature.find_verifying_key(keys, body, ts, sig)
    assert found is not None and found.key_id == signer.key_id
    assert tried == [kind]
    tried.clear()
    assert signature.find_verifying_key(keys, body, ts, sig[:-4] + "AAAA") is None
    assert sorted(tried) == ["hmac", "rsa"]  # a bad signature is still tried with every key


def test_a_log_line_orjson_refuses_is_written_by_json() -> None:
    line = logs.json_line({"event": "x", "big": 2**70, "n": 1})
    assert json.loads(line) == {"event": "x", "big": 2**70, "n": 1}
    assert json.loads(logs.json_line({"event": "y", "obj": object()}, default=repr))["event"] \
        == "y"
