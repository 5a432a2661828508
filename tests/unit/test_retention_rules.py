"""Which records the server may expire by itself (TTL indexes) and which the job keeps to."""

from __future__ import annotations

from shared.settings import PollerSettings, RetentionSettings
from worker.retention import ttl_seconds


def test_ttl_indexes_only_where_the_server_expires_and_every_old_order_has_settled() -> None:
    ages = RetentionSettings(inbox_days=35, polls_days=2, anomalies_days=40)
    poller = PollerSettings(give_up_after_s=3 * 86400)
    assert ttl_seconds(ages, poller, ferretdb=True) == {}  # FerretDB 1.x never expires
    # Polls younger than the give-up horizon may belong to an order still being polled.
    assert ttl_seconds(ages, poller, ferretdb=False) == {
        "callbacks": 35 * 86400, "anomalies": 40 * 86400}
    off = PollerSettings(enabled=False)
    assert ttl_seconds(ages, off, ferretdb=False) == {}  # nothing gives up: nothing is settled
