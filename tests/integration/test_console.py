"""The operator console over the real store and broker: finding a payment by each of its ids,
its story, the lists, and the security rules, each refusal checked to have changed nothing."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from sandbox.scenarios import Chaos
from shared.envelope import AlertEnvelope
from shared.mongo import Collections
from shared.settings import Settings
from shared.topology import (
    ATTEMPTS_HEADER,
    DEAD_AT_HEADER,
    DEAD_EXCHANGE,
    ORIGIN_HEADER,
    PROCESS_QUEUE,
    REASON_HEADER,
)
from shared.wire import CALLBACK_PATHS
from tests.conftest import EventTap, wait_until
from tests.console_fixtures import PASSWORDS, RunningConsole, csrf_of
from tests.integration.test_pipeline import post, wait_processed
from tests.integration.test_reconciliation import (  # noqa: F401 - stack: a fixture
    Stack,
    callback_base,
    stack,
)
from tests.keys import PROJECT_ID, alert_body
from tests.logcapture import captured
from worker import dlq
from worker.app import Worker
from worker.records import utc

pytestmark = pytest.mark.services


async def dead_letter(channel: aio_pika.abc.AbstractChannel, payment_id: str,
                      reason: str = "exhausted 12 attempts: ServerSelectionTimeoutError") -> str:
    """A verified alert as the worker dead-letters it; its message id."""
    envelope = AlertEnvelope(alert_body(payment_id, "success", None).decode(), "success",
                             str(int(time.time())), "rsa:test", time.time(), "corr-dead")
    exchange = await channel.get_exchange(DEAD_EXCHANGE)
    message_id = f"dead-{payment_id}"
    await exchange.publish(aio_pika.Message(
        envelope.to_bytes(), message_id=message_id, correlation_id="corr-dead",
        headers={REASON_HEADER: reason, DEAD_AT_HEADER: utc(time.time()).isoformat(),
                 ATTEMPTS_HEADER: 12, ORIGIN_HEADER: PROCESS_QUEUE}), "")
    return message_id


@asynccontextmanager
async def waiting_sandbox_payment(build: Callable[..., Any], payment_id: str,
                                  amount: int = 100) -> AsyncIterator[Stack]:
    """A payment the sandbox created whose alerts are all lost, with nothing polling by
    itself: it waits, registered, for an operator. `build`: the `stack` fixture."""
    async with build(Chaos(drop_rate=1.0, step_delay_s=0.05), enabled=False) as s:
        await s.client.create_payment("p2p", "payin", payment_id, amount, "RUB", "card-p2p",
                                      callback_base(s),
                                      extra={"sandbox": {"scenario": "success"}})

        async def registered() -> bool:
            return await s.db.orders.find_one({"_id": f"{PROJECT_ID}:{payment_id}"}) is not None
        await wait_until(registered, 20, f"the sandbox's payment {payment_id} registered")
        yield s


async def letters(worker: Worker) -> list[str]:
    return [letter.message_id for letter in await dlq.list_letters(worker.broker)]


async def test_a_page_without_a_session_sends_to_sign_in_and_the_api_answers_401(
    console_app: Callable[..., Any],
) -> None:
    console: RunningConsole = await console_app()
    anonymous = console.client()
    page = await anonymous.get("/payments/p/x")
    assert page.status == 303 and page.headers["Location"].startswith("/login?next=")
    assert (await anonymous.get("/api/review")).status == 401
    # Security headers on every answer, the sign-in page included.
    login = await anonymous.get("/login")
    assert "frame-ancestors 'none'" in login.headers["Content-Security-Policy"]
    assert login.headers["X-Content-Type-Options"] == "nosniff"
    assert login.headers["X-Frame-Options"] == "DENY"
    # After signing in, never sent off-site, whatever `next` says.
    for sneaky in ("//evil.example/", "/\\evil.example/", "https://evil.example/"):
        client = console.client()
        form = await client.get("/login")
        token = csrf_of(await form.text())
        signed = await client.http.post(client.url + "/login", data={
            "login_csrf": token, "name": "olga", "password": PASSWORDS["olga"],
            "next": sneaky}, allow_redirects=False)
        assert (signed.status, signed.headers["Location"]) == (303, "/"), sneaky
    # A wrong password: refused, no session.
    refused = await anonymous.sign_in("olga", "not-her-password")
    assert refused.status == 401
    assert (await anonymous.get("/")).status == 303
    # A password typed into the name field is refused and never logged.
    with captured() as entries:
        assert (await anonymous.sign_in("olga-operator-password", "x")).status == 401
    [line] = [e for e in entries if e["event"] == "console_sign_in_refused"]
    assert line["name"] is None and line["name_known"] is False
    assert "olga-operator-password" not in json.dumps(entries, default=str)


async def test_find_by_payment_id_request_id_and_idempotency_key_then_read_the_story(
    console_app: Callable[..., Any], ingest: TestClient[Any, Any], worker: Worker,
    settings: Settings, events: EventTap, capsys: pytest.CaptureFixture[str],
) -> None:
    now = int(time.time())
    assert await post(ingest, alert_body("story-1", "processing", "new"), ts=now - 30) == 200
    assert await post(ingest, alert_body("story-1", "success", None), "success", ts=now) == 200
    # Late and out of order: stale, kept aside.
    assert await post(ingest, alert_body("story-1", "processing", "requisites"),
                      ts=now - 20) == 200
    await wait_processed(worker, 3)
    console: RunningConsole = await console_app(settings)
    viewer = await console.signed_in("victor")
    path = f"/payments/{PROJECT_ID}/story-1"
    for query in ("story-1", "req-1", f"{PROJECT_ID}:story-1:success:None"):
        found = await viewer.get("/find", params={"project": PROJECT_ID, "q": query})
        assert (found.status, found.headers["Location"]) == (303, path), query
    missing = await viewer.get("/find", params={"project": PROJECT_ID, "q": "no-such"})
    assert missing.status == 200 and "Nothing found" in await missing.text()

    data = (await (await viewer.get("/api" + path)).json())["story"]
    assert data["order"]["status"] == "success" and data["order"]["final"] is True
    assert [(a["status"], a["outcome"]) for a in data["alerts"]] == [
        ("processing", "applied"), ("success", "applied"), ("processing", "stale")]
    assert all(a["route"] and a["key_id"] for a in data["alerts"])
    assert [t["published"] for t in data["transitions"]] == [True, True]
    assert data["transitions"][1]["event_id"] == (await events.wait(2))[1]["event_id"]
    assert data["retention"]["settled"] is True

    page = await viewer.get(path)
    html = await page.text()
    assert page.status == 200 and "stale" in html and "Poll HighHelp now" not in html
    raw = await viewer.get(f"/api{path}/alerts/{PROJECT_ID}:story-1:success:None")
    assert json.loads((await raw.json())["body"])["general"]["payment_id"] == "story-1"
    # The lists and the overview answer, and the viewer sees no action buttons.
    for listing in ("/activity", "/review", "/anomalies", "/dead-letters", "/"):
        assert (await viewer.get(listing)).status == 200, listing
    assert "Redrive" not in await (await viewer.get("/dead-letters")).text()

    # hh-admin orders show prints the same story.
    from admin.__main__ import orders_show
    capsys.readouterr()
    with captured():  # the worker's log lines, printed meanwhile, would mix with the story
        assert await orders_show(settings, PROJECT_ID, "story-1") == 0
        printed = json.loads(capsys.readouterr().out)
    assert [a["outcome"] for a in printed["alerts"]] == ["applied", "applied", "stale"]
    assert printed["order"]["status"] == "success"
    assert await orders_show(settings, PROJECT_ID, "no-such") == 1


async def test_changes_are_refused_without_csrf_forged_csrf_or_the_operator_role(
    console_app: Callable[..., Any], worker: Worker, settings: Settings, db: Collections,
    amqp: aio_pika.abc.AbstractChannel,
) -> None:
    console: RunningConsole = await console_app(settings)
    olga = await console.signed_in("olga")
    victor = await console.signed_in("victor")
    message_id = await dead_letter(amqp, "dead-1")
    await db.attention.insert_one({"_id": f"{PROJECT_ID}:gave-up-1", "status": "processing",
                                   "sub_status": "new", "at": utc(time.time()),
                                   "reviewed": None})
    review_path = f"/payments/{PROJECT_ID}/gave-up-1/reviewed"

    # No CSRF token; a forged one; the viewer with a valid one; another origin: all refused.
    no_token = await olga.http.post(olga.url + "/dead-letters/redrive", data={"id": message_id},
                                    allow_redirects=False)
    forged = await olga.http.post(olga.url + "/dead-letters/redrive",
                                  data={"id": message_id, "csrf": "forged" + olga.csrf[6:]},
                                  allow_redirects=False)
    viewer = await victor.post("/dead-letters/redrive", id=message_id)
    viewer_review = await victor.post(review_path, note="looked")
    cross = await olga.http.post(olga.url + "/dead-letters/redrive",
                                 data={"id": message_id, "csrf": olga.csrf},
                                 headers={"Origin": "https://evil.example"},
                                 allow_redirects=False)
    api_forged = await olga.http.post(olga.url + "/api/dead-letters/redrive",
                                      json={"id": message_id},
                                      headers={"X-CSRF-Token": "forged"})
    assert [r.status for r in (no_token, forged, viewer, viewer_review, cross, api_forged)] == [
        403] * 6
    assert "read-only" in await viewer.text()
    assert await letters(worker) == [message_id]  # nothing changed
    assert (await db.attention.find_one({"_id": f"{PROJECT_ID}:gave-up-1"}))["reviewed"] is None
    assert await db.audit.count_documents({}) == 0

    # The operator, with the session's token: done, and audited.
    done = await olga.post(review_path, note="customer refunded by bank")
    assert done.status == 303
    reviewed = (await db.attention.find_one({"_id": f"{PROJECT_ID}:gave-up-1"}))["reviewed"]
    assert (reviewed["by"], reviewed["note"]) == ("olga", "customer refunded by bank")
    assert (await db.audit.find_one({"_id": f"{PROJECT_ID}:gave-up-1#1"}))["action"] == "reviewed"
    # A dry run first: counted, nothing sent; then confirmed.
    dry = await olga.post("/dead-letters/redrive-matching", reason_contains="ServerSelection")
    assert dry.status == 200 and "Redrive 1 dead letters?" in await dry.text()
    assert await letters(worker) == [message_id]
    sent = await olga.post("/dead-letters/redrive-matching", reason_contains="ServerSelection",
                           confirm="yes")
    assert sent.status == 303 and await letters(worker) == []
    audit = await db.audit.find_one({"_id": "dead-letters#1"})
    assert audit["by"] == "olga" and audit["ids"] == [message_id]


async def test_sessions_expire_and_a_trusted_proxy_header_signs_in(
    console_app: Callable[..., Any], settings: Settings, db: Collections,
) -> None:
    console: RunningConsole = await console_app(settings, session_ttl_s=3600)
    olga = await console.signed_in("olga")
    assert (await olga.get("/")).status == 200
    session = await db.sessions.find_one({"name": "olga"})
    assert session is not None and olga.csrf not in str(session["_id"])  # a hash, not the token
    # Its hour is over (moved back in the store rather than waited for).
    await db.sessions.update_one({"_id": session["_id"]},
                                 {"$set": {"expires_at": utc(time.time() - 1)}})
    assert (await olga.get("/")).status == 303
    assert await db.sessions.find_one({"_id": session["_id"]}) is None  # deleted when met

    proxied: RunningConsole = await console_app(settings, users_file="",
                                                proxy_user_header="X-Forwarded-User",
                                                proxy_role_header="X-Forwarded-Role")
    client = proxied.client()
    assert (await client.get("/")).status == 303  # no header: not signed in
    page = await client.get("/", headers={"X-Forwarded-User": "pat"})
    assert page.status == 200 and "pat (viewer)" in await page.text()


async def test_a_store_that_does_not_answer_is_a_503_page_not_a_500(
    console_app: Callable[..., Any], make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(mongo={"url": "mongodb://127.0.0.1:9", "timeout_ms": 200})
    console: RunningConsole = await console_app(settings)
    client = console.client()
    page = await client.get("/payments/p/x", headers={"Cookie": "hh_console=some-token"})
    assert page.status == 503 and "did not answer" in await page.text()
    assert "Content-Security-Policy" in page.headers
    api = await client.get("/api/review", headers={"Cookie": "hh_console=some-token"})
    assert api.status == 503 and (await api.json())["error"].startswith("the store")


async def test_overview_counts_alerts_since_its_first_sample_from_the_live_metrics(
    console_app: Callable[..., Any], ingest: TestClient[Any, Any], settings: Settings,
) -> None:
    from console.app import OVERVIEW

    console: RunningConsole = await console_app(
        settings, metrics_urls=(str(ingest.make_url("/metrics")),))
    overview = console.server.app[OVERVIEW]
    async with aiohttp.ClientSession() as http:
        await overview.sample(http)  # the first sample: the hour's baseline
        assert await post(ingest, alert_body("over-1", "processing", "new")) == 200
        refused = await ingest.post(CALLBACK_PATHS["callback"], data=b"not json")
        assert refused.status == 400
        await overview.sample(http)
    viewer = await console.signed_in("victor")
    figures = await (await viewer.get("/api/overview")).json()
    assert figures["last_hour"]["hh_ingest_alerts"] == {"200": 1.0, "400": 1.0}
    assert figures["last_hour"]["hh_ingest_rejections"] == {"not_json": 1.0}
    assert figures["work_queue"]["messages"] >= 0 and figures["unreachable"] == []
    page = await (await viewer.get("/")).text()
    assert "not_json" in page


async def test_poll_now_asks_the_gateway_and_settles_the_payment_audited(
    stack: Callable[..., Any], console_app: Callable[..., Any],  # noqa: F811
) -> None:
    # Only the button will settle it.
    async with waiting_sandbox_payment(stack, "poll-me") as s:
        console: RunningConsole = await console_app(s.settings)
        olga = await console.signed_in("olga")
        path = f"/payments/{PROJECT_ID}/poll-me"

        async def settled_at_the_gateway() -> bool:  # the sandbox's own steps take a moment
            done = await olga.post(f"/api{path}/poll")
            view = await s.db.orders.find_one({"_id": f"{PROJECT_ID}:poll-me"})
            return done.status == 200 and bool(view and view["final"])
        await wait_until(settled_at_the_gateway, 30, "a poll that finds the payment final", 0.5)
        again = await olga.post(f"/api{path}/poll")
        assert (await again.json())["result"] == "already final: nothing to poll"
        missing = await olga.post(f"/api/payments/{PROJECT_ID}/nobody/poll")
        assert (await missing.json())["result"] == "no such payment"
        audit = [e["outcome"] for e in (await (await olga.get("/api" + path)).json())
                 ["story"]["audit"]]
        assert "polled" in audit and audit[-1] == "already final: nothing to poll"
        # The console ran the poll itself: its events are in the recent activity too.
        noted = [e async for doc in s.db.activity.find({}) for e in doc["events"]
                 if e["order_id"] == f"{PROJECT_ID}:poll-me" and e["status"] == "success"]
        assert noted and noted[-1]["source"] == "poll"


async def test_failed_sign_ins_are_slowed_down_refused_logged_and_counted(
    console_app: Callable[..., Any],
) -> None:
    """Thirty wrong passwords for one name were all checked at once; now, past a few, each
    is refused before the password is looked at (429, Retry-After), even the right one."""
    console: RunningConsole = await console_app()
    anonymous = console.client()
    with captured() as entries:
        statuses = [(await anonymous.sign_in("olga", f"guess-{n}")).status for n in range(30)]
        throttled = await anonymous.sign_in("olga")  # her own password, while slowed down
    assert statuses[:4] == [401] * 4 and set(statuses[4:]) == {429}
    assert throttled.status == 429 and int(throttled.headers["Retry-After"]) >= 1
    assert "Too many failed sign-ins" in await throttled.text()
    assert (await anonymous.get("/")).status == 303  # no session
    refusals = [e for e in entries if e["event"] == "console_sign_in_throttled"]
    assert len(refusals) == 27 and refusals[0]["name"] == "olga"
    metrics = await (await anonymous.get("/metrics")).text()
    assert 'hh_console_sign_ins_refused_total{reason="throttled"} 27.0' in metrics
    assert 'hh_console_sign_ins_refused_total{reason="wrong_password"} 4.0' in metrics
    # Another operator from the same address is not slowed by olga's failures.
    assert (await console.client().sign_in("victor")).status == 303
