"""What an alert must pass at ingest, in the contract's order, as one pure function:

size (done by the transport while reading) -> JSON -> required fields -> known project_id
-> timestamp window -> signature.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.alert import Alert, InvalidAlert, decode_body, parse_alert
from shared.settings import ProjectSettings
from shared.signature import find_verifying_key
from shared.wire import SIGNATURE_HEADER, TIMESTAMP_HEADER

MAX_HEADER_CHARS = 2048  # a signature or timestamp longer than this is not one


@dataclass(frozen=True)
class Accepted:
    alert: Alert
    body_text: str
    timestamp: str
    key_id: str


@dataclass(frozen=True)
class Rejected:
    http_status: int  # 400, 401, 403, 408 (ingest/app.py: a body too slow) or 413
    reason: str  # a label for logs and metrics; never echoed to the sender
    alert: Alert | None = None  # the ids, when they could be read, for the log line


def _timestamp_in_window(text: str, now: float, tolerance_s: int) -> bool:
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        return False
    return abs(int(text) - now) <= tolerance_s


def verify_alert(
    body: bytes,
    headers: Mapping[str, str],
    projects: Mapping[str, ProjectSettings],
    now: float,
    tolerance_s: int,
) -> Accepted | Rejected:
    try:
        text, value = decode_body(body)
        alert = parse_alert(value)
    except InvalidAlert as exc:
        return Rejected(400, exc.reason)
    project = projects.get(alert.project_id)
    if project is None:
        return Rejected(401, "unknown_project", alert)
    timestamp = headers.get(TIMESTAMP_HEADER, "").strip()
    if not timestamp or len(timestamp) > MAX_HEADER_CHARS:
        return Rejected(401, "missing_timestamp", alert)
    if not _timestamp_in_window(timestamp, now, tolerance_s):
        return Rejected(401, "timestamp_outside_window", alert)
    signature = headers.get(SIGNATURE_HEADER, "")
    if not signature or len(signature) > MAX_HEADER_CHARS:
        return Rejected(401, "missing_signature", alert)
    key = find_verifying_key(project.callback_keys, value, timestamp, signature)
    if key is None:
        return Rejected(401, "bad_signature", alert)
    return Accepted(alert, text, timestamp, key.key_id)
