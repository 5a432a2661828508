"""Amounts as people read them. HighHelp's amounts are integers in the currency's minor units
(150000 RUB is 1,500.00 RUB); ISO 4217 gives each currency its exponent. Pure."""

from __future__ import annotations

from decimal import Decimal

DEFAULT_EXPONENT = 2  # most currencies (RUB, USD, EUR, KZT, UZS, ...)
# ISO 4217 currencies whose minor unit is not a hundredth.
EXPONENTS: dict[str, int] = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF",
                     "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
}


def exponent(currency: str) -> int:
    return EXPONENTS.get(currency.upper(), DEFAULT_EXPONENT)


def display_amount(amount: int | None, currency: str | None) -> str:
    """`150000, "RUB"` -> `1,500.00 RUB`; what is not a known amount is shown as it came."""
    if amount is None:
        return f"? {currency or ''}".strip()
    if not currency or not (currency.isascii() and currency.isalpha() and len(currency) == 3):
        return " ".join(filter(None, (str(amount), currency, "(minor units)")))
    digits = exponent(currency)
    major = Decimal(amount).scaleb(-digits)
    return f"{major:,.{digits}f} {currency.upper()}"
