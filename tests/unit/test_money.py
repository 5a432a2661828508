"""Amounts in minor units shown in currency units, by each currency's ISO 4217 exponent."""

from __future__ import annotations

import pytest

from shared.money import display_amount


@pytest.mark.parametrize(("amount", "currency", "shown"), [
    (150000, "RUB", "1,500.00 RUB"),
    (5, "usd", "0.05 USD"),
    (1500, "JPY", "1,500 JPY"),
    (1234, "KWD", "1.234 KWD"),
    (123456, "CLF", "12.3456 CLF"),
    (0, "EUR", "0.00 EUR"),
    (150000, None, "150000 (minor units)"),
    (150000, "<b>", "150000 <b> (minor units)"),  # shown as it came (the page escapes it)
    (None, "RUB", "? RUB"),
])
def test_amounts_are_shown_in_currency_units(amount: int | None, currency: str | None,
                                             shown: str) -> None:
    assert display_amount(amount, currency) == shown
