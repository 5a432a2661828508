"""The ingest past its capacity, measured as a peer would be: vegeta (deploy/tools.sh vegeta)
as the client, pre-signed distinct alerts, a closed-loop maximum, then open-loop arrival rates
at shares of it; per rate the goodput, the refusals, the latencies of each, and the ingest's
CPU-seconds (from /proc) per 1,000 accepted alerts."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import resource
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.loadgen import Request, percentiles

SHARES = (0.25, 0.50, 0.80, 1.20, 2.00)
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
# The ingest before admission control and the CPU work (issue 18), measured in the same run
# as today's for the "before" rows: the machine's speed varies too much between runs.
BASELINE_REV = "dea6efc"
# The closed loop's ingest: its bound on alerts in flight fixed at the ceiling (the baseline
# ignores the variable: it has a fixed bound, or none).
FIXED_BOUND = {"HH_INGEST_LATENCY_TARGET_S": "0"}


def baseline_code(folder: Path, rev: str = BASELINE_REV) -> Path | None:
    """The ingest and shared packages at `rev`, unpacked under `folder` (None: no git)."""
    target = folder / f"baseline-{rev}"
    if (target / "ingest").is_dir():
        return target
    target.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", rev, "ingest", "shared"],  # noqa: S603, S607
                             capture_output=True, check=False)
    if archive.returncode != 0:
        return None
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout,  # noqa: S603, S607
                   check=True)
    return target


def baseline_config(config: Path) -> Path:
    """The benchmark's config as the baseline reads it: without the settings added since
    (it refuses a key it does not know), beside the original, whose key paths are relative."""
    later = ("public_url",)
    kept = [line for line in config.read_text().splitlines()
            if line.split("=")[0].strip() not in later]
    target = config.with_name(f"config-{BASELINE_REV}.toml")
    target.write_text("\n".join(kept) + "\n")
    target.chmod(0o600)
    return target


def rabbit_pid() -> int | None:
    found = subprocess.run(["pgrep", "-f", "beam.smp"], capture_output=True,  # noqa: S607
                           text=True, check=False).stdout.split()
    return int(found[0]) if found else None


@dataclass(frozen=True)
class Cores:
    """Where the stage's processes run with --overload-own-cpu: the ingest (one thread does its
    work) on a CPU of its own, the load generator, the broker and the bench on the others.
    Sharing CPUs with them, the ingest's latency and CPU include their scheduling: at 80 % of
    the maximum on two CPUs the machine was 84 % busy, and alerts waited for a CPU while
    vegeta or RabbitMQ held both."""

    ingest: frozenset[int]
    others: frozenset[int]

    def describe(self) -> str:
        return f"ingest on CPU {_cpus(self.ingest)}; vegeta, RabbitMQ and the bench on " \
               f"CPU {_cpus(self.others)}"


def split_cores() -> Cores | None:
    """The first CPU this process may use for the ingest, the rest for the others (None: a
    single CPU, nothing to split)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return Cores(frozenset(cpus[:1]), frozenset(cpus[1:]))


def pin(pid: int, cpus: Iterable[int]) -> None:
    """Every thread of `pid` on `cpus` (a thread made later inherits its maker's)."""
    allowed = set(cpus)
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(task.name), allowed)


@contextlib.contextmanager
def others_pinned(cores: Cores | None) -> Iterator[None]:
    """The bench (so the vegeta it starts) and RabbitMQ on `cores.others` until the end; each
    back on the CPUs it had before. The ingest is pinned as it starts (it inherits the
    bench's CPUs until then)."""
    if cores is None:
        yield
        return
    pids = [os.getpid()] + ([rabbit] if (rabbit := rabbit_pid()) else [])
    had = {pid: os.sched_getaffinity(pid) for pid in pids}
    for pid in pids:
        pin(pid, cores.others)
    try:
        yield
    finally:
        for pid, cpus in had.items():
            with contextlib.suppress(ProcessLookupError, FileNotFoundError):
                pin(pid, cpus)


def _cpus(cpus: frozenset[int]) -> str:
    ordered = sorted(cpus)
    if len(ordered) > 1 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}-{ordered[-1]}"
    return ",".join(map(str, ordered))


def vegeta_path() -> str:
    here = Path(__file__).resolve().parent.parent / "deploy" / "tools.sh"
    subprocess.run([str(here), "vegeta"], check=True)  # noqa: S603 - the project's own script
    return subprocess.run([str(here), "vegeta-path"], check=True, capture_output=True,  # noqa: S603
                          text=True).stdout.strip()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def targets_file(requests: Sequence[Request], base_url: str, path: Path) -> Path:
    """vegeta's JSON targets, one line per request, bodies base64."""
    with path.open("w") as out:
        for request in requests:
            out.write(json.dumps({
                "method": "POST", "url": base_url + request.path,
                "body": base64.b64encode(request.body).decode("ascii"),
                "header": {k: [v] for k, v in request.headers.items()}}) + "\n")
    return path


@dataclass
class Attack:
    """One vegeta run: each answer's status and latency (seconds)."""

    seconds: float
    answers: list[tuple[int, float]]
    cpu_s: float
    others_cpu_s: dict[str, float]  # the load generator's and the broker's, beside it

    def row(self, name: str, offered_rps: float | None) -> dict[str, Any]:
        codes = Counter(str(code) for code, _ in self.answers)
        accepted = [lat for code, lat in self.answers if code == 200]
        refused = [lat for code, lat in self.answers if code == 503]
        ms = {"accepted_ms": _ms(accepted), "refused_ms": _ms(refused)}
        return {
            "name": name, "offered_rps": round(offered_rps, 1) if offered_rps else None,
            "requests": len(self.answers), "seconds": round(self.seconds, 2),
            "goodput_rps": round(len(accepted) / self.seconds, 1),
            "accepted_share": round(len(accepted) / max(1, len(self.answers)), 5),
            "refused": len(refused), "statuses": dict(codes), **ms,
            "cpu_s": round(self.cpu_s, 2),
            "cpu_s_per_1000_accepted": round(1000 * self.cpu_s / max(1, len(accepted)), 3),
            "requests_per_cpu_s": round(len(self.answers) / self.cpu_s, 1) if self.cpu_s else 0,
            "others_cpu_s": {k: round(v, 2) for k, v in self.others_cpu_s.items()},
        }


def _ms(samples: list[float]) -> dict[str, float]:
    return {k: round(v * 1000, 2) for k, v in percentiles(samples).items() if k != "p99.9"}


def attack(vegeta: str, targets: Path, pid: int, *, rate: float | None, seconds: float,
           workers: int = 32) -> Attack:
    """`rate` None: closed loop with `workers` connections; else open loop at `rate`/s (vegeta
    adds workers as answers lag, so arrivals keep their pace)."""
    pace = ["-rate=0", f"-max-workers={workers}", f"-workers={workers}"] if rate is None \
        else [f"-rate={rate:.0f}/s"]
    rabbit = rabbit_pid()
    cpu_before, rabbit_before = cpu_seconds(pid), cpu_seconds(rabbit) if rabbit else 0.0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    attacked = subprocess.run(  # noqa: S603 - our pinned vegeta
        [vegeta, "attack", "-format=json", f"-targets={targets}", f"-duration={seconds}s",
         "-timeout=10s", "-keepalive=true", *pace],
        check=True, capture_output=True)
    cpu = cpu_seconds(pid) - cpu_before
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    others = {"vegeta": after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime,
              "rabbitmq": cpu_seconds(rabbit) - rabbit_before if rabbit else 0.0}
    encoded = subprocess.run([vegeta, "encode", "-to=json"], input=attacked.stdout,  # noqa: S603
                             check=True, capture_output=True).stdout
    answers, first, last = [], float("inf"), 0.0
    for line in encoded.splitlines():
        hit = json.loads(line)
        sent = datetime.fromisoformat(hit["timestamp"]).timestamp()
        latency = hit["latency"] / 1e9
        first, last = min(first, sent), max(last, sent + latency)
        answers.append((int(hit["code"]), latency))
    return Attack(max(seconds, last - first), answers, cpu, others)
