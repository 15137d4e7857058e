"""Where the microseconds of one synchronous enqueue and of one round trip go.

    python -m benchmarks.anatomy [--calls 1000] [--rounds 7] [--trips 400] [--out F]

**Enqueue**: each step of the call is timed as a call of its own, interleaved in rounds
(each round runs every step `--calls` times, then Redis is emptied), in one process
against one throwaway server; per step the median over the rounds of the mean per call:

- redis-py's PING and EVALSHA of ``return 1``: the floor of any redis-py caller;
- the same EVALSHA through our connection layer (routing.py: an idle connection, hiredis
  packing), the floor of ours;
- the enqueue script through our connection layer: the Redis side of an enqueue;
- ``Client.prepare``: checking the call and its data, JSON, a fresh id;
- ``Client.enqueue``: the whole call;
- Huey's ``enqueue`` of a no-op (a pickled message LPUSHed), the peer in issue 17's target.

**Round trip**: sequential ``run_job``-equivalents (enqueue, then the result) of a no-op
against a supervisor (threads, then processes), split by the server's own clock: MONITOR,
read by a ``redis-cli`` process of its own (not to take the client's CPU or GIL), stamps
when the enqueue script and the finish script ran, and the caller stamps when it called
and when it had the result (one clock: the same host). Medians of each part.

MONITOR costs Redis a write per command and a core some work, so the split's parts are a
little longer than in ``python -m benchmarks``; read them as proportions.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from benchmarks import marks
from benchmarks.harness import RESULTS_DIR
from benchmarks.sandboxrunner_bench import PROCESS_CHILDREN, Supervisor, make_client
from sandboxrunner.store import SCRIPT_SHAS, enqueue_keys
from sandboxrunner.testserver import TestServer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.anatomy",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=1000, help="calls of each step a round")
    p.add_argument("--rounds", type=int, default=7, help="rounds of every step")
    p.add_argument("--trips", type=int, default=400, help="round trips split per mode")
    p.add_argument("--out", type=Path, default=None, help="where the JSON goes")
    return p.parse_args(argv)


def enqueue_steps(url: str) -> dict[str, Callable[[], Any]]:
    """Each step of a sync enqueue as a call of its own (module docstring)."""
    os.environ[marks.URL_ENV] = url
    from benchmarks.peers import huey_app

    client = make_client(url)
    raw = redis.Redis.from_url(url)
    trivial = raw.script_load("return 1")
    client.enqueue("noop", 0)  # the scripts are loaded
    keys = client.store.keys
    job = client.prepare("noop", {"i": 1}, None)
    declared = enqueue_keys(keys, job)
    args = [keys.queue_prefix(job.queue), "", client.config.lease_ms, *job.script_args()]
    ids = itertools.count()
    router = client.store.router

    def our_enqueue_script() -> Any:
        args[3] = f"default-{next(ids):032x}"  # a fresh id each: a new job each time
        return router.send(declared[0], [("EVALSHA", SCRIPT_SHAS["enqueue"], len(declared),
                                          *declared, *args)])

    return {
        "redis-py PING": raw.ping,
        "redis-py EVALSHA 'return 1'": lambda: raw.evalsha(trivial, 0),
        "ours: EVALSHA 'return 1'": lambda: router.send(declared[0], [("EVALSHA", trivial, 0)]),
        "ours: the enqueue script": our_enqueue_script,
        "ours: prepare (checks, JSON, id)": lambda: client.prepare("noop", {"i": 1}, None),
        "ours: Client.enqueue": lambda: client.enqueue("noop", {"i": 1}),
        "huey: enqueue": lambda: huey_app.noop({"i": 1, "tag": "noop"}),
    }


def measure_enqueue(url: str, calls: int, rounds: int) -> dict[str, dict[str, float]]:
    steps = enqueue_steps(url)
    flush = redis.Redis.from_url(url)
    per_call: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        for _ in range(min(200, calls)):
            step()
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(calls):
                step()
            per_call[name].append((time.perf_counter() - start) / calls * 1e6)
        flush.flushall()
        steps["ours: Client.enqueue"]()  # its reply client and scripts stay warm
    huey = statistics.median(per_call["huey: enqueue"])
    return {name: {"median_us": round(statistics.median(v), 1), "min_us": round(min(v), 1),
                   "x_huey": round(statistics.median(v) / huey, 2)}
            for name, v in per_call.items()}


def _script_times(monitor_log: Path) -> dict[str, dict[str, float]]:
    """job id -> {'enqueue': s, 'finish': s}: when Redis ran each script for it."""
    names = {SCRIPT_SHAS["enqueue"]: "enqueue", SCRIPT_SHAS["finish"]: "finish"}
    seen: dict[str, dict[str, float]] = {}
    for line in monitor_log.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) < 5 or parts[3] != '"EVALSHA"':
            continue
        name = names.get(parts[4].strip('"'))
        if name is None:
            continue
        for arg in parts[5:]:
            arg = arg.strip('"')
            if arg.startswith("default-") and len(arg) == 40:
                seen.setdefault(arg, {})[name] = float(parts[0])
    return seen


def split_round_trips(url: str, port: int, workdir: Path, processes: bool,
                      trips: int) -> dict[str, float]:
    supervisor = Supervisor(url, workdir, processes=processes,
                            concurrency=PROCESS_CHILDREN if processes else None)
    client = make_client(url)
    monitor_log = workdir / f"monitor-{int(processes)}.txt"
    try:
        for _ in range(100):
            client.run_job("noop", {"i": 0})
        with monitor_log.open("w") as out:
            monitor = subprocess.Popen(["redis-cli", "-p", str(port), "monitor"], stdout=out)
            time.sleep(0.3)
            stamps = []
            for i in range(trips):
                called = time.time()
                handle = client.enqueue("noop", {"i": i})
                returned = time.time()
                handle.result(wait_timeout=10_000)
                stamps.append((handle.id, called, returned, time.time()))
            time.sleep(0.3)
            monitor.terminate()
            monitor.wait()
    finally:
        client.close()
        supervisor.stop()
    ran = _script_times(monitor_log)
    parts: dict[str, list[float]] = {k: [] for k in (
        "total", "call -> enqueue script ran", "enqueue call returned",
        "enqueue script -> finish script (the supervisor)", "finish script -> result in hand")}
    for job_id, called, returned, done in stamps:
        at = ran.get(job_id, {})
        if "enqueue" in at and "finish" in at:
            for name, us in zip(parts, (done - called, at["enqueue"] - called,
                                        returned - called, at["finish"] - at["enqueue"],
                                        done - at["finish"]), strict=True):
                parts[name].append(us * 1e6)
    return {"matched": len(parts["total"]),
            **{f"{k} (us)": round(statistics.median(v), 1) for k, v in parts.items() if v}}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        server = TestServer(Path(tmp) / "redis")
        server.start()
        try:
            enqueue = measure_enqueue(server.url, args.calls, args.rounds)
            for name, row in enqueue.items():
                print(f"{name:36s} {row['median_us']:7.1f} us (min {row['min_us']:.1f}), "
                      f"{row['x_huey']:.2f}x Huey's")
            trips = {}
            for mode, processes in (("threads", False), ("processes", True)):
                redis.Redis.from_url(server.url).flushall()
                trips[mode] = split_round_trips(server.url, server.port, Path(tmp), processes,
                                                args.trips)
                print(f"round trip, {mode}: {trips[mode]}")
        finally:
            server.stop()
    out = args.out or RESULTS_DIR / f"{time.strftime('%Y-%m-%d')}-anatomy.json"
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               "calls": args.calls, "rounds": args.rounds,
                               "enqueue": enqueue, "round_trip": trips}, indent=1) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
