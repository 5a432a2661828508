"""Which networks may send alerts: the peer's address, or behind a trusted proxy the address
that proxy saw. Pure."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _parse(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _within(address: Address, nets: Sequence[Network]) -> bool:
    return any(address in net for net in nets)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]
) -> Address | None:
    """The sender's address. Only a trusted proxy's X-Forwarded-For is believed, read from the
    right: the first address that is not itself a trusted proxy is the client."""
    address = _parse(peer or "")
    if address is None or not _within(address, trusted) or not forwarded_for:
        return address
    for hop in reversed(forwarded_for.split(",")):
        hop_address = _parse(hop)
        if hop_address is None:
            return None  # a forged or broken header: no address we can vouch for
        if not _within(hop_address, trusted):
            return hop_address
    return address


def allowed(address: Address | None, allow: Sequence[Network]) -> bool:
    """An empty allowlist lets everyone in; otherwise the address must be in it."""
    return not allow or (address is not None and _within(address, allow))


@dataclass(frozen=True)
class SourcePolicy:
    allow: tuple[Network, ...]
    trusted_proxies: tuple[Network, ...]

    @classmethod
    def parse(cls, allow: Sequence[str], trusted_proxies: Sequence[str]) -> SourcePolicy:
        return cls(networks(allow), networks(trusted_proxies))

    def sender(self, peer: str | None, forwarded_for: str | None) -> Address | None:
        return client_address(peer, forwarded_for, self.trusted_proxies)

    def admits(self, sender: Address | None) -> bool:
        return allowed(sender, self.allow)
