"""The ingest's cheap paths: the admission bound, the key tried first, the log line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.admission import LOG_EVERY_S, Admission, whole_alert_request
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


BODY = b'{"general": {"project_id": "p"}}'


def request(path: str = "/callbacks/highhelp", headers: str = "", body: bytes = BODY,
            length: int | None = None, version: str = "HTTP/1.1") -> bytes:
    length = len(body) if length is None else length
    return (f"POST {path} {version}\r\nHost: ingest\r\nContent-Type: application/json\r\n"
            f"{headers}Content-Length: {length}\r\n\r\n").encode() + body


def test_a_whole_alert_request_is_recognised_by_its_route() -> None:
    assert whole_alert_request(request()) == "callback"
    assert whole_alert_request(request("/callbacks/highhelp/decline")) == "decline"
    assert whole_alert_request(request().replace(b"Content-Length", b"content-LENGTH")) == (
        "callback")


@pytest.mark.parametrize("data", [
    request()[:-1],  # the body not all here yet
    request()[:40],  # the headers not all here yet
    request() + request(),  # pipelined: aiohttp answers them in order
    request(length=len(BODY) - 1),
    request(headers="Content-Length: 3\r\n"),  # two lengths
    request(headers="Transfer-Encoding: chunked\r\n"),
    request(headers="Expect: 100-continue\r\n"),
    request(headers="Connection: close\r\n"),
    request(headers="X-HH-Callbacks-Probe: 1\r\n"),  # a probe is answered even when full
    request(length=-1), request().replace(b"Content-Length: 32", b"Content-Length: 3 2"),
    request().replace(b"Content-Length: 32", b"Content-Length: " + b"9" * 5000),  # no int()
    request("/callbacks/highhelp?x=1"), request("/healthz"), request(version="HTTP/1.0"),
    request().replace(b"POST", b"GET"), b"", b"\r\n\r\n",
])
def test_anything_else_goes_the_long_way_through_aiohttp(data: bytes) -> None:
    assert whole_alert_request(data) is None


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
