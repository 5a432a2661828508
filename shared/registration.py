"""What the merchant backend tells us of a payment it created (queue hh.orders.register). Pure."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from shared.alert import InvalidAlert, order_id
from shared.contract import REGISTRATION, problems


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
    """A registration from its JSON value, checked against the contract's schema (the one
    docs/asyncapi.yaml documents and the sandbox's registrations are checked against)."""
    found = problems(REGISTRATION, value)
    if found:
        raise InvalidAlert(f"not a registration: {found[0]}")
    assert isinstance(value, dict)
    return Registration(value["project_id"], value["payment_id"], value["product"],
                        value["flow"], value.get("amount"), value.get("currency"))
