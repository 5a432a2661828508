"""The message ingest hands to the worker: the alert exactly as received, plus what ingest knew."""

from __future__ import annotations

import json
from dataclasses import dataclass

import orjson

ENVELOPE_VERSION = 1


class InvalidEnvelope(ValueError):
    pass


@dataclass(frozen=True)
class AlertEnvelope:
    body: str  # the alert body as received, bytes-for-bytes (it was valid UTF-8)
    route: str  # "callback" | "success" | "decline"
    timestamp: str  # the x-access-timestamp header that was signed
    key_id: str  # the id of the key that verified the alert
    received_at: float  # Unix time at ingest
    correlation_id: str

    def to_bytes(self) -> bytes:
        # Field by field rather than dataclasses.asdict, which deep-copies: once per alert.
        return orjson.dumps({
            "v": ENVELOPE_VERSION, "body": self.body, "route": self.route,
            "timestamp": self.timestamp, "key_id": self.key_id, "received_at": self.received_at,
            "correlation_id": self.correlation_id})

    @classmethod
    def from_bytes(cls, data: bytes) -> AlertEnvelope:
        try:
            raw = json.loads(data)
            if raw.pop("v") != ENVELOPE_VERSION:
                raise InvalidEnvelope("unknown envelope version")
            envelope = cls(**raw)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InvalidEnvelope(f"bad envelope: {type(exc).__name__}") from None
        if not all(isinstance(getattr(envelope, name), str) for name in
                   ("body", "route", "timestamp", "key_id", "correlation_id")):
            raise InvalidEnvelope("bad envelope: field types")
        return envelope

    @property
    def gateway_time(self) -> int:
        """The signed timestamp is the gateway's time for the status it reports."""
        return int(self.timestamp)
