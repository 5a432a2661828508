"""`hh-admin keys`: make the merchant's keys, and say which keys a config holds.

`keys new` writes a key where nobody else can read it (mode 0600, never over an existing
file) and prints what goes into HighHelp's dashboard: the RSA public key and its id. An HMAC
secret is shared with HighHelp, so it is never printed: the file is named, and its id.
`keys show` lists each configured key's id, kind and use, never the key.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.settings import Settings
from shared.signature import Algorithm, hmac_key_id, rsa_verify_key

RSA_BITS = 2048  # what HighHelp's dashboard takes; its signatures are 344 base64 characters
HMAC_SECRET_BYTES = 48


class KeyFileExists(Exception):
    """A key file is never overwritten: the one in use would be lost."""


def _write_private(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileExists(f"{path} exists: move it away first (it may be the key in use)"
                            ) from None
    with os.fdopen(fd, "wb") as out:
        out.write(data)


@dataclass(frozen=True)
class NewKey:
    kind: Algorithm
    key_id: str
    private_file: Path
    public_file: Path | None  # RSA only
    public_pem: str | None  # RSA only: what goes into the dashboard

    def lines(self) -> list[str]:
        said = [f"{self.kind} key {self.key_id}", f"  private: {self.private_file} (mode 0600; "
                "name it in the cash register's merchant_private_key or request_hmac_key)"]
        if self.public_pem is not None:
            said += [f"  public:  {self.public_file}", "paste this public key into HighHelp's "
                     "dashboard (the cash register's key for our requests):", self.public_pem]
        else:
            said.append("enter the same secret in HighHelp's dashboard: it is in the file "
                        "above, and is not printed here")
        return said


def new_key(kind: Algorithm, folder: Path, name: str) -> NewKey:
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "hmac":
        secret = secrets.token_urlsafe(HMAC_SECRET_BYTES).encode()
        path = folder / f"{name}_hmac.txt"
        _write_private(path, secret + b"\n")
        return NewKey("hmac", hmac_key_id(secret), path, None, None)
    private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    private_path, public_path = folder / f"{name}_private.pem", folder / f"{name}_public.pem"
    if public_path.exists():
        raise KeyFileExists(f"{public_path} exists: move it away first")
    _write_private(private_path, private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    public_path.write_bytes(public_pem)
    key_id = rsa_verify_key(private.public_key()).key_id
    return NewKey("rsa", key_id, private_path, public_path, public_pem.decode().strip())


def configured_keys(settings: Settings) -> list[dict[str, str]]:
    """Every key the config names: project, id, kind and use. Ids only: safe to print."""
    rows = []
    for project in settings.projects.values():
        rows += [{"project_id": project.project_id, "key_id": key.key_id,
                  "kind": key.algorithm, "use": "verifies HighHelp's alerts"}
                 for key in project.callback_keys]
        if project.request_key is not None:
            rows.append({"project_id": project.project_id,
                         "key_id": project.request_key.key_id,
                         "kind": project.request_key.algorithm,
                         "use": "signs our requests to HighHelp's API"})
    return rows
