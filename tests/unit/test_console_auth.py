"""The console's pure sign-in parts: password hashes, the users file, token comparison."""

from __future__ import annotations

import pytest

from console.auth import (
    Operator,
    Users,
    UsersError,
    hash_password,
    parse_users,
    password_matches,
    same_token,
)
from console.overview import difference, read_counters


def test_a_password_matches_only_its_own_hash_which_never_holds_it() -> None:
    stored = hash_password("correct horse battery")
    assert stored.startswith("scrypt$") and "correct horse" not in stored
    assert password_matches("correct horse battery", stored)
    assert not password_matches("correct horse batterY", stored)
    assert not password_matches("x", "not-a-hash") and not password_matches("x", "md5$a$b$c$d$e")
    assert hash_password("same") != hash_password("same")  # salted


def test_users_file_lines_and_roles() -> None:
    text = f"# operators\nolga:operator:{hash_password('pw-olga-123456')}\n\n" \
           f"victor:viewer:{hash_password('pw-victor-1234')}\n"
    users = Users(parse_users(text))
    assert users.check("olga", "pw-olga-123456") == Operator("olga", "operator")
    assert users.check("victor", "pw-victor-1234") == Operator("victor", "viewer")
    assert not Operator("victor", "viewer").may_act
    assert users.check("olga", "wrong") is None and users.check("nobody", "x") is None
    with pytest.raises(UsersError, match="line 1") as refused:
        parse_users("mallory:admin:scrypt$secret-hash-here")
    assert "secret-hash-here" not in str(refused.value)  # never echo what the line holds


def test_tokens_compare_whole_and_empty_never_matches() -> None:
    assert same_token("abc", "abc") and not same_token("abd", "abc")
    assert not same_token("", "")


def test_overview_counts_the_last_hour_across_processes_and_restarts() -> None:
    ingest = 'hh_ingest_alerts_total{route="callback",outcome="200"} 10\n' \
             'hh_ingest_alerts_total{route="success",outcome="200"} 5\n'
    worker = 'hh_worker_alerts_total{outcome="applied"} 12\n' \
             'hh_queue_oldest_message_age_seconds{queue="hh.callbacks.process"} 42\n'
    now, oldest = read_counters([ingest, worker])
    assert now["hh_ingest_alerts"] == {"200": 15.0} and oldest == 42.0
    then = {"hh_ingest_alerts": {"200": 5.0}, "hh_worker_alerts": {"applied": 20.0}}
    # The worker restarted (its counter went down): counted from zero.
    assert difference(now, then) == {"hh_ingest_alerts": {"200": 10.0},
                                     "hh_worker_alerts": {"applied": 12.0},
                                     "hh_ingest_rejections": {}}
