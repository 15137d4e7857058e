"""What every benchmark needs: the server, worker processes, bounded waits, records.

Every process the harness starts runs in its own session (so its own process group) and
is stopped by signalling the whole group: SIGTERM, then SIGKILL after a grace period.
Prefork pools and forked work horses therefore go with their parent. `ProcessTracker`
remembers every group started so `cli.py` can kill leftovers in a `finally`.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
JOBS_DIR = BENCH_DIR / "jobs"
RESULTS_DIR = BENCH_DIR / "results"
STOP_GRACE_S = 5.0


class Unavailable(Exception):
    """A system or mode cannot be measured here (not installed, not implemented, failed)."""


# --------------------------------------------------------------------------- processes


class ProcessTracker:
    """Every worker process group started during the run, for the final cleanup."""

    def __init__(self) -> None:
        self.procs: list[WorkerProcess] = []

    def kill_all(self) -> None:
        for proc in self.procs:
            proc.stop(grace_s=1.0)


TRACKER = ProcessTracker()


class WorkerProcess:
    """One command in its own process group, its output in a log file."""

    def __init__(self, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path = ROOT) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env or {})
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=cwd, env=full_env,
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        TRACKER.procs.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return "\n".join(text.strip().splitlines()[-lines:]) or "(no output)"

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the group, SIGKILL it after grace_s, reap the leader."""
        if self.proc.returncode is not None and not _group_alive(self.pid):
            return
        _signal_group(self.pid, signal.SIGTERM)
        end = time.monotonic() + grace_s
        while time.monotonic() < end and (self.proc.poll() is None or _group_alive(self.pid)):
            time.sleep(0.02)
        _signal_group(self.pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # zombies of the group still answer signal 0; count only live members
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return False


def python_argv(*args: str) -> list[str]:
    return [sys.executable, *args]


def tree_rss_bytes(pid: int) -> int:
    """RSS of a process and all its descendants."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live descendants."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


# --------------------------------------------------------------------------- waiting


def wait_until(check: Callable[[], Any], timeout_s: float, interval_s: float = 0.01,
               what: str = "condition") -> Any:
    """Call check until it returns something truthy; Unavailable after timeout_s."""
    end = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= end:
            raise Unavailable(f"{what} not reached within {timeout_s:g} s")
        time.sleep(interval_s)


def left_s(deadline: float, floor_s: float = 0.001) -> float:
    """Seconds left until a time.monotonic() deadline (at least floor_s)."""
    return max(floor_s, deadline - time.monotonic())


# --------------------------------------------------------------------------- redis


def flushall(url: str) -> None:
    with redis.Redis.from_url(url) as client:
        client.flushall()


def used_memory(url: str) -> int:
    with redis.Redis.from_url(url) as client:
        return int(client.info("memory")["used_memory"])


def server_version(url: str) -> str:
    with redis.Redis.from_url(url) as client:
        info = client.info("server")
    name = "valkey" if "valkey_version" in info else "redis"
    return f"{name} {info.get('valkey_version') or info.get('redis_version')}"


# --------------------------------------------------------------------------- records


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of values; nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Throughput:
    """N jobs from the first enqueue until the client has seen every result."""

    n: int
    seen: int
    elapsed_s: float
    wrong: int = 0  # results that did not equal their input

    @property
    def jobs_per_s(self) -> float:
        return self.seen / self.elapsed_s if self.elapsed_s > 0 else math.nan

    @property
    def complete(self) -> bool:
        return self.seen == self.n and self.wrong == 0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "jobs_per_s": round(self.jobs_per_s, 1),
                "complete": self.complete}


@dataclass
class Latency:
    """Sequential round trips after a warm-up, in seconds."""

    samples_s: list[float] = field(default_factory=list)
    wanted: int = 0

    @property
    def p50_ms(self) -> float:
        return percentile(self.samples_s, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.samples_s, 99) * 1000

    @property
    def mean_ms(self) -> float:
        return sum(self.samples_s) / len(self.samples_s) * 1000 if self.samples_s else math.nan

    def to_json(self) -> dict[str, Any]:
        return {"calls": len(self.samples_s), "wanted": self.wanted,
                "p50_ms": round(self.p50_ms, 3), "p99_ms": round(self.p99_ms, 3),
                "mean_ms": round(self.mean_ms, 3),
                "max_ms": round(max(self.samples_s) * 1000, 3) if self.samples_s else None}


@dataclass
class TimeoutRun:
    """One timed-out job; every figure is seconds after its deadline (None = never)."""

    kind: str  # "sleep" or "c_call"
    failed_after_s: float | None  # the caller learned the job failed
    pool_full_after_s: float | None  # the job's process gone and the pool back to size
    next_ran_after_s: float | None  # the job queued behind it started running
    outcome: str  # what the caller got
    process_gone: bool  # the process that ran the job ended (killed or exited) in time

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- usage


# commands that run a script: the commands it makes are counted under their own names too
SCRIPT_COMMANDS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})


@dataclass
class Usage:
    """Where one measurement spent its CPU, and what it asked of Redis, per job."""

    client_cpu_ms: float
    workers_cpu_ms: float
    redis_cpu_ms: float
    redis_calls: float  # every command Redis ran, including those inside Lua scripts
    redis_scripts: float  # EVAL/EVALSHA/FCALL calls (each one round trip)
    top_commands: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


class UsageMeter:
    """Snapshots CPU of the client, the workers' process trees and the server, and resets
    Redis's command statistics; `per_job(n)` gives the differences divided by N."""

    def __init__(self, url: str, server_pid: int | None, worker_pids: Sequence[int]) -> None:
        self.url = url
        self.server_pid = server_pid
        self.worker_pids = list(worker_pids)
        self.me = psutil.Process()
        with redis.Redis.from_url(url) as client:
            client.config_resetstat()
        self.start = self._cpu()

    def _cpu(self) -> tuple[float, float, float]:
        mine = self.me.cpu_times()
        workers = sum(tree_cpu_seconds(pid) for pid in self.worker_pids)
        server = tree_cpu_seconds(self.server_pid) if self.server_pid else 0.0
        return mine.user + mine.system, workers, server

    def per_job(self, n: int) -> Usage:
        end = self._cpu()
        with redis.Redis.from_url(self.url) as client:
            stats = client.info("commandstats")
        n = max(1, n)
        calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
        calls.pop("config|resetstat", None)
        scripts = sum(v for k, v in calls.items() if k.split("|")[0] in SCRIPT_COMMANDS)
        top = sorted(calls.items(), key=lambda kv: -kv[1])[:6]
        return Usage(client_cpu_ms=(end[0] - self.start[0]) * 1000 / n,
                     workers_cpu_ms=(end[1] - self.start[1]) * 1000 / n,
                     redis_cpu_ms=(end[2] - self.start[2]) * 1000 / n,
                     redis_calls=sum(calls.values()) / n, redis_scripts=scripts / n,
                     top_commands={k: round(v / n, 2) for k, v in top})
