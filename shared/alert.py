"""The alert model: decoding a body, reading its ids and status, the idempotency key. Pure."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

FINAL_STATUSES = frozenset({"success", "decline"})
# [our choice] a null sub_status is rendered `None` in the idempotency key.
NULL_SUB_STATUS = "None"
MAX_JSON_DEPTH = 64


class InvalidAlert(ValueError):
    """The body is not an alert we can take; `reason` is a short label for logs and metrics."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # Rule: an object with a repeated key is refused. Signer and verifier could read different
    # values for it, and the signed normalization would no longer say what we store.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise InvalidAlert("duplicate_key")
    return obj


def _no_constants(name: str) -> object:
    raise InvalidAlert("non_json_number")  # NaN, Infinity: not JSON


def _depth_exceeds(value: object, limit: int) -> bool:
    """Whether containers nest deeper than `limit` (walked without recursion)."""
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[dict[str, object] | list[object], int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def decode_body(body: bytes) -> tuple[str, object]:
    """UTF-8 text and its JSON value. Invalid UTF-8, duplicate keys, NaN and nesting deeper
    than MAX_JSON_DEPTH are refused (InvalidAlert), so nothing a sender writes can crash us."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidAlert("invalid_utf8") from None
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except RecursionError:  # the C decoder stops safely at the interpreter's recursion limit
        raise InvalidAlert("too_deep") from None
    except json.JSONDecodeError:
        raise InvalidAlert("not_json") from None
    if _depth_exceeds(value, MAX_JSON_DEPTH):  # our normalizer recurses: keep it shallow
        raise InvalidAlert("too_deep")
    return text, value


def idempotency_key(project_id: str, payment_id: str, status: str, sub_status: str | None) -> str:
    sub = NULL_SUB_STATUS if sub_status is None else sub_status
    return f"{project_id}:{payment_id}:{status}:{sub}"


def order_id(project_id: str, payment_id: str) -> str:
    return f"{project_id}:{payment_id}"


def is_final(status: str) -> bool:
    return status in FINAL_STATUSES


@dataclass(frozen=True)
class Alert:
    project_id: str
    payment_id: str
    request_id: str | None
    status: str
    sub_status: str | None
    status_description: str | None
    # What the `payment` (or `payment_info`) block says, when it says it plainly; never a
    # reason to refuse an alert.
    amount: int | None = None
    currency: str | None = None

    @property
    def idempotency_key(self) -> str:
        return idempotency_key(self.project_id, self.payment_id, self.status, self.sub_status)

    @property
    def order_id(self) -> str:
        return order_id(self.project_id, self.payment_id)

    @property
    def final(self) -> bool:
        return is_final(self.status)


def _text(value: object) -> str | None:
    """An id or status field: a string, or a number written as text; anything else is absent."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, int):
        return str(value)
    return None


def _optional_text(block: dict[str, object], name: str) -> str | None:
    value = block.get(name)
    if value is None:
        return None
    text = _text(value)
    if text is None:
        raise InvalidAlert(f"bad_{name}")
    return text


_CURRENCY = re.compile(r"^[A-Z]{3}$")


def _money(value: dict[str, object]) -> tuple[int | None, str | None]:
    """Amount (minor units) and currency from the payment block, if well formed."""
    for name in ("payment", "payment_info"):
        block = value.get(name)
        if isinstance(block, dict):
            amount, currency = block.get("amount"), block.get("currency")
            return (amount if isinstance(amount, int) and not isinstance(amount, bool) else None,
                    currency if isinstance(currency, str) and _CURRENCY.match(currency)
                    else None)
    return None, None


def parse_alert(value: object) -> Alert:
    """Read the fields we rely on; every other block is kept opaque by the caller."""
    if not isinstance(value, dict):
        raise InvalidAlert("not_an_object")
    general = value.get("general")
    status = value.get("status")
    if not isinstance(general, dict):
        raise InvalidAlert("missing_general")
    if not isinstance(status, dict):
        raise InvalidAlert("missing_status")
    top_project, inner_project = _text(value.get("project_id")), _text(general.get("project_id"))
    if top_project and inner_project and top_project != inner_project:
        raise InvalidAlert("project_id_mismatch")
    project_id = top_project or inner_project
    if project_id is None:
        raise InvalidAlert("missing_project_id")
    payment_id = _text(general.get("payment_id"))
    if payment_id is None:
        raise InvalidAlert("missing_payment_id")
    status_text = _text(status.get("status"))
    if status_text is None:
        raise InvalidAlert("missing_status")
    amount, currency = _money(value)
    return Alert(
        project_id=project_id,
        payment_id=payment_id,
        request_id=_optional_text(general, "request_id"),
        status=status_text,
        sub_status=_optional_text(status, "sub_status"),
        status_description=_optional_text(status, "status_description"),
        amount=amount,
        currency=currency,
    )
