"""Failed sign-ins slow down whoever makes them, without letting anyone lock out an operator for
long. Pure: the caller passes the time.

Three counts of failures, each forgotten after FORGET_AFTER_S without a new one:
- a name from one address: after a few failures, each further one waits twice as long as the
  last (1, 2, 4 ... s) up to a minute: a guesser at one operator's password gets about one
  guess a minute against a scrypt hash;
- an address whatever the names, and a name whatever the addresses: later and up to 30 s
  only. Operators may share an address (an SSH tunnel, a proxy), and someone failing on
  purpose from many addresses must not lock an operator out: at worst they wait seconds.
A wait is a refusal before the password is even checked (429 with Retry-After); a success
clears the name's counts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

FORGET_AFTER_S = 900.0


@dataclass(frozen=True)
class Rule:
    free: int  # failures allowed before the first wait
    max_wait_s: float


PAIR = Rule(free=3, max_wait_s=60.0)
ADDRESS = Rule(free=20, max_wait_s=30.0)
NAME = Rule(free=10, max_wait_s=30.0)
MAX_COUNTS = 10_000  # past it the stalest counts go: memory an attacker cannot grow


@dataclass
class _Count:
    failures: int = 0
    last_at: float = 0.0
    wait_until: float = 0.0


class SignInThrottle:
    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], _Count] = {}

    @staticmethod
    def _keys(name: str, address: str) -> list[tuple[tuple[str, str], Rule]]:
        # The name by its hash: a password typed into the name field is not kept as such.
        who = hashlib.sha256(name.encode()).hexdigest()
        return [(("pair", f"{who}:{address}"), PAIR), (("address", address), ADDRESS),
                (("name", who), NAME)]

    def wait_s(self, name: str, address: str, now: float) -> float:
        """How long this name from this address must still wait before trying (0: now)."""
        waits = [count.wait_until - now for key, _rule in self._keys(name, address)
                 if (count := self._live(key, now)) is not None]
        return max([0.0, *waits])

    def failed(self, name: str, address: str, now: float) -> None:
        if len(self._counts) >= MAX_COUNTS:
            self._prune(now)
        for key, rule in self._keys(name, address):
            count = self._live(key, now) or self._counts.setdefault(key, _Count())
            count.failures += 1
            count.last_at = now
            over = count.failures - rule.free
            if over > 0:
                count.wait_until = now + min(rule.max_wait_s, 2.0 ** (over - 1))

    def succeeded(self, name: str, address: str) -> None:
        pair, _address, of_name = self._keys(name, address)
        self._counts.pop(pair[0], None)
        self._counts.pop(of_name[0], None)

    def _prune(self, now: float) -> None:
        for key in [k for k, c in self._counts.items() if now - c.last_at > FORGET_AFTER_S]:
            del self._counts[key]
        if len(self._counts) >= MAX_COUNTS:
            stalest = sorted(self._counts, key=lambda k: self._counts[k].last_at)
            for key in stalest[: len(stalest) // 2]:
                del self._counts[key]

    def _live(self, key: tuple[str, str], now: float) -> _Count | None:
        count = self._counts.get(key)
        if count is not None and now - count.last_at > FORGET_AFTER_S:
            del self._counts[key]  # forgotten: also bounds the memory an attacker can fill
            return None
        return count
