"""Records and events built by the worker: ids, sequence, the outbox event, the view."""

from __future__ import annotations

import json

import pytest

from shared.alert import Alert, parse_alert
from shared.envelope import AlertEnvelope, InvalidEnvelope
from shared.registration import Registration
from shared.settings import PollerSettings
from tests.keys import PROJECT_ID
from worker.records import (
    Observation,
    anomaly_record,
    order_view,
    registration_record,
    transition_record,
)


def obs(status: str, sub: str | None, t: int = 1000) -> Observation:
    return Observation(Alert(PROJECT_ID, "p-1", "r-1", status, sub, None), t, "callback", "corr")


def test_transition_sequence_and_event() -> None:
    first = transition_record(obs("processing", "new"), None, 5.0)
    second = transition_record(obs("success", None), first, 6.0)
    assert first["_id"] == f"{PROJECT_ID}:p-1:1" and second["seq"] == 2
    event = second["event"]
    assert event["previous"] == {"status": "processing", "sub_status": "new"}
    assert event["final"] is True and event["source"] == "callback"
    assert second["routing_key"] == "order.success"
    # The same step always gets the same event_id, whoever builds it and when.
    again = transition_record(obs("success", None), first, 99.0)
    assert again["event"]["event_id"] == event["event_id"]
    assert first["event"]["event_id"] != event["event_id"]


def test_anomaly_and_routing_key_of_odd_status() -> None:
    current = transition_record(obs("success", None), None, 1.0)
    anomaly = anomaly_record(obs("decline", "bank", 2000), current, 2.0)
    assert anomaly["routing_key"] == "order.anomaly"
    assert transition_record(obs("Weird.Status#", None), None, 1)["routing_key"] == (
        "order.weird_status_")


def test_anomaly_event_states_the_kept_status_and_reports_the_conflict_apart() -> None:
    """A consumer bound to order.# that forgets `type` must not settle the order the other
    way: status and final say what the order kept."""
    kept = transition_record(obs("decline", "insufficient_funds", 1000), None, 1.0)
    event = anomaly_record(obs("success", None, 2000), kept, 2.0)["event"]
    assert (event["type"], event["status"], event["sub_status"], event["final"]) == (
        "anomaly", "decline", "insufficient_funds", True)
    assert event["reported"] == {"status": "success", "sub_status": None,
                                 "status_description": None, "final": True,
                                 "gateway_time": "1970-01-01T00:33:20Z"}
    assert event["gateway_time"] == "1970-01-01T00:16:40Z" and event["previous"] is None


def test_amount_and_currency_come_from_the_alert_when_nobody_registered_them() -> None:
    alert = parse_alert({"project_id": PROJECT_ID, "general": {"payment_id": "p-1"},
                         "status": {"status": "processing", "sub_status": "new"},
                         "payment": {"amount": 150000, "currency": "RUB"}})
    first = transition_record(Observation(alert, 1000, "callback", "c"), None, 1.0)
    second = transition_record(obs("success", None), first, 2.0)  # a poll answer says no amount
    key = f"{PROJECT_ID}:p-1"
    view = order_view(key, second, None, None, ("p2p", "payin"), PollerSettings())
    assert (view["amount"], view["currency"]) == (150000, "RUB")
    reg = registration_record(Registration(PROJECT_ID, "p-1", "p2p", "payin", 99, "EUR"), 1.0)
    registered = order_view(key, second, reg, None, ("p2p", "payin"), PollerSettings())
    assert (registered["amount"], registered["currency"]) == (99, "EUR")  # registration wins
    odd = parse_alert({"project_id": PROJECT_ID, "general": {"payment_id": "p-1"},
                       "status": {"status": "processing"},
                       "payment_info": {"amount": "lots", "currency": "roubles"}})
    assert (odd.amount, odd.currency) == (None, None)  # read plainly or not at all


def test_view_from_sources() -> None:
    key = f"{PROJECT_ID}:p-1"
    empty = order_view(key, None, None, None, ("p2p", "payin"), PollerSettings())
    assert empty["status"] is None and empty["product"] == "p2p" and not empty["registered"]
    latest = transition_record(obs("success", "ok"), None, 3.0)
    reg = registration_record(Registration(PROJECT_ID, "p-1", "ecom", "payout", 100, "EUR"),
                              1.0)
    view = order_view(key, latest, reg, None, ("p2p", "payin"), PollerSettings())
    assert (view["status"], view["final"], view["product"], view["amount"]) == (
        "success", True, "ecom", 100)


def test_envelope_round_trip_and_refusal() -> None:
    env = AlertEnvelope('{"a": "ü"}', "success", "17", "rsa:abc", 1.5, "c")
    assert AlertEnvelope.from_bytes(env.to_bytes()) == env
    for bad in (b"{}", b"[]", b"nope", json.dumps({"v": 1, "body": 3}).encode()):
        with pytest.raises(InvalidEnvelope):
            AlertEnvelope.from_bytes(bad)


def test_observation_from_alert_uses_signed_timestamp() -> None:
    alert = parse_alert({"project_id": PROJECT_ID, "general": {"payment_id": "p-1"},
                         "status": {"status": "processing", "sub_status": "new"}})
    env = AlertEnvelope("{}", "callback", "1706182847", "k", 1.0, "corr")
    assert Observation.from_alert(alert, env).gateway_time == 1706182847
