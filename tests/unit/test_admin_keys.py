"""`hh-admin keys`: new keys are private files printed only as what goes into the dashboard;
configured keys are listed by id, kind and use, never by value."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from shared.signature import load_signing_key, load_verify_key
from tests.conftest import toml_text, write_config


def admin(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "admin", *args], capture_output=True,
                          text=True, check=False, env={**os.environ, **(env or {})})


def test_a_new_rsa_key_is_private_and_its_public_half_is_printed(tmp_path: Path) -> None:
    done = admin("keys", "new", "--kind", "rsa", "--out", str(tmp_path), "--name", "till-7")
    assert done.returncode == 0, done.stderr
    private, public = tmp_path / "till-7_private.pem", tmp_path / "till-7_public.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key = load_signing_key(private.read_bytes(), "rsa")
    assert load_verify_key(public.read_bytes(), "rsa").key_id == key.key_id
    assert key.key_id in done.stdout and public.read_text().strip() in done.stdout
    assert "PRIVATE KEY" not in done.stdout
    again = admin("keys", "new", "--kind", "rsa", "--out", str(tmp_path), "--name", "till-7")
    assert again.returncode == 1 and "exists" in again.stderr  # never over the key in use
    assert load_signing_key(private.read_bytes(), "rsa").key_id == key.key_id


def test_a_new_hmac_secret_is_never_printed(tmp_path: Path) -> None:
    done = admin("keys", "new", "--kind", "hmac", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    secret_file = tmp_path / "merchant_hmac.txt"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_text().strip()
    assert len(secret) >= 64 and secret not in done.stdout + done.stderr
    assert load_signing_key(secret.encode(), "hmac").key_id in done.stdout


def test_show_lists_each_configured_key_by_id_kind_and_use(
    tmp_path: Path, old_rsa_pem: bytes,
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(toml_text(write_config(tmp_path, old_rsa_pem)))
    done = admin("keys", "show", "--json", env={"HH_CONFIG": str(config)})
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert {(r["kind"], r["use"]) for r in rows} == {
        ("rsa", "verifies HighHelp's alerts"), ("hmac", "verifies HighHelp's alerts"),
        ("rsa", "signs our requests to HighHelp's API")}
    assert len(rows) == 4 and all(set(r) == {"project_id", "key_id", "kind", "use"}
                                  for r in rows)
    secret = (tmp_path / "callback_hmac.txt").read_text().strip()
    assert secret not in done.stdout
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    nothing = admin("keys", "show", env={"HH_CONFIG": str(empty)})
    assert nothing.returncode == 1 and "no cash register" in nothing.stdout


def test_doctor_says_a_config_that_does_not_load_as_its_first_cross(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[[projects]]\nproject_id = "p"\ncallback_public_keys = ["gone.pem"]\n')
    done = admin("doctor", env={"HH_CONFIG": str(config)})
    assert done.returncode == 1
    assert done.stdout.startswith("✗ config: ") and "gone.pem" in done.stdout
