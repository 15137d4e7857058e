"""The scale section (sandboxrunner only): a backlog of no-op jobs enqueued with
`Client.enqueue_many` and drained by two supervisors with nobody waiting for the results,
then the CPU of an idle supervisor. `run_scale` is the section; cli.py calls it.

One drain (`measure_drain`) of WAITING jobs, on an emptied server:

  1. SUPERVISORS `sandboxrunner start` processes start and heartbeat, and the queue is
     paused (`Store.set_paused`, what `sandboxrunner.pause` does): nobody claims while
     the backlog goes in;
  2. the backlog goes in with `enqueue_many`, MAX_BATCH (10,000) calls a round trip; Redis
     ``used_memory`` after minus before, over WAITING, is the memory of one waiting job;
  3. the queue is resumed. A paused supervisor looks again every `fetching.PAUSED_POLL_S`
     (0.25 s), so a small backlog may be drained by whichever looks first (the shares
     show it). psutil samples each supervisor's RSS every RSS_INTERVAL_S (rss.py) until
     the queue's stats hash counts WAITING completed, and `DrainUsage` takes the CPU of
     the supervisors and of Redis, and Redis's command counts, per job over the drain;
  4. the figures come from Redis's own clock in a fixed number of reads however big the
     backlog (a million records are never read): the first claim is the earliest
     ``start`` of the first FIRST_CLAIMED ids enqueued (the wait list is FIFO), and every
     settle time is in the ``done:completed`` index (keys.py: id -> settled ms), so the
     settle at any rank is one ZRANGE. From those: the whole rate (WAITING over first
     claim to last settle), the rate of the middle 80 % of settles (no ramp-up, no tail),
     and the rate of each tenth of the settles (a deep backlog that slowed claims would
     show as slower early tenths). Each supervisor's share is read from the ``sid`` of
     SHARE_SAMPLE ids spread over the backlog. ``used_memory`` after the drain is kept
     too: the completed records stay for ``result_ttl`` (an hour), and they are not the
     waiting figure.

Backlogs: ``--waiting`` (1,000 and 10,000 by default, median of SMALL_RUNS drains each),
``--scale-100k`` and ``--scale-1m`` add one drain of 100,000 and of 1,000,000;
``--scale-processes`` drains every backlog in process mode too.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import redis

from benchmarks.harness import flushall, tree_cpu_seconds, used_memory
from benchmarks.measure import console
from benchmarks.rss import RSS_INTERVAL_S, RssSampler, rss_trend
from benchmarks.sandboxrunner_bench import (
    PROCESS_CHILDREN,
    QUEUE,
    Supervisor,
    make_client,
    process_mode_missing,
)
from benchmarks.variant import PROCESSES, THREADS, payload
from sandboxrunner.bulk import MAX_BATCH
from sandboxrunner.client import Client
from sandboxrunner.store import Store

SUPERVISORS = 2
FIRST_CLAIMED = 50  # the first ids enqueued: the first claim is among them
SHARE_SAMPLE = 1000  # ids read back for the supervisors' shares
SMALL_RUNS = 7  # drains of a backlog up to SMALL_MAX, the median kept
SMALL_MAX = 10_000
MIB = 2**20


# --------------------------------------------------------------------------- flags


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The scale section's flags."""
    p.add_argument("--waiting", default="1000,10000",
                   help="backlogs for the scale drain, comma-separated")
    p.add_argument("--scale-100k", action="store_true", help="add a 100,000-job backlog")
    p.add_argument("--scale-1m", action="store_true",
                   help="add a 1,000,000-job backlog (a few minutes, ~1 GB of Redis)")
    p.add_argument("--scale-processes", action="store_true",
                   help="drain every backlog in process mode too")
    p.add_argument("--idle-seconds", type=float, default=10.0, help="idle CPU sample length")


def parse_waiting(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``args.waiting`` as sorted distinct backlogs, with the ``--scale-*`` ones added."""
    try:
        waiting = {int(x.replace("_", "")) for x in args.waiting.split(",") if x.strip()}
    except ValueError:
        p.error(f"--waiting: {args.waiting!r} is not a comma-separated list of counts")
    if any(n <= 0 for n in waiting):
        p.error(f"--waiting: {args.waiting!r}: every backlog must be at least 1")
    waiting |= {n for n, on in ((100_000, args.scale_100k), (1_000_000, args.scale_1m)) if on}
    args.waiting = sorted(waiting)


# --------------------------------------------------------------------------- the section


def run_scale(url: str, logdir: Path, args: argparse.Namespace,
              results: dict[str, Any]) -> None:
    if "sandboxrunner" not in args.systems:
        return
    scale: dict[str, Any] = {"drain": [], "idle": [], "problems": []}
    results["scale"] = scale
    for mode in (THREADS, PROCESSES) if args.scale_processes else (THREADS,):
        missing = process_mode_missing() if mode == PROCESSES else None
        for waiting in args.waiting:
            if missing:
                scale["problems"].append(f"drain {waiting} {mode}: {missing}")
                continue
            _guard(scale, f"drain {waiting} {mode}", scale["drain"],
                   partial(_median_drain, url, logdir, waiting, mode, args))
    for mode in (THREADS, PROCESSES):
        flushall(url)
        missing = process_mode_missing() if mode == PROCESSES else None
        if missing:
            scale["idle"].append({"mode": mode, "status": "n/a", "reason": missing})
            continue
        _guard(scale, f"idle {mode}", scale["idle"],
               partial(measure_idle_cpu, url, logdir, args.idle_seconds, mode == PROCESSES))
    console.log(f"scale: idle {scale['idle']}")


def _median_drain(url: str, logdir: Path, waiting: int, mode: str,
                  args: argparse.Namespace) -> dict[str, Any]:
    """The median drain of SMALL_RUNS (1 run for backlogs over SMALL_MAX: they take long
    enough), by the whole drain rate; every run's rate is kept."""
    budget = max(args.max_seconds, waiting / 500)
    runs = []
    for _ in range(SMALL_RUNS if waiting <= SMALL_MAX else 1):
        flushall(url)
        runs.append(measure_drain(url, logdir, waiting, budget, mode == PROCESSES))
        console.log(f"scale: {waiting:,} waiting, {mode}: {_brief(runs[-1])}")
    runs.sort(key=lambda r: _nan_low(r["drain_jobs_per_s"]))
    return {**runs[len(runs) // 2], "runs_jobs_per_s": [r["drain_jobs_per_s"] for r in runs]}


def _nan_low(value: float | None) -> float:
    return -math.inf if value is None or math.isnan(value) else value


def _brief(run: dict[str, Any]) -> str:
    growth = ", ".join(f"{r['growth_mib']}" for r in run["rss"])
    return (f"enqueue {run['enqueue_jobs_per_s']:,} jobs/s, drain {run['drain_jobs_per_s']:,}"
            f" jobs/s (middle 80% {run['drain_mid_jobs_per_s']:,}), "
            f"{run['redis_bytes_per_waiting_job']} B/waiting job, RSS growth {growth} MiB")


def _guard(scale: dict[str, Any], what: str, into: list[dict[str, Any]],
           step: Callable[[], dict[str, Any]]) -> None:
    """Append step() to INTO; a failure becomes a line in scale["problems"]."""
    try:
        into.append(step())
    except Exception as exc:  # noqa: BLE001 - one scale figure is n/a, the rest go on
        console.log(f"[red]scale {what} failed[/]: {exc!r}")
        scale["problems"].append(f"{what}: {type(exc).__name__}: {str(exc)[:300]}")


# --------------------------------------------------------------------------- one drain


@dataclass(frozen=True)
class Backlog:
    """What went in: how many jobs, in how long, and the ids read back after the drain."""

    enqueued: int
    enqueue_s: float
    first_ids: list[str]  # the first FIRST_CLAIMED enqueued: claimed first (FIFO)
    sample_ids: list[str]  # about SHARE_SAMPLE, spread evenly over the backlog


def enqueue_backlog(client: Client, count: int, deadline: float) -> Backlog:
    """Enqueue COUNT no-op jobs with `enqueue_many`, MAX_BATCH a call, until DEADLINE."""
    step = max(1, count // SHARE_SAMPLE)
    first: list[str] = []
    sample: list[str] = []
    done = 0
    start = time.monotonic()
    while done < count and time.monotonic() < deadline:
        size = min(MAX_BATCH, count - done)
        ids = [h.id for h in client.enqueue_many("noop", [payload(done + i)
                                                          for i in range(size)])]
        first += ids[:FIRST_CLAIMED - len(first)]
        sample += ids[-done % step::step]  # the ids whose index is a multiple of step
        done += size
    return Backlog(done, time.monotonic() - start, first, sample)


def measure_drain(url: str, logdir: Path, waiting: int, budget_s: float,
                  processes: bool = False) -> dict[str, Any]:
    """One drain of WAITING jobs by SUPERVISORS supervisors (module docstring)."""
    client = make_client(url)
    supervisors: list[Supervisor] = []
    try:
        client.store.set_paused(QUEUE, True)
        for _ in range(SUPERVISORS):
            supervisors.append(Supervisor(url, logdir, processes=processes,
                                          concurrency=PROCESS_CHILDREN if processes else None))
        memory = [used_memory(url)]
        backlog = enqueue_backlog(client, waiting, time.monotonic() + budget_s)
        memory.append(used_memory(url))
        pids = [s.pid for s in supervisors]
        sampler, usage = RssSampler(pids, RSS_INTERVAL_S), DrainUsage(url, pids)
        client.store.set_paused(QUEUE, False)
        drained, drain_s = _wait_drained(client.store, backlog.enqueued, budget_s, usage)
        samples, cost = sampler.stop(), usage.per_job(drained)
        memory.append(used_memory(url))
        figures = drain_figures(client.store, backlog)
    finally:
        for supervisor in supervisors:
            supervisor.stop()
        client.close()
    shares = figures.pop("shares")
    return {"mode": PROCESSES if processes else THREADS, "waiting": backlog.enqueued,
            "supervisors": SUPERVISORS, "drained": drained, "drain_s": round(drain_s, 3),
            **_enqueue_figures(backlog, memory), **figures, "per_job": cost,
            "rss": [{"pid": pid, "share": shares.get(pid, 0.0), **rss_trend(own),
                     **_tree_figures(tree), **_thread_figures(sampler.threads[pid]),
                     "series_s_mib_threads": _series(own, sampler.threads[pid])}
                    for pid, (own, tree) in samples.items()]}


def _enqueue_figures(backlog: Backlog, memory: list[int]) -> dict[str, Any]:
    """The enqueue rate, and Redis memory per job waiting and per job completed (MEMORY:
    used_memory before the enqueue, after it, after the drain)."""
    per_job = max(1, backlog.enqueued)
    return {"enqueue_method": f"client.enqueue_many, {MAX_BATCH:,} a call",
            "enqueue_s": round(backlog.enqueue_s, 3),
            "enqueue_jobs_per_s": round(backlog.enqueued / backlog.enqueue_s, 1),
            "redis_bytes_per_waiting_job": round((memory[1] - memory[0]) / per_job, 1),
            "redis_bytes_per_completed_job": round((memory[2] - memory[0]) / per_job, 1),
            "redis_used_memory_mib": [round(m / MIB, 1) for m in memory]}


def _tree_figures(tree: list[tuple[float, int]]) -> dict[str, Any]:
    """The RSS of a supervisor with its children (process mode), last and max."""
    rss = [b for _, b in tree] or [0]
    return {"tree_last_mib": round(rss[-1] / MIB, 1), "tree_max_mib": round(max(rss) / MIB, 1)}


def _thread_figures(counts: list[int]) -> dict[str, Any]:
    """A supervisor's thread count at the first and last sample, and its max."""
    return {"threads_first": counts[0] if counts else None,
            "threads_last": counts[-1] if counts else None,
            "threads_max": max(counts, default=None)}


def _series(samples: list[tuple[float, int]],
            threads: list[int]) -> list[tuple[float, float, int]]:
    """The samples as (seconds, MiB, threads), rounded: kept in the JSON to plot or refit."""
    return [(round(t, 1), round(b / MIB, 2), n)
            for (t, b), n in zip(samples, threads, strict=False)]


class DrainUsage:
    """What a drain cost per job: CPU of the supervisors (with their children) and of
    Redis (``INFO cpu``, all its threads), and the commands Redis ran (``INFO
    commandstats``, reset at the start; commands inside scripts count too) with the
    microseconds the scripts took. `mark` notes the CPU at a count of jobs completed, so
    the cost of each tenth of the drain shows whether a job costs more with a deep queue
    (and on which side)."""

    def __init__(self, url: str, pids: list[int]) -> None:
        self.redis = redis.Redis.from_url(url)
        self.pids = pids
        self.redis.config_resetstat()
        self.marks = [(0, *self._cpu())]

    def _cpu(self) -> tuple[float, float]:
        info = self.redis.info("cpu")
        return (sum(tree_cpu_seconds(pid) for pid in self.pids),
                float(info["used_cpu_user"]) + float(info["used_cpu_sys"]))

    def mark(self, completed: int) -> None:
        self.marks.append((completed, *self._cpu()))

    def per_job(self, jobs: int) -> dict[str, Any]:
        stats = {k.removeprefix("cmdstat_"): v for k, v in
                 self.redis.info("commandstats").items() if k != "cmdstat_config|resetstat"}
        self.redis.close()
        jobs = max(1, jobs)
        scripts = [v for k, v in stats.items() if k.split("|")[0] in SCRIPT_COMMANDS]
        top = sorted(stats.items(), key=lambda kv: -int(kv[1]["calls"]))[:6]
        return {**_cpu_per_job(self.marks[0], self.marks[-1]),
                "redis_calls": round(sum(int(v["calls"]) for v in stats.values()) / jobs, 2),
                "redis_scripts": round(sum(int(v["calls"]) for v in scripts) / jobs, 4),
                "redis_script_us": round(sum(float(v["usec"]) for v in scripts) / jobs, 2),
                "top_commands": {k: round(int(v["calls"]) / jobs, 3) for k, v in top},
                "tenths": [_cpu_per_job(a, b) for a, b in zip(self.marks, self.marks[1:],
                                                              strict=False)]}


def _cpu_per_job(start: tuple[int, float, float], end: tuple[int, float, float]
                 ) -> dict[str, float]:
    """CPU per job (us) of the supervisors and of Redis between two marks."""
    jobs = max(1, end[0] - start[0])
    return {"supervisors_cpu_us": round((end[1] - start[1]) * 1e6 / jobs, 1),
            "redis_cpu_us": round((end[2] - start[2]) * 1e6 / jobs, 1)}


SCRIPT_COMMANDS = ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro")


def _completed(store: Store) -> int:
    return int(store.redis.hget(store.keys.stats(QUEUE), "completed") or 0)


def _wait_drained(store: Store, total: int, budget_s: float,
                  usage: DrainUsage) -> tuple[int, float]:
    """Wait until TOTAL jobs completed (or the budget ends), marking USAGE at each tenth
    of TOTAL and at the end: (completed, seconds waited)."""
    start = time.monotonic()
    done, tenth = _completed(store), 1
    while done < total and time.monotonic() - start < budget_s:
        time.sleep(0.01)
        done = _completed(store)
        if done < total and done >= total * tenth // 10:
            usage.mark(done)
            tenth = done * 10 // total + 1
    usage.mark(done)
    return done, time.monotonic() - start


# --------------------------------------------------------------------------- rates


def drain_figures(store: Store, backlog: Backlog) -> dict[str, Any]:
    """The drain rates and the supervisors' shares, from Redis's clock (module docstring);
    a rate is None when too few jobs settled to time it."""
    first_claim = _first_claim(store, backlog.first_ids)
    marks = settle_marks(store)
    if first_claim is None or not marks:
        return {"drain_jobs_per_s": None, "drain_mid_jobs_per_s": None,
                "drain_tenths_jobs_per_s": [], "shares": {}}
    return {"drain_jobs_per_s": _rate(marks[-1][0] + 1, first_claim, marks[-1][1]),
            "drain_mid_jobs_per_s": _rate(marks[9][0] - marks[1][0], marks[1][1], marks[9][1]),
            "drain_tenths_jobs_per_s": [_rate(b[0] - a[0], a[1], b[1])
                                        for a, b in zip(marks, marks[1:], strict=False)],
            "shares": _shares(store, backlog.sample_ids)}


def _rate(jobs: int, from_ms: int, to_ms: int) -> float | None:
    return round(jobs / ((to_ms - from_ms) / 1000), 1) if to_ms > from_ms else None


def settle_marks(store: Store) -> list[tuple[int, int]]:
    """(rank, settled ms) of the completed jobs at ranks 0, 10 %, ..., 90 % and the last:
    one ZRANGE each in the ``done:completed`` index, whatever its size."""
    key = store.keys.done(QUEUE, "completed")
    count = int(store.redis.zcard(key))
    if count < 10:
        return []
    ranks = [count * i // 10 for i in range(10)] + [count - 1]
    pipe = store.redis.pipeline(transaction=False)
    for rank in ranks:
        pipe.zrange(key, rank, rank, withscores=True)
    return [(rank, int(reply[0][1])) for rank, reply in zip(ranks, pipe.execute(), strict=True)]


def _first_claim(store: Store, first_ids: list[str]) -> int | None:
    """The earliest claim (server ms) of FIRST_IDS, the first jobs in the wait list."""
    pipe = store.redis.pipeline(transaction=False)
    for job_id in first_ids:
        pipe.hget(store.keys.job(job_id), "start")
    starts = [int(s) for s in pipe.execute() if s]
    return min(starts, default=None)


def _shares(store: Store, sample_ids: list[str]) -> dict[int, float]:
    """Supervisor pid -> the fraction of SAMPLE_IDS it ran (its sid is host-pid-hex)."""
    pipe = store.redis.pipeline(transaction=False)
    for job_id in sample_ids:
        pipe.hget(store.keys.job(job_id), "sid")
    pids = Counter(int(sid.rsplit(b"-", 2)[1]) for sid in pipe.execute() if sid)
    total = sum(pids.values()) or 1
    return {pid: round(n / total, 3) for pid, n in pids.items()}


# --------------------------------------------------------------------------- idle


def measure_idle_cpu(url: str, logdir: Path, seconds: float, processes: bool) -> dict[str, Any]:
    """CPU of an idle supervisor (and its children) over SECONDS, as % of one core."""
    supervisor = Supervisor(url, logdir, processes=processes,
                            concurrency=PROCESS_CHILDREN if processes else None)
    try:
        time.sleep(1.0)  # let start-up work settle
        before = tree_cpu_seconds(supervisor.pid)
        start = time.monotonic()
        time.sleep(seconds)
        used = tree_cpu_seconds(supervisor.pid) - before
        elapsed = time.monotonic() - start
    finally:
        supervisor.stop()
    return {"mode": PROCESSES if processes else THREADS, "seconds": round(elapsed, 2),
            "cpu_percent": round(used / elapsed * 100, 3)}
