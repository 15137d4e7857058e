"""`python -m benchmarks`: flags, the order of the run, and cleanup.

One throwaway server serves the whole run; it is emptied (FLUSHALL) before every system
is started. Each system's workers are stopped (their whole process group) before the
next one starts, and a `finally` kills whatever is left, then stops the server.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import redis

from benchmarks import marks, peers
from benchmarks.delayed_bench import measure_delayed
from benchmarks.deployments_bench import run_deployments
from benchmarks.harness import (
    RESULTS_DIR,
    ROOT,
    TRACKER,
    Unavailable,
    flushall,
    server_version,
)
from benchmarks.measure import Run, console, measure_variant, na_row
from benchmarks.report import print_report, summarize, write_results
from benchmarks.sandboxrunner_bench import (
    SandboxrunnerTimeouts,
    SandboxrunnerVariant,
    process_mode_missing,
)
from benchmarks.scale_bench import add_arguments as add_scale_arguments
from benchmarks.scale_bench import parse_waiting, run_scale
from benchmarks.variant import (
    PROCESSES,
    THREADS,
    TimeoutTarget,
    Variant,
    measure_timeout,
    run_roundtrips,
)
from sandboxrunner.testserver import TestServer

SECTIONS = ("throughput", "latency", "timeout", "scale", "delayed", "cluster")
SYSTEMS = ("sandboxrunner", *peers.PEERS)
# wide enough for the tables when the output goes to a file or a pipe
console.width = max(160, shutil.get_terminal_size((160, 40)).columns)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks",
                                description="sandboxrunner and its peers, side by side.")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"sections to run, comma-separated: {', '.join(SECTIONS)}")
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help=f"systems to run, comma-separated: {', '.join(SYSTEMS)}")
    p.add_argument("--n", type=int, default=2000, help="jobs per throughput run")
    p.add_argument("--repeat", type=int, default=3, help="throughput runs per variant (best kept)")
    p.add_argument("--calls", type=int, default=500, help="timed round trips per variant")
    p.add_argument("--warmup", type=int, default=50, help="untimed round trips first")
    p.add_argument("--latency-seconds", type=float, default=10.0,
                   help="bound of the round trips of one variant (polling peers are slow)")
    p.add_argument("--max-seconds", type=float, default=30.0,
                   help="bound of any one measurement; slower systems report partial results")
    p.add_argument("--sr-wait", choices=("gather", "enqueue"), default="gather",
                   help="sandboxrunner throughput client (see sandboxrunner_bench.py)")
    p.add_argument("--sr-window", type=int, default=64,
                   help="arun_job calls in flight (gather); above 100 hits redis-py 8's pool limit")
    p.add_argument("--timeout-runs", type=int, default=3, help="runs per timeout job kind")
    p.add_argument("--timeout-wait", type=float, default=10.0,
                   help="seconds past the deadline to wait for the recovery")
    add_scale_arguments(p)
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    p.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    args = p.parse_args(argv)
    args.only = _pick(p, args.only, SECTIONS, "--only")
    args.systems = _pick(p, args.systems, SYSTEMS, "--systems")
    parse_waiting(p, args)
    return args


def _pick(p: argparse.ArgumentParser, text: str, known: tuple[str, ...], flag: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in names if x not in known]
    if unknown:
        p.error(f"{flag}: unknown {', '.join(unknown)}; expected some of {', '.join(known)}")
    return names


# --------------------------------------------------------------------------- variants


def variants_of(system: str, args: argparse.Namespace) -> list[Variant]:
    if system == "sandboxrunner":
        return [SandboxrunnerVariant(mode, args.sr_wait, args.sr_window)
                for mode in (THREADS, PROCESSES)]
    module = peers.load(system)
    found: list[Variant] = module.variants()
    return found


def measure_baseline(url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """redis-py's own round trips: a PING, and an EVALSHA of a trivial script (what one
    enqueue can cost at least: one script call), the floors under every row below."""
    rows = []
    with redis.Redis.from_url(url) as client:
        sha = client.script_load("return 1")
        for what, call in (("PING", lambda i: client.ping()),
                           ("EVALSHA 'return 1'", lambda i: client.evalsha(sha, 0))):
            latency = run_roundtrips(call, args.calls, args.warmup,
                                     time.monotonic() + args.latency_seconds)
            console.log(f"baseline redis-py {what}: p50 {latency.p50_ms:.3f} ms, "
                        f"p99 {latency.p99_ms:.3f} ms")
            rows.append({"system": "redis", "variant": f"baseline: redis-py {what}",
                         "mode": "-", "status": "ok", "roundtrip_method": what,
                         **latency.to_json()})
    return rows


REDIS_BENCHMARK_CALLS = 20_000
REDIS_BENCHMARK_COMMANDS = {"PING": ["-t", "ping_mbulk"],
                            "EVAL 'return 1'": ["EVAL", "return 1", "0"]}


def measure_redis_benchmark(url: str) -> list[dict[str, Any]]:
    """The physical floor under any client: redis-benchmark (C) with one connection, one
    command at a time, for a PING and for the cheapest script call. Skipped (n/a) when
    redis-benchmark is not installed (Debian: `apt install redis-tools`)."""
    rows = []
    tool = shutil.which("redis-benchmark")
    parsed = redis.connection.parse_url(url)
    for label, command in REDIS_BENCHMARK_COMMANDS.items():
        row = {"system": "redis", "variant": f"baseline: redis-benchmark {label}", "mode": "-",
               "roundtrip_method": f"redis-benchmark -c 1 -n {REDIS_BENCHMARK_CALLS}"}
        if tool is None or "path" in parsed:
            reason = ("redis-benchmark not installed (apt install redis-tools)" if tool is None
                      else "a unix socket URL: not measured")
            rows.append({**row, "status": "n/a", "reason": reason})
            continue
        argv = [tool, "-h", str(parsed.get("host", "127.0.0.1")),
                "-p", str(parsed.get("port", 6379)), "-c", "1",
                "-n", str(REDIS_BENCHMARK_CALLS), "--csv", *command]
        if parsed.get("password"):
            argv[1:1] = ["-a", str(parsed["password"])]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                                 check=True).stdout
            fields = dict(zip(*[line.replace('"', "").split(",")
                                for line in out.strip().splitlines()[:2]], strict=True))
            figures = {"p50_ms": float(fields["p50_latency_ms"]),
                       "p99_ms": float(fields["p99_latency_ms"]),
                       "max_ms": float(fields["max_latency_ms"]),
                       "mean_ms": float(fields["avg_latency_ms"])}
        except (subprocess.SubprocessError, OSError, ValueError, KeyError) as exc:
            rows.append({**row, "status": "n/a", "reason": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        console.log(f"baseline redis-benchmark {label}: p50 {figures['p50_ms']:.3f} ms, "
                    f"p99 {figures['p99_ms']:.3f} ms")
        rows.append({**row, "status": "ok", "calls": REDIS_BENCHMARK_CALLS,
                     "wanted": REDIS_BENCHMARK_CALLS, **figures})
    return rows


def run_variants(run: Run, args: argparse.Namespace, results: dict[str, Any]) -> None:
    if "latency" in args.only:
        results["latency"] += measure_redis_benchmark(run.url)
        results["latency"] += measure_baseline(run.url, args)
    for system in args.systems:
        try:
            variants = variants_of(system, args)
        except Unavailable as exc:
            console.log(f"[yellow]{system}: skipped[/] ({exc})")
            for section in ("throughput", "latency"):
                if section in args.only:
                    results[section].append(na_row(system, str(exc)))
            continue
        for variant in variants:
            measure_variant(variant, run, args, results)


# --------------------------------------------------------------------------- timeouts


def timeout_targets(args: argparse.Namespace) -> list[TimeoutTarget | dict[str, Any]]:
    targets: list[TimeoutTarget | dict[str, Any]] = []
    for system in args.systems:
        if system == "sandboxrunner":
            targets.append(SandboxrunnerTimeouts())
            continue
        try:
            found = peers.load(system).timeout_targets()
        except Unavailable as exc:
            found = []
            targets.append({"system": system, "label": system, "status": "n/a",
                            "reason": str(exc)})
            continue
        if not found:
            targets.append({"system": system, "label": system, "status": "n/a",
                            "reason": "not measured: asyncio worker, a blocking call "
                                      "cannot be interrupted"})
        targets.extend(found)
    return targets


def measure_target(target: TimeoutTarget, url: str, logdir: Path,
                   args: argparse.Namespace) -> dict[str, Any]:
    row: dict[str, Any] = {"system": target.system, "label": target.label, "how": target.how,
                           "status": "ok", "runs": []}
    for kind in ("sleep", "c_call"):
        for _ in range(max(1, args.timeout_runs)):
            flushall(url)
            try:
                target.start(url, logdir)
                run = measure_timeout(target, kind, args.timeout_wait)
            except Exception as exc:  # noqa: BLE001 - the whole target is n/a
                reason = str(exc) if isinstance(exc, Unavailable) else repr(exc)
                console.log(f"[yellow]{target.label} timeouts: n/a[/] ({reason.splitlines()[0]})")
                return {**row, "status": "n/a", "reason": reason[:2000], "runs": []}
            finally:
                target.stop()
            console.log(f"{target.label} {kind}: failed {_ms(run.failed_after_s)}, pool full "
                        f"{_ms(run.pool_full_after_s)}, next job {_ms(run.next_ran_after_s)}")
            row["runs"].append(run.to_json())
            if run.next_ran_after_s is None:
                break  # not recovered within the wait: repeating would only cost the wait again
    return row


def _ms(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds * 1000:+.0f} ms"


def run_timeouts(url: str, logdir: Path, args: argparse.Namespace,
                 results: dict[str, Any]) -> None:
    for target in timeout_targets(args):
        if isinstance(target, dict):
            results["timeout"].append(target)
            continue
        results["timeout"].append(measure_target(target, url, logdir, args))


# --------------------------------------------------------------------------- run


def metadata(args: argparse.Namespace) -> dict[str, Any]:
    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {}
    for dist in ("sandboxrunner", "redis", "hiredis", *peers.PEERS.values()):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = None
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(),
        "cpus": os.cpu_count(), "cpu_model": _cpu_model(), "platform": platform.platform(),
        "python": sys.version.split()[0], "versions": versions,
        "sandboxrunner_commit": git("rev-parse", "--short", "HEAD"),
        "sandboxrunner_dirty": bool(git("status", "--porcelain", "sandboxrunner")),
        "process_mode": process_mode_missing() or "available",
        "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run(args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"meta": metadata(args), "throughput": [], "latency": [],
                               "timeout": [], "scale": {}, "cluster": {}}
    server = TestServer(logdir / "redis")
    started = time.monotonic()
    try:
        if set(args.only) - {"cluster"}:  # the cluster section starts servers of its own
            _run_on_one_server(server, logdir, args, results)
        if "cluster" in args.only and "sandboxrunner" in args.systems:
            results["cluster"] = run_deployments(logdir, args, console.log)
    except KeyboardInterrupt:
        console.log("[red]interrupted[/]: reporting what was measured")
        results["meta"]["interrupted"] = True
    finally:
        TRACKER.kill_all()
        marks.forget_client()
        server.stop()
    results["meta"]["duration_s"] = round(time.monotonic() - started, 1)
    return results


def _run_on_one_server(server: TestServer, logdir: Path, args: argparse.Namespace,
                       results: dict[str, Any]) -> None:
    server.start()
    os.environ[marks.URL_ENV] = server.url
    results["meta"]["server"] = server_version(server.url)
    console.log(f"server {results['meta']['server']} at {server.url}; logs in {logdir}")
    if {"throughput", "latency"} & set(args.only):
        run_variants(Run(server.url, server.pid, logdir), args, results)
    if "timeout" in args.only:
        run_timeouts(server.url, logdir, args, results)
    if "scale" in args.only:
        run_scale(server.url, logdir, args, results)
    if "delayed" in args.only and "sandboxrunner" in args.systems:
        flushall(server.url)
        results["delayed"] = measure_delayed(server.url, logdir)
        console.log(f"delayed: {results['delayed']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logdir = Path(tempfile.mkdtemp(prefix="sandboxrunner-bench-"))
    try:
        results = run(args, logdir)
    except Exception:  # noqa: BLE001 - the harness itself broke; workers are already gone
        console.print(traceback.format_exc())
        return 1
    results["summary"] = summarize(results)
    print_report(console, results)
    console.print(f"run took {results['meta']['duration_s']:.0f} s; worker logs in {logdir}")
    if not args.no_save:
        for path in write_results(results, args.out):
            console.print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0
