"""`hh-admin doctor` against the local services, the sandbox and a real ingest: every check
passes on a good setup, and each ✗ names its cause."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from admin import doctor
from ingest.app import create_app
from shared import mongo
from shared.settings import Settings
from tests.processes import free_port
from tests.sandbox_fixtures import RunningSandbox
from worker.app import Worker

pytestmark = pytest.mark.services


def by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {check.name: check for check in checks}


@pytest.fixture
async def live(services: None, start_sandbox: Callable[..., Any],
               make_settings: Callable[..., Settings]) -> AsyncIterator[Settings]:
    """A cash register whose API is the sandbox, and an ingest whose public URL is real."""
    sandbox: RunningSandbox = await start_sandbox()
    settings = make_settings({"api_base_url": sandbox.url})
    ingest = TestServer(create_app(settings))
    await ingest.start_server()
    public = str(ingest.make_url("")).rstrip("/")
    yield replace(settings, ingest=replace(settings.ingest, public_url=public))
    await ingest.close()
    client: Any = mongo.client(settings.mongo)
    await client.drop_database(settings.mongo.database)
    await client.close()


async def test_a_good_setup_passes_and_a_missing_worker_is_named(live: Settings) -> None:
    before = by_name(await doctor.run(live))
    # No worker has run yet: nothing consumes, and its indexes are not made.
    assert not before["consumers of hh.callbacks.process"].ok
    assert "start hh-worker" in before["consumers of hh.callbacks.process"].detail
    assert not before["index orders.next_poll_at_1"].ok
    worker = Worker(live)
    await worker.start(http=False)
    try:
        checks = await doctor.run(live)
    finally:
        await worker.stop()
    failed = [check.line() for check in checks if not check.ok]
    assert failed == []
    named = by_name(checks)
    assert {"config", "broker", "store", "callback URL", "success URL", "decline URL"} <= set(
        named)
    assert "accepts our signature" in named[f"{next(iter(live.projects))} HighHelp API"].detail


async def test_each_broken_part_is_a_cross_with_what_to_do(
    live: Settings, make_settings: Callable[..., Settings],
) -> None:
    project_id = next(iter(live.projects))
    # The merchant key HighHelp does not know (the sandbox registered another).
    wrong_key = make_settings({"api_base_url": live.projects[project_id].api_base_url,
                               "request_hmac_key": "callback_hmac.txt"})
    [api] = [c for c in await doctor.run(wrong_key) if c.name.endswith("HighHelp API")]
    assert not api.ok and "answered 401" in api.detail and "hh-admin keys show" in api.detail
    # The broker and the store not answering.
    closed = free_port()
    away = replace(live, amqp=replace(live.amqp, url=f"amqp://guest:guest@127.0.0.1:{closed}/"),
                   mongo=replace(live.mongo, url=f"mongodb://127.0.0.1:{closed}",
                                 timeout_ms=500))
    named = by_name(await doctor.run(away))
    assert not named["broker"].ok and f"127.0.0.1:{closed}" in named["broker"].detail
    assert "guest" not in named["broker"].detail  # never the credentials
    assert not named["store"].ok and "[mongo] url" in named["store"].detail
    # The public URL unset, or not reaching the ingest (here: the sandbox answers instead).
    unset = by_name(await doctor.run(replace(live, ingest=replace(live.ingest, public_url=""))))
    assert not unset["callback URLs"].ok and "public_url" in unset["callback URLs"].detail
    elsewhere = replace(live, ingest=replace(
        live.ingest, public_url=live.projects[project_id].api_base_url))
    assert not by_name(await doctor.run(elsewhere))["callback URL"].ok
    # No cash register at all.
    empty = replace(live, projects={})
    assert not by_name(await doctor.run(empty))["config"].ok


async def test_the_command_exits_non_zero_on_a_cross_and_prints_no_secret(
    live: Settings, capsys: pytest.CaptureFixture[str],
) -> None:
    from admin.__main__ import doctor_command

    assert await doctor_command(live, as_json=False) == 1  # no worker: consumers missing
    printed = capsys.readouterr().out
    assert printed.count("\n") >= 10 and "✗ consumers of hh.callbacks.process" in printed
    project = next(iter(live.projects.values()))
    for key in project.callback_keys:
        if key.hmac_secret is not None:
            assert key.hmac_secret.decode() not in printed


async def test_the_other_crosses_a_missing_key_a_refused_topology_and_silence(
    live: Settings, make_settings: Callable[..., Settings],
) -> None:
    project_id = next(iter(live.projects))
    closed = free_port()
    # No merchant key: polls cannot run, and HighHelp's API is not even tried.
    keyless = by_name(await doctor.run(make_settings({"merchant_private_key": ""})))
    assert not keyless[f"{project_id} merchant key"].ok
    assert "merchant_private_key" in keyless[f"{project_id} merchant key"].detail
    assert not keyless[f"{project_id} HighHelp API"].ok
    # The broker holds the contract's queues with another delivery limit: declaring refuses.
    other = replace(live, amqp=replace(live.amqp, delivery_limit=7))
    refused = by_name(await doctor.run(other))["broker"]
    assert not refused.ok and "refuses the contract's topology" in refused.detail
    # HighHelp's API and the public URL that do not answer at all.
    silent = replace(live, ingest=replace(live.ingest, public_url=f"http://127.0.0.1:{closed}"),
                     projects={project_id: replace(live.projects[project_id],
                                                   api_base_url=f"http://127.0.0.1:{closed}")})
    named = by_name(await doctor.run(silent))
    assert not named[f"{project_id} HighHelp API"].ok
    assert "did not answer" in named[f"{project_id} HighHelp API"].detail
    assert not named["callback URL"].ok and "no answer" in named["callback URL"].detail
