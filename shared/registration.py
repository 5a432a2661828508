"""What the merchant backend tells us of a payment it created (queue hh.orders.register). Pure."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from shared.alert import InvalidAlert, order_id
from shared.wire import FLOWS, PRODUCTS

_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True)
class Registration:
    project_id: str
    payment_id: str
    product: str
    flow: str
    amount: int | None
    currency: str | None

    @property
    def order_id(self) -> str:
        return order_id(self.project_id, self.payment_id)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_registration(value: object) -> Registration:
    if not isinstance(value, dict):
        raise InvalidAlert("not_an_object")
    project_id, payment_id = value.get("project_id"), value.get("payment_id")
    if not isinstance(project_id, str) or not project_id:
        raise InvalidAlert("missing_project_id")
    if not isinstance(payment_id, str) or not payment_id or len(payment_id) > 255:
        raise InvalidAlert("missing_payment_id")
    product, flow = value.get("product"), value.get("flow")
    if product not in PRODUCTS:
        raise InvalidAlert("bad_product")
    if flow not in FLOWS:
        raise InvalidAlert("bad_flow")
    amount, currency = value.get("amount"), value.get("currency")
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int)):
        raise InvalidAlert("bad_amount")
    if currency is not None and not (isinstance(currency, str) and _CURRENCY.match(currency)):
        raise InvalidAlert("bad_currency")
    return Registration(project_id, payment_id, str(product), str(flow), amount, currency)

