"""The benchmark survives a slow machine, and cleans up when a stage dies anyway."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import bench.__main__ as bench_main
from bench import stages
from shared import mongo
from shared.settings import Settings

pytestmark = pytest.mark.services


async def test_storing_orders_is_not_cut_off_by_the_clients_fixed_timeout(
    settings: Settings,
) -> None:
    """A client whose every operation may take 0.1 s (a machine far slower than the work):
    the growth stage's writes are given the time their size needs instead."""
    hurried = replace(settings, mongo=replace(settings.mongo, timeout_ms=50))
    await stages.store_orders(hurried, 3000, batch=3000)
    client: Any = mongo.client(settings.mongo)
    try:
        stored = await client[settings.mongo.database].orders.count_documents({})
    finally:
        await client.close()
    assert stored == 3000
    # The sweep's query scans them all on the local server: it too gets the time it needs.
    assert (await stages.due_query_ms(hurried, repeats=1))["found"] == 3


async def test_a_stage_that_dies_empties_the_queues_and_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    emptied: list[bool] = []

    class Bench:
        def __init__(self, *_args: Any) -> None:
            pass

        async def fresh(self, *, last: bool = False) -> None:
            emptied.append(last)

    async def dies(*_args: Any) -> dict[str, Any]:
        raise TimeoutError("the growth stage, on a slow machine")

    monkeypatch.setattr(bench_main, "Bench", Bench)
    monkeypatch.setattr(bench_main, "_stages", dies)
    run: Callable[..., Any] = bench_main.run
    with pytest.raises(TimeoutError):
        await run(argparse.Namespace(), tmp_path)
    assert emptied == [True]
