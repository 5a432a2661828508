"""HighHelp's signature scheme (spec/highhelp.md, "Signatures"), as pure functions.

message   = base64url_nopad(utf8(normalize(body))) + timestamp
RSA       = base64url_nopad(RSASSA-PKCS1-v1_5-SHA256(key, SHA256(message)))
HMAC      = hex(HMAC-SHA512(utf8(key_text.strip()), message))

Every [our choice] of the spec that concerns signing lives in this module.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

Algorithm = Literal["rsa", "hmac"]

@dataclass(frozen=True)
class Spelling:
    """How leaves are written and joined. `OURS` holds every [our choice] of the spec on
    normalization in one place; other spellings exist only to diagnose a failed verification."""

    null: str = "None"
    true: str = "1"
    false: str = "0"
    line_separator: str = ";"
    path_separator: str = ":"


OURS = Spelling()


class KeyLoadError(ValueError):
    """A key could not be loaded. The message never contains key material."""


def normalize(value: object, spelling: Spelling = OURS) -> str:
    """The documented normalization: sorted `path:value` leaves joined by `;`."""
    return spelling.line_separator.join(sorted(_leaves(value, "", spelling)))


def _leaves(value: object, path: str, sp: Spelling) -> Iterator[str]:
    if isinstance(value, dict | list):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            yield from _leaves(item, f"{path}{sp.path_separator}{key}" if path else str(key), sp)
    else:
        text = scalar_text(value, sp)
        yield f"{path}{sp.path_separator}{text}" if path else text


def scalar_text(value: object, spelling: Spelling = OURS) -> str:
    if value is None:
        return spelling.null
    if value is True:
        return spelling.true
    if value is False:
        return spelling.false
    if isinstance(value, float):
        # [our choice] an integral float is written as an integer; others as their shortest text.
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64_any(text: str) -> bytes:
    """Decode base64 or base64url, padded or not; raises binascii.Error."""
    text = text.strip().replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def signing_message(body: object, timestamp: str, spelling: Spelling = OURS) -> bytes:
    return (b64url(normalize(body, spelling).encode("utf-8")) + timestamp).encode("ascii")


# --- keys -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyKey:
    """One key that may verify alerts of a cash register. `key_id` is safe to log."""

    key_id: str
    algorithm: Algorithm
    rsa_public: rsa.RSAPublicKey | None = field(default=None, repr=False)
    hmac_secret: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SigningKey:
    """The merchant's key for signing requests (or the sandbox's for signing alerts)."""

    key_id: str
    algorithm: Algorithm
    rsa_private: rsa.RSAPrivateKey | None = field(default=None, repr=False)
    hmac_secret: bytes | None = field(default=None, repr=False)

    def sign(self, message: bytes) -> str:
        if self.rsa_private is not None:
            return sign_rsa(self.rsa_private, message)
        assert self.hmac_secret is not None
        return sign_hmac(self.hmac_secret, message)

    def verify_key(self) -> VerifyKey:
        if self.rsa_private is not None:
            return rsa_verify_key(self.rsa_private.public_key())
        assert self.hmac_secret is not None
        return VerifyKey(self.key_id, "hmac", hmac_secret=self.hmac_secret)


def _fingerprint(prefix: str, data: bytes) -> str:
    return f"{prefix}:{hashlib.sha256(data).hexdigest()[:12]}"


def spki_der(public_key: rsa.RSAPublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def rsa_verify_key(public_key: rsa.RSAPublicKey) -> VerifyKey:
    return VerifyKey(_fingerprint("rsa", spki_der(public_key)), "rsa", rsa_public=public_key)


def hmac_secret_from_text(text: str | bytes) -> bytes:
    """[our choice] the key is the key file's text with surrounding whitespace stripped."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    secret = raw.strip()
    if not secret:
        raise KeyLoadError("HMAC key is empty")
    return secret


def hmac_key_id(secret: bytes) -> str:
    # A truncated hash of a high-entropy secret names it without revealing it.
    return _fingerprint("hmac", b"hh-callbacks-key-id\x00" + secret)


def load_verify_key(material: bytes, algorithm: Algorithm) -> VerifyKey:
    """RSA public keys in SubjectPublicKeyInfo or PKCS#1 PEM; HMAC keys as text."""
    if algorithm == "hmac":
        secret = hmac_secret_from_text(material)
        return VerifyKey(hmac_key_id(secret), "hmac", hmac_secret=secret)
    try:
        key = serialization.load_pem_public_key(material)
    except (ValueError, TypeError, binascii.Error):
        raise KeyLoadError("not a PEM public key (SubjectPublicKeyInfo or PKCS#1)") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyLoadError("public key is not RSA")
    return rsa_verify_key(key)


def load_signing_key(material: bytes, algorithm: Algorithm) -> SigningKey:
    """RSA private keys in PKCS#8 or PKCS#1 PEM (unencrypted); HMAC keys as text."""
    if algorithm == "hmac":
        secret = hmac_secret_from_text(material)
        return SigningKey(hmac_key_id(secret), "hmac", hmac_secret=secret)
    try:
        key = serialization.load_pem_private_key(material, password=None)
    except (ValueError, TypeError, binascii.Error):
        raise KeyLoadError("not an unencrypted PEM private key (PKCS#8 or PKCS#1)") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyLoadError("private key is not RSA")
    return SigningKey(rsa_verify_key(key.public_key()).key_id, "rsa", rsa_private=key)


def access_token(public_key: rsa.RSAPublicKey) -> str:
    """The `x-access-token` header: DER SubjectPublicKeyInfo, base64url without padding."""
    return b64url(spki_der(public_key))


# --- sign and verify --------------------------------------------------------------------------


def sign_rsa(private_key: rsa.RSAPrivateKey, message: bytes) -> str:
    # The 32-byte digest of the message is what gets signed (SHA-256 twice, in effect).
    digest = hashlib.sha256(message).digest()
    return b64url(private_key.sign(digest, padding.PKCS1v15(), hashes.SHA256()))


def sign_hmac(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha512).hexdigest()


def verify_rsa(public_key: rsa.RSAPublicKey, message: bytes, signature: str) -> bool:
    try:
        raw = _b64_any(signature)
        digest = hashlib.sha256(message).digest()
        public_key.verify(raw, digest, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def _mac_candidates(signature: str) -> Iterator[bytes]:
    """The MAC may come as hex (documented) or as base64/base64url of the same bytes."""
    text = signature.strip()
    try:
        yield bytes.fromhex(text)
    except ValueError:
        pass
    try:
        yield _b64_any(text)
    except (binascii.Error, ValueError):
        pass


def verify_hmac(secret: bytes, message: bytes, signature: str) -> bool:
    expected = hmac.new(secret, message, hashlib.sha512).digest()
    matched = False
    for candidate in _mac_candidates(signature):
        # Constant-time comparison; every candidate is compared, so timing says nothing of which.
        matched |= hmac.compare_digest(expected, candidate)
    return matched


def verify_with(key: VerifyKey, message: bytes, signature: str) -> bool:
    if key.rsa_public is not None:
        return verify_rsa(key.rsa_public, message, signature)
    assert key.hmac_secret is not None
    return verify_hmac(key.hmac_secret, message, signature)


HMAC_SIGNATURE_MAX_CHARS = 128  # SHA-512's 64 bytes as hex; an RSA signature is 172 or more


def likely_algorithm(signature: str) -> Algorithm:
    """The kind of key a signature's form points to: an HMAC-SHA512 one is 128 hex or 88
    base64 characters, an RSA one at least 172 (1,024 bits; 344 for the usual 2,048)."""
    return "hmac" if len(signature.strip()) <= HMAC_SIGNATURE_MAX_CHARS else "rsa"


def find_verifying_key(
    keys: Sequence[VerifyKey], body: object, timestamp: str, signature: str
) -> VerifyKey | None:
    """The first configured key that verifies the signature, or None. Keys of the kind the
    signature's form points to are tried first (a failing RSA check costs more than the HMAC
    one that succeeds); every key is still tried before giving up."""
    message = signing_message(body, timestamp)
    likely = likely_algorithm(signature)
    for key in sorted(keys, key=lambda k: k.algorithm != likely):  # stable: configured order
        if verify_with(key, message, signature):
            return key
    return None
