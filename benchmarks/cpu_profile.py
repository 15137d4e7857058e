"""Where the CPU of one job goes, per process: py-spy samples and Redis's own counters.

    python -m benchmarks.cpu_profile [--seconds 6] [--rate 1000] [--out F]

For each mode (threads, then processes) a supervisor serves a throwaway server, and this
process drives it two ways, each for ``--seconds``: the **one-client** pattern of
``python -m benchmarks`` (2,000 synchronous enqueues, then every result, over and over)
and sequential **round trips** (``run_job``-equivalents). Meanwhile:

- psutil reads the CPU time of each side (client, supervisor, its children, Redis): CPU
  microseconds per job, as ``python -m benchmarks`` reports them, and the kernel's part
  of it (system time: socket calls, thread wake-ups, pipes);
- ``py-spy record --gil --nonblocking`` samples the client, the supervisor and each child
  (only the thread holding the GIL: the Python a process runs, not its waits; nonblocking:
  the process is never paused). Each sample is put in the first **step** whose function
  is on its stack (STEPS: the order settles a settle that runs inside a job's thread) and
  in the **kind** of its innermost frame (KINDS: socket I/O, redis-py, JSON, ...);
- Redis's INFO commandstats gives its time per job in each command, and the script calls
  (EVALSHA) with the commands they make inside counted apart.

Needs py-spy on PATH (``pip install py-spy``) and the right to trace this user's processes
(root, or kernel.yama.ptrace_scope 0). The samples' shares are what to read: py-spy costs
each process a little.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import redis

from benchmarks.harness import RESULTS_DIR, SCRIPT_COMMANDS
from benchmarks.patterns import ONE_CLIENT, run_pattern
from benchmarks.sandboxrunner_bench import SandboxrunnerVariant
from benchmarks.variant import PROCESSES, THREADS
from sandboxrunner.testserver import TestServer

# (step, function names that mark it): the first step with a function on a sample's stack
STEPS = {
    "client": [
        ("enqueue: checks, JSON, id", ("Client.prepare",)),
        ("enqueue: the script call", ("Client.enqueue",)),
        ("result: attach script, wait", ("Client.get_result", "JobHandle.result",
                                         "Client.run_job")),
    ],
    "supervisor": [
        ("settle: finish script", ("Store.finish",)),
        ("claim: BLMOVE + claim script", ("Store.wait_and_claim", "Store.claim")),
        ("the job (handler call, its context)", ("resolve", "_call_sync", "_call_async")),
        ("thread pool: admit, hand over, pass the fetch role", ("ThreadExecutor.", "Slots.",
                                                                "HeldJobs.",
                                                                "QueueFetcher.loop")),
        ("hand-over: pipes to children", ("ProcessExecutor.", "Pool.", "pipes.")),
        ("heartbeat, job logs, reporter", ("_heartbeat", "joblog", "RedisLogSink",
                                          "_reporter")),
    ],
}
STEPS["child"] = [("the job (its record, context, handler, outcome)", ("ChildRuntime.run",)),
                  ("pipe: read, decode, send", ("FrameReader", "decode_run", "Sender.")),
                  ("waiting for the next job", ("ChildRuntime.serve",))]
STEPS["fork server"] = []  # it forks children and reaps them: no step of a job
ROLES = {"client": "client", "supervisor": "supervisor", "fork server": "fork server"}
# (kind, pattern of the innermost frame's file)
KINDS = [
    ("socket I/O (hiredis, redis-py reads and sends)", r"_parsers/|socket|selectors"),
    ("redis-py (pool, command packing, hooks)", r"/redis/"),
    ("JSON", r"/json/"),
    ("thread sync (locks, conditions, queues)", r"threading\.py|queue\.py"),
    ("sandboxrunner", r"sandboxrunner/"),
]
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?):\d+\)$")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu_profile",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=6.0, help="each workload's sampled time")
    p.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    p.add_argument("--out", type=Path, default=None, help="where the JSON goes")
    return p.parse_args(argv)


def _cpu_s(proc: psutil.Process) -> tuple[float, float]:
    """User and system CPU seconds of PROC."""
    times = proc.cpu_times()
    return times.user, times.system


def split_samples(raw: Path, role: str, jobs: int, rate: int) -> dict[str, Any]:
    """py-spy's raw output (``frame;frame;... count`` lines, outermost first) as GIL
    microseconds per job by step and by kind."""
    steps: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [m.groupdict() for m in map(FRAME.match, stack.split(";")) if m]
        if not frames:
            continue
        n = int(count)
        total += n
        funcs = [f["func"] for f in frames]
        steps[next((step for step, marks in STEPS[role]
                    if any(mark in func for func in funcs for mark in marks)), "other")] += n
        leaf = frames[-1]["file"]
        kinds[next((kind for kind, pattern in KINDS if re.search(pattern, leaf)),
                   "other (C calls, interpreter)")] += n
    per_job = 1e6 / rate / max(jobs, 1)
    return {"gil_us_per_job": round(total * per_job, 1),
            "steps": {k: round(v * per_job, 1) for k, v in steps.most_common()},
            "kinds": {k: round(v * per_job, 1) for k, v in kinds.most_common()}}


def _redis_split(stats: dict[str, Any], jobs: int) -> dict[str, Any]:
    """INFO commandstats as us per job: scripts (inclusive), their inner commands, the rest."""
    per = {name.removeprefix("cmdstat_"): row for name, row in stats.items()}
    script_rows = [row for name, row in per.items() if name in SCRIPT_COMMANDS]
    # on this path only BLMOVE (and the tool's own calls) run outside a script
    outside = SCRIPT_COMMANDS | {"blmove", "config|resetstat", "ping", "info"}
    inner = sum(row["usec"] for name, row in per.items() if name not in outside)
    calls = sum(row["calls"] for name, row in per.items() if name not in outside)
    return {"scripts_us_per_job": round(sum(row["usec"] for row in script_rows) / jobs, 1),
            "script_calls_per_job": round(sum(row["calls"] for row in script_rows) / jobs, 2),
            "inner_commands_us_per_job": round(inner / jobs, 1),
            "inner_commands_per_job": round(calls / jobs, 2),
            "blmove_us_per_job": round(per.get("blmove", {}).get("usec", 0) / jobs, 1)}


def profile_mode(mode: str, url: str, workdir: Path, seconds: float,
                 rate: int) -> dict[str, Any]:
    variant = SandboxrunnerVariant(mode, wait="enqueue")
    variant.start(url, workdir)
    out: dict[str, Any] = {}
    try:
        run_pattern(variant, ONE_CLIENT, 1000, time.monotonic() + 60)  # warm
        supervisor = psutil.Process(variant.worker_pids()[0])
        server = redis.Redis.from_url(url)
        redis_proc = psutil.Process(int(server.info("server")["process_id"]))
        for workload in ("one client", "round trip"):
            # process mode: the fork server (the parent of the others) and the children
            below = supervisor.children(recursive=True)
            parents = {c.ppid() for c in below}
            servers = [c for c in below if c.pid in parents]
            children = [c for c in below if c.pid not in parents]
            procs = {"client": psutil.Process(), "supervisor": supervisor,
                     **({"fork server": servers[0]} if servers else {}),
                     **{f"child {i}": c for i, c in enumerate(children, 1)},
                     "redis": redis_proc}
            spies = {name: (workdir / f"{mode}-{workload}-{name}.txt".replace(" ", "-"))
                     for name in procs if name != "redis"}
            spy_procs = [subprocess.Popen(
                ["py-spy", "record", "--gil", "--nonblocking", "-r", str(rate), "-f", "raw",
                 "-d", str(int(seconds) + 1), "-o", str(path), "-p", str(procs[name].pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for name, path in spies.items()]
            time.sleep(0.5)  # py-spy attached
            server.config_resetstat()
            before = {name: _cpu_s(p) for name, p in procs.items()}
            started, jobs = time.monotonic(), 0
            while time.monotonic() - started < seconds - 0.5:
                if workload == "one client":
                    jobs += run_pattern(variant, ONE_CLIENT, 2000, time.monotonic() + 60).seen
                else:
                    variant.roundtrip(200, 0, time.monotonic() + 60)
                    jobs += 200
            elapsed = time.monotonic() - started
            after = {name: _cpu_s(p) for name, p in procs.items()}
            cpu = {name: round((sum(after[name]) - sum(before[name])) * 1e6 / jobs, 1)
                   for name in procs}
            # the kernel's part: socket calls, thread wake-ups (futex), pipe I/O
            system = {name: round((after[name][1] - before[name][1]) * 1e6 / jobs, 1)
                      for name in procs}
            stats = server.info("commandstats")
            for spy in spy_procs:
                spy.wait(timeout=seconds + 30)
            # samples cover the whole py-spy run: scale them to the jobs of that time
            spy_jobs = int(jobs * (int(seconds) + 1) / elapsed)
            out[workload] = {
                "jobs": jobs, "jobs_per_s": round(jobs / elapsed, 1), "cpu_us_per_job": cpu,
                "system_cpu_us_per_job": system, "redis": _redis_split(stats, jobs),
                "samples": {name: split_samples(path, ROLES.get(name, "child"), spy_jobs, rate)
                            for name, path in spies.items() if path.exists()}}
    finally:
        variant.stop()
    return out


def print_mode(mode: str, result: dict[str, Any]) -> None:
    for workload, row in result.items():
        print(f"\n== {mode}, {workload}: {row['jobs_per_s']:,.0f} jobs/s; CPU us/job "
              + ", ".join(f"{k} {v} ({row['system_cpu_us_per_job'][k]} in the kernel)"
                          for k, v in row["cpu_us_per_job"].items()))
        print(f"   redis: {row['redis']}")
        for name, split in row["samples"].items():
            print(f"   {name}: {split['gil_us_per_job']} us/job holding the GIL")
            for title in ("steps", "kinds"):
                print(f"     {title}: " + "; ".join(f"{k} {v}" for k, v in split[title].items()))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if shutil.which("py-spy") is None:
        sys.exit("python -m benchmarks.cpu_profile needs py-spy on PATH: pip install py-spy")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = TestServer(Path(tmp) / "redis")
        server.start()
        try:
            for mode in (THREADS, PROCESSES):
                redis.Redis.from_url(server.url).flushall()
                results[mode] = profile_mode(mode, server.url, Path(tmp), args.seconds,
                                             args.rate)
                print_mode(mode, results[mode])
        finally:
            server.stop()
    out = args.out or RESULTS_DIR / f"{time.strftime('%Y-%m-%d')}-cpu-profile.json"
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               "pid": os.getpid(), "seconds": args.seconds, "rate": args.rate,
                               "modes": results}, indent=1) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
