"""Why does an alert not verify? A pure report for `hh-admin verify`, the tool a merchant
reaches for when the first real alert from HighHelp fails. It never prints key material or the
signature value, only their shapes."""

from __future__ import annotations

import binascii
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from ingest.verify import Accepted, verify_alert
from shared.alert import Alert, decode_body
from shared.settings import IngestSettings, ProjectSettings
from shared.signature import (
    OURS,
    Spelling,
    VerifyKey,
    _b64_any,
    b64url,
    normalize,
    signing_message,
    verify_with,
)
from shared.wire import SIGNATURE_HEADER, TIMESTAMP_HEADER

# Readings of the spec's gaps that another implementation may have chosen.
SPELLING_VARIANTS: dict[str, Spelling] = {
    "null written as 'null'": replace(OURS, null="null"),
    "null written as ''": replace(OURS, null=""),
    "booleans written as 'true'/'false'": replace(OURS, true="true", false="false"),
    "lines joined with ','": replace(OURS, line_separator=","),
    "lines joined with '&'": replace(OURS, line_separator="&"),
    "lines joined with ''": replace(OURS, line_separator=""),
}


@dataclass
class Report:
    accepted: bool = False  # ingest would answer 200
    verified_by: str | None = None  # the key the signature verifies with, if any
    lines: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)


def _signature_shape(signature: str) -> str:
    text = signature.strip()
    if text and all(c in "0123456789abcdefABCDEF" for c in text):
        return f"hex, {len(text) // 2} bytes"
    try:
        return f"base64/base64url, {len(_b64_any(text))} bytes"
    except (binascii.Error, ValueError):
        return f"neither hex nor base64 ({len(text)} characters)"


def _rsa_single_hash(key: VerifyKey, message: bytes, signature: str) -> bool:
    """RSA over the message itself rather than over its SHA-256 digest."""
    if key.rsa_public is None:
        return False
    try:
        key.rsa_public.verify(_b64_any(signature), message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def diagnose(
    body: bytes, headers: Mapping[str, str], projects: Mapping[str, ProjectSettings],
    now: float | None = None, tolerance_s: int = IngestSettings.timestamp_tolerance_s,
) -> Report:
    """The ingest's own verdict (`verify_alert`, the one path both use), judged at `now`
    (default: the present), then, when the signature is in question, why."""
    judged_at = time.time() if now is None else now
    verdict = verify_alert(body, headers, projects, judged_at, tolerance_s)
    report = Report()
    if isinstance(verdict, Accepted):
        report.accepted, report.verified_by = True, verdict.key_id
        report.say(_alert_line(verdict.alert))
        report.say(f"VERIFIED by {verdict.key_id}: ingest answers 200")
        return report
    alert = verdict.alert
    if alert is None:
        report.say(f"body: not an alert we accept ({verdict.reason}); ingest answers 400")
        return report
    report.say(_alert_line(alert))
    if verdict.reason == "unknown_project":
        report.say(f"project {alert.project_id} is not in the config; ingest answers 401")
        return report
    timestamp = headers.get(TIMESTAMP_HEADER, "").strip()
    signature = headers.get(SIGNATURE_HEADER, "").strip()
    if verdict.reason in ("missing_timestamp", "missing_signature"):
        missing = TIMESTAMP_HEADER if verdict.reason == "missing_timestamp" else SIGNATURE_HEADER
        report.say(f"missing header: {missing}; ingest answers 401")
        return report
    if verdict.reason == "timestamp_outside_window":
        report.say(f"{TIMESTAMP_HEADER} {timestamp!r} is outside ±{tolerance_s} s of the time "
                   f"judged ({int(judged_at)}): ingest answers 401 (a replay, a clock that is "
                   "off, or a capture judged later: --at its time); the signature, anyway:")
    else:
        report.say(f"ingest answers 401 ({verdict.reason})")
    _explain_signature(report, projects[alert.project_id], body, timestamp, signature)
    return report


def _alert_line(alert: Alert) -> str:
    return (f"alert: project {alert.project_id}, payment {alert.payment_id}, "
            f"status {alert.status}:{alert.sub_status}")


def _explain_signature(report: Report, project: ProjectSettings, body: bytes, timestamp: str,
                       signature: str) -> None:
    _text, value = decode_body(body)  # verify_alert read it already: it decodes
    normalized = normalize(value)
    message = signing_message(value, timestamp)
    report.say(f"normalized string: {normalized}")
    report.say(f"message: {message.decode()}")
    report.say(f"message sha256: {hashlib.sha256(message).hexdigest()}")
    report.say(f"signature: {_signature_shape(signature)}")
    for key in project.callback_keys:
        if verify_with(key, message, signature):
            report.verified_by = key.key_id
            report.say(f"the signature verifies with {key.key_id} ({key.algorithm})")
            return
        report.say(f"not verified by {key.key_id} ({key.algorithm})")
    report.say("no configured key verifies it; trying other readings of the scheme:")
    for key in project.callback_keys:
        found = _variants(key, value, timestamp, signature)
        for what in found:
            report.say(f"  {key.key_id} verifies it if {what}: the sender differs from us there")
    if not any(line.startswith("  ") for line in report.lines):
        report.say("  no variant verifies: most likely the key is not the one that signed "
                   "(check the cash register's callback key and algorithm), or the body was "
                   "changed after signing (a proxy re-encoding JSON, for instance)")
    report.say(f"(base64url of the normalized string begins {b64url(normalized.encode())[:24]})")


def _variants(key: VerifyKey, value: object, timestamp: str, signature: str) -> list[str]:
    found = []
    message = signing_message(value, timestamp)
    if _rsa_single_hash(key, message, signature):
        found.append("RSA signs the message itself, not its SHA-256 digest")
    if verify_with(key, signing_message(value, ""), signature):
        found.append("the timestamp is left out of the message")
    for what, spelling in SPELLING_VARIANTS.items():
        if verify_with(key, signing_message(value, timestamp, spelling), signature):
            found.append(what)
    return found
