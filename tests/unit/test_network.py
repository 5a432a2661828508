"""Source networks: the peer, or behind a trusted proxy the address it saw."""

from __future__ import annotations

from ipaddress import ip_address

from ingest.network import SourcePolicy

POLICY = SourcePolicy.parse(["203.0.113.0/24", "2001:db8::/32"], ["127.0.0.1/32", "10.0.0.0/8"])


def test_direct_peer_is_the_sender() -> None:
    assert POLICY.sender("203.0.113.7", "198.51.100.1") == ip_address("203.0.113.7")
    assert POLICY.admits(POLICY.sender("203.0.113.7", None))
    assert not POLICY.admits(POLICY.sender("198.51.100.1", None))


def test_trusted_proxy_chain_is_read_from_the_right() -> None:
    # client -> proxy 10.1.1.1 -> proxy 127.0.0.1 (our peer); the left part can be forged.
    sender = POLICY.sender("127.0.0.1", "6.6.6.6, 203.0.113.9, 10.1.1.1")
    assert sender == ip_address("203.0.113.9") and POLICY.admits(sender)
    assert not POLICY.admits(POLICY.sender("127.0.0.1", "203.0.113.9, 6.6.6.6"))


def test_broken_header_behind_a_proxy_is_refused_and_empty_allowlist_admits_all() -> None:
    assert POLICY.sender("127.0.0.1", "not-an-ip") is None
    assert not POLICY.admits(None)
    assert SourcePolicy.parse([], []).admits(ip_address("6.6.6.6"))
    assert POLICY.admits(POLICY.sender("2001:db8::1", None))
