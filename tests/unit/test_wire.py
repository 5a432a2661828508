"""The wire vocabulary, pinned once to the spec's spelling (everything else uses the names)."""

from __future__ import annotations

from shared import wire


def test_names_are_the_specs() -> None:
    assert (wire.TIMESTAMP_HEADER, wire.SIGNATURE_HEADER, wire.MERCHANT_ID_HEADER,
            wire.TOKEN_HEADER, wire.ALGORITHM_HEADER) == (
        "x-access-timestamp", "x-access-signature", "x-access-merchant-id", "x-access-token",
        "x-access-merchant-algorithm")
    assert wire.create_path("p2p", "payout") == "/api/v1/payment/p2p/payout"
    assert wire.create_path("widget", "payin") == "/api/v1/widget/payin"
    assert wire.info_path("ecom", "payin") == "/api/v1/payment/ecom/payin/info"
    assert wire.callback_urls("https://shop.example/") == {
        "merchant_callback_url": "https://shop.example/callbacks/highhelp",
        "merchant_success_callback_url": "https://shop.example/callbacks/highhelp/success",
        "merchant_decline_callback_url": "https://shop.example/callbacks/highhelp/decline",
    }
    assert set(wire.POLLABLE_PRODUCTS) < set(wire.PRODUCTS)
