"""Who may use the console: operators from a users file (passwords stored as scrypt hashes) or
named by a trusted authenticating proxy; sessions kept server-side by the hash of their token;
a CSRF token per session. Pure functions, and the session store (by _id only)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pymongo.asynchronous.collection import AsyncCollection

from shared.documents import ConsoleSession

ROLES = ("operator", "viewer")  # a viewer reads; an operator may also act
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


class UsersError(ValueError):
    pass


@dataclass(frozen=True)
class Operator:
    name: str
    role: str

    @property
    def may_act(self) -> bool:
        return self.role == "operator"


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    encoded = (base64.b64encode(salt).decode(), base64.b64encode(digest).decode())
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encoded[0]}${encoded[1]}"


def password_matches(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                                r=int(r), p=int(p), dklen=len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def parse_users(text: str) -> dict[str, tuple[str, str]]:
    """`name:role:hash` lines (blank lines and # comments skipped) -> name: (role, hash)."""
    users: dict[str, tuple[str, str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(":")
        role, _, stored = rest.partition(":")
        if not name or role not in ROLES or not stored.startswith("scrypt$"):
            # The line number only: the line may hold a hash.
            roles = "|".join(ROLES)
            raise UsersError(f"users file line {number}: expected name:{roles}:scrypt$...")
        users[name] = (role, stored)
    return users


def load_users(path: str) -> dict[str, tuple[str, str]]:
    if not path:
        return {}
    try:
        return parse_users(Path(path).read_text())
    except OSError as exc:
        raise UsersError(f"cannot read the users file {path}: {exc.strerror}") from None


class Users:
    def __init__(self, users: dict[str, tuple[str, str]]) -> None:
        self._users = users
        # A name that does not exist costs the same as a wrong password (no timing oracle).
        self._decoy = hash_password(secrets.token_hex(8))

    def __len__(self) -> int:
        return len(self._users)

    def known(self, name: str) -> bool:
        return name in self._users

    def check(self, name: str, password: str) -> Operator | None:
        role, stored = self._users.get(name, ("", self._decoy))
        if password_matches(password, stored) and role:
            return Operator(name, role)
        return None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(given: str, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


@dataclass(frozen=True)
class Session:
    operator: Operator
    csrf: str
    expires_at: float


class Sessions:
    """Server-side sessions by the sha256 of their token: the cookie holds the token, the store
    only its hash. Expired ones are refused (and deleted when met)."""

    def __init__(self, collection: AsyncCollection[ConsoleSession], ttl_s: float) -> None:
        self.collection = collection
        self.ttl_s = ttl_s

    async def create(self, operator: Operator) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        session = Session(operator, secrets.token_urlsafe(32), time.time() + self.ttl_s)
        await self.collection.insert_one({
            "_id": token_hash(token), "name": operator.name, "role": operator.role,
            "csrf": session.csrf,
            "expires_at": datetime.fromtimestamp(session.expires_at, UTC)})
        return token, session

    async def find(self, token: str) -> Session | None:
        if not token:
            return None
        doc = await self.collection.find_one({"_id": token_hash(token)})
        if doc is None:
            return None
        expires = doc["expires_at"].timestamp()
        if expires <= time.time():
            await self.collection.delete_one({"_id": doc["_id"]})
            return None
        return Session(Operator(doc["name"], doc["role"]), doc["csrf"], expires)

    async def end(self, token: str) -> None:
        await self.collection.delete_one({"_id": token_hash(token)})
