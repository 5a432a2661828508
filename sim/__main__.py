"""`python -m sim`: run schedules of the simulator and judge each by the invariants.

    python -m sim --schedules 10000 --seed 7   # schedules 7, 8, ... 10006
    python -m sim --seed 1234                  # one schedule, its whole trace on failure

Ends with one line `schedules=N violations=V steps_per_schedule=... schedules_per_s=...`,
and exits 1 on any violation, naming its seed (replay it with --seed)."""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
import time
import traceback
from collections.abc import MutableMapping
from typing import Any

import structlog

from sim.scenario import draw
from sim.sched import current
from sim.world import World

TRACE: list[str] = []


def _to_trace(_logger: object, name: str, event: MutableMapping[str, Any]) -> Any:
    replica = current.get()
    words = " ".join(f"{k}={v}" for k, v in event.items()
                     if k not in ("event", "timestamp", "raw_body"))
    TRACE.append(f"             {replica.name if replica else '-'} log {name} "
                 f"{event.get('event')} {words}")
    raise structlog.DropEvent


def _drop(_logger: object, _name: str, _event: MutableMapping[str, Any]) -> Any:
    raise structlog.DropEvent


def quiet_logs(trace: bool) -> None:
    if trace:
        structlog.configure(processors=[structlog.contextvars.merge_contextvars, _to_trace],
                            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
                            cache_logger_on_first_use=False)
    else:
        structlog.configure(processors=[_drop],
                            wrapper_class=structlog.make_filtering_bound_logger(
                                logging.CRITICAL), cache_logger_on_first_use=False)


def one(seed: int, trace: bool = False) -> tuple[int, int, str | None]:
    """(seed, steps, the violation or None)."""
    world = World(draw(seed), trace=trace)
    if trace:
        TRACE.clear()
        world.trace = TRACE
    try:
        world.run()
    except AssertionError as exc:
        return seed, world.steps, f"{type(exc).__name__}: {exc}"
    except BaseException as exc:  # noqa: BLE001 - a crash of the worker code is a finding too
        return seed, world.steps, "".join(traceback.format_exception(exc))[-3000:]
    return seed, world.steps, None


def _worker_init() -> None:
    quiet_logs(False)


def _run_many(first: int, count: int, jobs: int, stop: bool) -> tuple[int, int, list[Any]]:
    seeds = range(first, first + count)
    done = steps = 0
    failed = []
    if jobs > 1:
        with multiprocessing.get_context("fork").Pool(jobs, _worker_init) as pool:
            for seed, n, problem in pool.imap_unordered(one, seeds, chunksize=16):
                done, steps = done + 1, steps + n
                if problem:
                    failed.append((seed, problem))
                    if stop:
                        pool.terminate()
                        break
    else:
        quiet_logs(False)
        for seed in seeds:
            seed, n, problem = one(seed)
            done, steps = done + 1, steps + n
            if problem:
                failed.append((seed, problem))
                if stop:
                    break
    return done, steps, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=None,
                        help="the first schedule's seed (default: from the clock, printed)")
    parser.add_argument("--schedules", type=int, default=None,
                        help="how many schedules (default 1, with its trace on failure)")
    parser.add_argument("--jobs", type=int, default=1, help="processes running schedules")
    parser.add_argument("--stop-on-first", action="store_true",
                        help="stop at the first violation (mutants)")
    parser.add_argument("--trace", action="store_true", help="print the trace even on success")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time() * 1000) % 10**9
    if args.schedules is None:
        quiet_logs(True)
        started = time.perf_counter()
        seed, steps, problem = one(seed, trace=True)
        if problem or args.trace:
            print("\n".join(TRACE))
        if problem:
            print(f"VIOLATION seed={seed}: {problem}")
        print(f"schedules=1 violations={int(bool(problem))} steps_per_schedule={steps} "
              f"schedules_per_s={1 / (time.perf_counter() - started):.1f} seed={seed}")
        return 1 if problem else 0
    started = time.perf_counter()
    done, steps, failed = _run_many(seed, args.schedules, args.jobs, args.stop_on_first)
    elapsed = time.perf_counter() - started
    for bad_seed, problem in failed[:10]:
        print(f"VIOLATION seed={bad_seed}: {problem}"
              f"  (replay: make sim ARGS=\"--seed {bad_seed}\")")
    print(f"schedules={done} violations={len(failed)} "
          f"steps_per_schedule={steps / max(done, 1):.0f} "
          f"schedules_per_s={done / elapsed:.1f} seed={seed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
