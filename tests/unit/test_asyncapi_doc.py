"""docs/asyncapi.yaml says what the code declares and publishes: exchange names and types,
queue names, routing keys, and the schema files the code validates against. (The AsyncAPI
CLI validates the document itself: `make lint`.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from shared.contract import SCHEMAS
from shared.topology import (
    CALLBACKS_EXCHANGE,
    CHECKS_EXCHANGE,
    IDEMPOTENCY_HEADER,
    ORDERS_EXCHANGE,
    PROCESS_QUEUE,
    REGISTER_QUEUE,
    callback_routing_key,
    contract_topology,
    event_routing_key,
    wait_queue,
)

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
DOC: dict[str, Any] = yaml.safe_load(DOC_PATH.read_text())


def test_every_exchange_and_queue_named_in_the_document_is_declared_as_documented() -> None:
    topology = contract_topology(20, (5,), (300.0,))
    exchanges = {e.name: e.type.value for e in topology.exchanges}
    queues = {q.name for q in topology.queues}
    for name, channel in DOC["channels"].items():
        amqp = channel["bindings"]["amqp"]
        if amqp["is"] == "routingKey":
            exchange = amqp["exchange"]
            assert exchanges.get(exchange["name"]) == exchange["type"], name
            assert exchange["durable"] is True
        else:
            assert amqp["queue"]["name"] in queues and amqp["queue"]["name"] == channel["address"]


def test_routing_keys_in_the_document_are_the_codes() -> None:
    channels = DOC["channels"]
    assert channels["orderEvents"]["address"].replace("{status}", "success") == (
        event_routing_key("success"))
    assert channels["verifiedAlerts"]["address"].replace("{status}", "success") == (
        callback_routing_key("success"))
    assert channels["staleChecks"]["address"].replace("{delay}", "300000ms") == wait_queue(300)
    assert {channels[c]["bindings"]["amqp"]["exchange"]["name"]
            for c in ("orderEvents", "orderAnomaly", "orderStale")} == {ORDERS_EXCHANGE}
    assert channels["verifiedAlerts"]["bindings"]["amqp"]["exchange"]["name"] == CALLBACKS_EXCHANGE
    assert channels["staleChecks"]["bindings"]["amqp"]["exchange"]["name"] == CHECKS_EXCHANGE
    assert channels["registrations"]["address"] == REGISTER_QUEUE
    assert channels["processQueue"]["address"] == PROCESS_QUEUE


def test_payloads_are_the_schema_files_the_code_validates_against() -> None:
    refs = {message["payload"]["$ref"] for message in DOC["components"]["messages"].values()}
    assert refs == {f"../shared/schemas/{name}.json" for name in SCHEMAS}
    for ref in refs:
        assert (DOC_PATH.parent / ref).is_file()
    headers = DOC["components"]["schemas"]["eventHeaders"]["properties"]
    assert IDEMPOTENCY_HEADER in headers
