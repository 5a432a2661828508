"""The overload stage's placement of processes on CPUs, and how its rounds count."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import overload, report

two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: nothing to split")


def _allowed(pid: int) -> set[str]:
    """Each thread's CPUs as /proc spells them."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                found.add(line.split(":", 1)[1].strip())
    return found


@two_cpus
def test_every_thread_of_a_process_is_pinned() -> None:
    threaded = ("import threading, time\n"
                "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
                "print('ready', flush=True)\ntime.sleep(30)\n")
    child = subprocess.Popen([sys.executable, "-c", threaded], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        assert len(list(Path(f"/proc/{child.pid}/task").iterdir())) == 2
        cores = overload.split_cores()
        assert cores is not None
        overload.pin(child.pid, cores.ingest)
        assert _allowed(child.pid) == {str(min(cores.ingest))}
    finally:
        child.kill()
        child.wait()


@two_cpus
def test_the_bench_and_what_it_starts_run_apart_from_the_ingest_until_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(overload, "rabbit_pid", lambda: None)  # the broker is not this test's
    had = os.sched_getaffinity(0)
    cores = overload.split_cores()
    assert cores is not None and not cores.ingest & cores.others
    with overload.others_pinned(cores):
        assert os.sched_getaffinity(0) == cores.others
        started = subprocess.run(["grep", "Cpus_allowed_list", "/proc/self/status"],
                                 capture_output=True, text=True, check=True).stdout
        assert str(min(cores.ingest)) not in started.split(":", 1)[1].replace("-", ",").split(",")
    assert os.sched_getaffinity(0) == had


def _closed(variant: str, round_: int, cpu_ms: float) -> dict[str, Any]:
    return {"variant": variant, "name": "closed loop", "round": round_,
            "cpu_s_per_1000_accepted": cpu_ms, "requests_per_cpu_s": 1000 / cpu_ms}


def _open(variant: str, share: float, cpu_ms: float) -> dict[str, Any]:
    return {"variant": variant, "name": f"open loop {share:.0%}", "cpu_s_per_1000_accepted": cpu_ms,
            "goodput_rps": 500.0, "accepted_share": 1.0, "refused_ms": {"p99": 10.0},
            "accepted_ms": {"p50": 5.0, "p99": 20.0, "max": 40.0}}


def test_the_cpu_cut_counts_each_rounds_pair_by_their_median() -> None:
    """Before and now measured a minute apart, round by round: the cut is the median of the
    rounds' cuts (50 %, 45 %, and 25 % in a round the machine slowed for `now`), not the
    last round's, nor the first's."""
    rows = [_closed("before", 1, 2.0), _closed("now", 1, 1.0),
            _closed("before", 2, 2.0), _closed("now", 2, 1.1),
            _closed("before", 3, 2.0), _closed("now", 3, 1.5)]
    rows += [_open(v, s, 1.0) for v in ("before", "now") for s in (0.5, 0.8, 2.0)]
    targets = {name: (measured, verdict) for name, measured, verdict in
               report.overload_targets({"overload": rows, "overload_now_max_rps": 500.0})}
    measured, verdict = targets["CPU per accepted alert ≥ 40 % lower than before (closed loop)"]
    assert measured.startswith("45% lower (median of 50%, 45%, 25%")
    assert verdict == "met"
    peer = targets["ingest requests per CPU-second ≥ the peer's (1,395-1,493 measured beside it)"]
    assert peer[0].startswith("909 (closed loop, median of 1000, 909, 667)")
