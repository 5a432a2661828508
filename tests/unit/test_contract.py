"""The broker contract's schemas: valid schemas, in step with the code's vocabulary, and met by
every kind of body the pure functions build; the session-wide check catches drift."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft7Validator

from shared.alert import Alert, InvalidAlert
from shared.contract import (
    ALERT_ENVELOPE,
    CHECK,
    EVENT_SCHEMA_VERSION,
    ORDER_EVENT,
    REGISTRATION,
    SCHEMAS,
    problems,
    schema,
    schema_for,
)
from shared.envelope import AlertEnvelope
from shared.registration import Registration, parse_registration
from shared.settings import PollerSettings
from shared.topology import CALLBACKS_EXCHANGE, CHECKS_EXCHANGE, ORDERS_EXCHANGE, REGISTER_QUEUE
from shared.wire import CALLBACK_PATHS, FLOWS, PRODUCTS
from tests import contract_check
from tests.keys import PROJECT_ID
from worker.checks import Check
from worker.records import (
    Observation,
    anomaly_record,
    order_view,
    stale_record,
    transition_record,
)


def obs(status: str, sub: str | None, t: int = 1000) -> Observation:
    return Observation(Alert(PROJECT_ID, "p-1", "r-1", status, sub, None), t, "callback", "corr")


@pytest.mark.parametrize("name", SCHEMAS)
def test_each_schema_is_a_valid_draft_draft_07_schema(name: str) -> None:
    Draft7Validator.check_schema(schema(name))


def test_schemas_use_the_codes_vocabulary() -> None:
    properties = schema(REGISTRATION)["properties"]
    assert tuple(properties["product"]["enum"]) == PRODUCTS
    assert tuple(properties["flow"]["enum"]) == FLOWS
    assert set(schema(ALERT_ENVELOPE)["properties"]["route"]["enum"]) == set(CALLBACK_PATHS)
    assert schema(ORDER_EVENT)["properties"]["schema_version"]["pattern"] == (
        f"^{EVENT_SCHEMA_VERSION.split('.')[0]}\\.[0-9]+$")


def test_messages_are_routed_to_their_schema() -> None:
    assert schema_for(ORDERS_EXCHANGE, "order.success") == ORDER_EVENT
    assert schema_for(CALLBACKS_EXCHANGE, "callback.success") == ALERT_ENVELOPE
    assert schema_for("", REGISTER_QUEUE) == REGISTRATION
    assert schema_for(CHECKS_EXCHANGE, "hh.orders.checks.wait.5000ms") == CHECK
    assert schema_for("hh.callbacks.dlx", "") is None


def test_every_kind_of_event_meets_the_schema_with_formats() -> None:
    first = transition_record(obs("processing", "new"), None, 5.0)
    second = transition_record(obs("success", None), first, 6.0)
    anomaly = anomaly_record(obs("decline", "bank", 2000), second, 7.0)
    view = order_view(first["order_id"], first, None, None, ("widget", "payin"),
                      PollerSettings())
    stale = stale_record("poll-1", view, first, 8.0)
    for record in (first, second, anomaly, stale):
        event = record["event"]
        assert event["schema_version"] == EVENT_SCHEMA_VERSION
        assert problems(ORDER_EVENT, json.loads(json.dumps(event)), formats=True) == []
    # The conditional parts: an anomaly must say what was reported; a stale order, review.
    assert problems(ORDER_EVENT, {**anomaly["event"], "reported": None})
    no_review = {k: v for k, v in stale["event"].items() if k != "needs_review"}
    assert problems(ORDER_EVENT, no_review)


def test_envelope_check_and_registration_bodies_meet_their_schemas() -> None:
    envelope = AlertEnvelope("{}", "success", "1700000000", "rsa:abc", 1.5, "corr")
    assert problems(ALERT_ENVELOPE, json.loads(envelope.to_bytes())) == []
    assert problems(CHECK, json.loads(Check(f"{PROJECT_ID}:p-1", 2, 0).to_bytes())) == []
    registration = Registration(PROJECT_ID, "p-1", "p2p", "payin", 1000, "RUB")
    assert problems(REGISTRATION, registration.as_dict()) == []


@pytest.mark.parametrize(("change", "says"), [
    ({"product": "card"}, "product"),
    ({"currency": "rub"}, "currency"),
    ({"amount": "100"}, "amount"),
    ({"payment_id": ""}, "payment_id"),
])
def test_the_worker_refuses_a_registration_the_schema_refuses(change: dict[str, object],
                                                               says: str) -> None:
    value = {**Registration(PROJECT_ID, "p-1", "p2p", "payin", None, None).as_dict(), **change}
    with pytest.raises(InvalidAlert, match=f"not a registration: {says}"):
        parse_registration(value)
    with pytest.raises(InvalidAlert, match="not a registration: \\(body\\)"):
        parse_registration([1, 2])


def test_the_session_check_catches_a_wrong_type_and_an_undeclared_field() -> None:
    event = transition_record(obs("success", None), None, 6.0)["event"]
    before = len(contract_check.FOUND)
    try:
        contract_check.check(ORDERS_EXCHANGE, "order.success",
                             json.dumps({**event, "final": "yes", "surprise": 1}).encode())
        found = contract_check.FOUND[before:]
        assert any("final" in line and "boolean" in line for line in found)
        assert any("surprise: not declared in the schema" in line for line in found)
    finally:
        del contract_check.FOUND[before:]  # deliberate drift: not the run's failure
