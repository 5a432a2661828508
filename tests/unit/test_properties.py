"""Property-based tests (hypothesis) of the normalizer, the verifier and ingest's checks."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.verify import Accepted, Rejected, verify_alert
from shared.alert import InvalidAlert, decode_body
from shared.settings import ProjectSettings
from shared.signature import find_verifying_key, normalize, signing_message
from shared.wire import SIGNATURE_HEADER, TIMESTAMP_HEADER
from tests.keys import PROJECT_ID, gateway_hmac

KEYS = (gateway_hmac().verify_key(),)
PROJECTS = {PROJECT_ID: ProjectSettings(PROJECT_ID, KEYS)}
TS = "1800000000"

scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.floats(
    allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=25,
)


@given(json_values)
def test_normalize_is_total_and_deterministic(value: object) -> None:
    text = normalize(value)
    assert isinstance(text, str)
    assert normalize(json.loads(json.dumps(value))) == text  # the same value, the same string


def sign(body: bytes) -> str:
    return gateway_hmac().sign(signing_message(json.loads(body), TS))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=8), json_values, min_size=1, max_size=5), st.data())
def test_a_changed_byte_verifies_only_if_the_signed_content_is_unchanged(
    value: dict[str, object], data: st.DataObject,
) -> None:
    body = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    signature = sign(body)
    position = data.draw(st.integers(0, len(body) - 1))
    replacement = data.draw(st.integers(0, 255).filter(lambda b: b != body[position]))
    changed = body[:position] + bytes([replacement]) + body[position + 1:]
    try:
        _text, new_value = decode_body(changed)
    except InvalidAlert:
        return  # refused before any signature check
    verified = find_verifying_key(KEYS, new_value, TS, signature) is not None
    # Whitespace or an equal spelling of a number may change bytes but not the signed content.
    assert verified == (normalize(new_value) == normalize(value))


@settings(max_examples=300)
@given(st.binary(max_size=300), st.dictionaries(
    st.sampled_from([TIMESTAMP_HEADER, SIGNATURE_HEADER, "content-type"]),
    st.text(max_size=40)))
def test_random_bodies_and_headers_get_400_or_401(body: bytes, headers: dict[str, str]) -> None:
    result = verify_alert(body, headers, PROJECTS, 1800000000, 300)
    assert isinstance(result, Rejected) and result.http_status in (400, 401)


@settings(max_examples=200)
@given(json_values, st.text(max_size=30))
def test_alert_shaped_bodies_never_get_past_a_bad_signature(extra: object, sig: str) -> None:
    body = json.dumps({"project_id": PROJECT_ID, "general": {"payment_id": "p"},
                       "status": {"status": "success"}, "extra": extra}).encode()
    result = verify_alert(body, {TIMESTAMP_HEADER: TS, SIGNATURE_HEADER: sig},
                         PROJECTS, 1800000000, 300)
    assert not isinstance(result, Accepted) or sig == sign(body)
