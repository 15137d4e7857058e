"""Turning the collected figures into the summary (ratios against the best peer), the
rich tables and the JSON files under ``benchmarks/results/``."""

from __future__ import annotations

import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.patterns import ONE_CLIENT, PATTERNS
from benchmarks.scale_report import drain_rows, scale_figures
from benchmarks.variant import PROCESSES, THREADS

PIPELINED = "pipelined (ours)"  # measure.py's pattern name of sandboxrunner's own client

NA = "n/a"


# --------------------------------------------------------------------------- summary


def _ok(rows: list[dict[str, Any]], system: str | None, mode: str,
        pattern: str | None = None) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("status") == "ok" and r["mode"] == mode
            and (pattern is None or r.get("pattern") == pattern)
            and (r["system"] == system if system else r["system"] != "sandboxrunner")]


def _figure(name: str, ours: float | None, peer: dict[str, Any] | None, key: str,
            higher_is_better: bool, target: str, met: bool | None) -> dict[str, Any]:
    theirs = peer[key] if peer else None
    # a ratio needs two positive figures (a peer may fail a job before our deadline mark)
    ratio = (ours / theirs if ours is not None and ours > 0 and theirs is not None
             and theirs > 0 and not math.isnan(theirs) else None)
    return {"figure": name, "sandboxrunner": ours, "best_peer": peer["variant"] if peer else None,
            "best_peer_value": theirs, "ratio": round(ratio, 3) if ratio is not None else None,
            "better": "higher" if higher_is_better else "lower", "target": target, "met": met}


# issue targets: thread mode against the best peer's thread mode, process mode against the
# best peer's process mode and against Celery prefork, per client pattern
THROUGHPUT_TARGETS = ((THREADS, 3.0, None), (PROCESSES, 1.5, 8.0))
ENQUEUE_COST_TARGET = 0.6  # a synchronous enqueue's time, at most this much of Huey's


def _throughput_figures(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for pattern in PATTERNS:
        for mode, factor, over_celery in THROUGHPUT_TARGETS:
            ours_rows = _ok(rows, "sandboxrunner", mode, pattern)
            ours = ours_rows[0]["jobs_per_s"] if ours_rows else None
            peers = _ok(rows, None, mode, pattern)
            if ours is None and not peers:
                continue
            best = max(peers, key=lambda r: r["jobs_per_s"], default=None)
            met = (ours >= factor * best["jobs_per_s"]) if ours is not None and best else None
            out.append(_figure(f"throughput, {pattern}, {mode} (jobs/s)", ours, best,
                               "jobs_per_s", True, f">= {factor:g}x best peer", met))
            celery = [r for r in peers if r["variant"] == "celery prefork"]
            if over_celery and celery:
                c = celery[0]
                out.append(_figure(f"throughput, {pattern}, processes vs celery prefork", ours,
                                   c, "jobs_per_s", True, f">= {over_celery:g}x celery prefork",
                                   (ours >= over_celery * c["jobs_per_s"])
                                   if ours is not None else None))
    out += _enqueue_figures(rows)
    out += _cpu_figures(rows)
    return out


def _enqueue_figures(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The one-client pattern's enqueue calls/s against Huey's (same run, same mode)."""
    out = []
    for mode in (THREADS, PROCESSES):
        ours = _ok(rows, "sandboxrunner", mode, ONE_CLIENT)
        huey = [r for r in _ok(rows, None, mode, ONE_CLIENT) if r["system"] == "huey"]
        if not ours or not huey:
            continue
        mine, theirs = ours[0]["enqueues_per_s"], huey[0]["enqueues_per_s"]
        out.append(_figure(f"enqueue calls/s, one client, {mode}", mine, huey[0],
                           "enqueues_per_s", True,
                           f">= {1 / ENQUEUE_COST_TARGET:.2f}x huey (<= {ENQUEUE_COST_TARGET:g}x "
                           "its time per call)",
                           mine * ENQUEUE_COST_TARGET >= theirs if mine and theirs else None))
    return out


CPU_TARGET = 0.5  # CPU per job (client + workers + Redis), at most this much of the best peer's
CPU_SIDES = ("client_cpu_ms", "workers_cpu_ms", "redis_cpu_ms")  # harness.Usage's fields


def cpu_sides(row: dict[str, Any]) -> list[float] | None:
    """A throughput row's CPU ms per job: client, workers, Redis (None if not measured)."""
    usage = row.get("usage") or {}
    sides = [usage.get(k) for k in CPU_SIDES]
    return None if any(v is None for v in sides) else sides


def _cpu_ms(row: dict[str, Any]) -> float | None:
    sides = cpu_sides(row)
    return None if sides is None else round(sum(sides), 3)


def _cpu_figures(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """CPU per job of the one-client pattern, every side, against the thriftiest peer of
    either mode in the same run."""
    peers = [{**r, "cpu_ms": _cpu_ms(r)} for mode in (THREADS, PROCESSES)
             for r in _ok(rows, None, mode, ONE_CLIENT)]
    best = min((r for r in peers if r["cpu_ms"]), key=lambda r: r["cpu_ms"], default=None)
    out = []
    for mode in (THREADS, PROCESSES):
        ours = _ok(rows, "sandboxrunner", mode, ONE_CLIENT)
        mine = _cpu_ms(ours[0]) if ours else None
        if mine is None or best is None:
            continue
        out.append(_figure(f"CPU ms per job, one client, {mode} (client + workers + redis)",
                           mine, best, "cpu_ms", False, f"<= {CPU_TARGET:g}x best peer",
                           mine <= CPU_TARGET * best["cpu_ms"]))
    return out


def _latency_figures(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    targets = {(THREADS, "p50_ms"): 0.5, (THREADS, "p99_ms"): 1.0}
    over_ping = {THREADS: 5.0, PROCESSES: 7.0}  # p50 at most this many redis-py PINGs
    ping = [r for r in rows if r.get("roundtrip_method") == "PING" and r.get("status") == "ok"]
    for mode in (THREADS, PROCESSES):
        ours_rows = _ok(rows, "sandboxrunner", mode)
        for key in ("p50_ms", "p99_ms"):
            ours = ours_rows[0][key] if ours_rows else None
            best = min(_ok(rows, None, mode), key=lambda r: r[key], default=None)
            limit = targets.get((mode, key))
            out.append(_figure(f"round trip {key[:3]}, {mode} (ms)", ours, best, key, False,
                               f"<= {limit:g} ms" if limit else "",
                               (ours <= limit) if ours is not None and limit else None))
        if ours_rows and ping:
            p50, factor = ours_rows[0]["p50_ms"], over_ping[mode]
            out.append(_figure(f"round trip p50 / redis-py PING p50, {mode}", p50,
                               {**ping[0], "variant": "redis-py PING"}, "p50_ms", False,
                               f"<= {factor:g}x", p50 <= factor * ping[0]["p50_ms"]))
            p99 = ours_rows[0]["p99_ms"]
            out.append({"figure": f"round trip p99 / p50, {mode}", "sandboxrunner":
                        round(p99 / p50, 3) if p50 else None, "best_peer": None,
                        "best_peer_value": None, "ratio": None, "better": "lower",
                        "target": "<= 2", "met": p99 <= 2 * p50 if p50 else None})
    return out


def _timeout_figures(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    fields = (("failed_after_s", "failure recorded", 0.020),
              ("pool_full_after_s", "pool full again", 0.050),
              ("next_ran_after_s", "next job started", 0.050))
    for kind in ("sleep", "c_call"):
        for key, what, limit in fields:
            ours = _worst(rows, "sandboxrunner", kind, key)
            peers: dict[str, float] = {}
            for r in rows:
                if r["system"] != "sandboxrunner" and r.get("status") == "ok":
                    worst = _worst(rows, r["system"], kind, key)
                    # at or before the deadline mark: the peer's own clock started before
                    # the job did (RQ counts from its work horse's start), so the figure
                    # says nothing of how soon it acts after a deadline
                    if worst is not None and worst > 0:
                        peers[r["label"]] = worst
            best = min(peers.items(), key=lambda kv: kv[1], default=None)
            peer = {"variant": best[0], "value": best[1]} if best else None
            out.append(_figure(f"timeout, {kind} job: {what} (worst run, s)", ours,
                               peer, "value", False, f"<= {limit * 1000:g} ms every run",
                               (ours <= limit) if ours is not None else None))
    return out


def _worst(rows: list[dict[str, Any]], system: str, kind: str, key: str) -> float | None:
    """The worst run of SYSTEM's KIND job; None if any run never got there (or no runs)."""
    for row in rows:
        if row["system"] == system and row.get("status") == "ok":
            values = [r[key] for r in row["runs"] if r["kind"] == kind]
            if not values or any(v is None for v in values):
                return None
            return max(values)
    return None


def _scale_figures(scale: dict[str, Any]) -> list[dict[str, Any]]:
    out = scale_figures(scale.get("drain", []))
    for idle in scale.get("idle", []):
        if idle.get("status", "ok") == "ok":
            pct = idle["cpu_percent"]
            out.append({"figure": f"idle supervisor CPU, {idle['mode']} (%)",
                        "sandboxrunner": pct, "best_peer": None, "best_peer_value": None,
                        "ratio": None, "better": "lower", "target": "< 1%", "met": pct < 1})
    return out


def summarize(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline figures of the sections that ran, each against the best peer."""
    figures: list[dict[str, Any]] = []
    if results.get("throughput"):
        figures += _throughput_figures(results["throughput"])
    if results.get("latency"):
        figures += _latency_figures(results["latency"])
    if results.get("timeout"):
        figures += _timeout_figures(results["timeout"])
    if results.get("scale"):
        figures += _scale_figures(results["scale"])
    return figures


# --------------------------------------------------------------------------- tables


def _num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NA
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _after(value: float | None) -> str:
    return NA if value is None else f"{value * 1000:,.0f} ms"


def config_table(results: dict[str, Any]) -> Table:
    table = Table("variant", "workers (separate processes)", "throughput: client waits with",
                  "round trip: one call is", title="How each system ran")
    seen: dict[str, dict[str, Any]] = {}
    for r in results.get("throughput", []) + results.get("latency", []):
        if r.get("workers"):
            seen.setdefault(r["variant"], {}).update(
                {k: v for k, v in r.items() if k in ("workers", "wait_method",
                                                     "roundtrip_method") and v})
    for variant, r in seen.items():
        table.add_row(variant, r.get("workers", ""), r.get("wait_method", ""),
                      r.get("roundtrip_method", ""))
    return table


def throughput_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("variant", "pattern", "jobs/s\n(median)", "spread", "enqueue\ncalls/s",
                  "results seen", "CPU ms per job:\nclient", "workers", "redis",
                  "redis calls/job", "of which scripts",
                  title="1. Throughput: N no-op jobs per run, first enqueue to last result "
                        "seen; every system driven the same way in each client pattern "
                        "(median of runs, min-max)")
    order = {p: i for i, p in enumerate((*PATTERNS, PIPELINED))}
    for r in sorted(rows, key=lambda r: order.get(r.get("pattern", ""), len(order))):
        if r.get("status") != "ok":
            table.add_row(r["variant"], r.get("pattern", ""), NA, "", "",
                          r.get("reason", "").split("\n")[0][:90])
            continue
        runs = r.get("runs") or []
        seen = ", ".join(f"{x['seen']:,}/{x['n']:,}" for x in runs[:1])
        if not r.get("complete", True):
            seen += " (partial)"
        u = r.get("usage") or {}
        table.add_row(r["variant"], r.get("pattern", ""), _num(r["jobs_per_s"], 0),
                      f"{_num(r.get('jobs_per_s_min'), 0)}-{_num(r.get('jobs_per_s_max'), 0)}",
                      _num(r.get("enqueues_per_s"), 0), seen,
                      _num(u.get("client_cpu_ms"), 3), _num(u.get("workers_cpu_ms"), 3),
                      _num(u.get("redis_cpu_ms"), 3), _num(u.get("redis_calls")),
                      _num(u.get("redis_scripts"), 2))
    return table


def latency_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("variant", "mode", "p50 ms", "p99 ms", "max ms", "calls",
                  title="2. Round trip: sequential calls of a no-op after a warm-up")
    for r in rows:
        if r.get("status") != "ok":
            table.add_row(r["variant"], r["mode"], NA, NA, NA,
                          r.get("reason", "").split("\n")[0][:90])
            continue
        table.add_row(r["variant"], r["mode"], _num(r["p50_ms"], 3), _num(r["p99_ms"], 3),
                      _num(r.get("max_ms"), 1), f"{r['calls']:,}/{r['wanted']:,}")
    return table


def timeout_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("system", "job", "failed after", "pool full after", "next job after",
                  "process gone", "caller got",
                  title="3. Timeout recovery: 1 s limit, concurrency 1, a no-op queued behind "
                        "(times after the deadline; n/a = not within the wait)")
    table.caption = "\n".join(f"{r['label']}: {r['how']}" for r in rows if r.get("how"))
    for r in rows:
        if r.get("status") != "ok":
            table.add_row(r["label"], "", NA, NA, NA, "", r.get("reason", "").split("\n")[0])
            continue
        for run in r["runs"]:
            table.add_row(r["label"], run["kind"], _after(run["failed_after_s"]),
                          _after(run["pool_full_after_s"]), _after(run["next_ran_after_s"]),
                          "yes" if run["process_gone"] else "no", run["outcome"][:70])
    return table


def scale_table(scale: dict[str, Any]) -> Table:
    table = Table("figure", "value", title="4. Scale (sandboxrunner)")
    for d in scale.get("drain", []):
        for figure, value in drain_rows(d):
            table.add_row(figure, value)
    for idle in scale.get("idle", []):
        value = (_num(idle["cpu_percent"], 3) if idle.get("status", "ok") == "ok"
                 else f"{NA}: {idle.get('reason', '')}")
        table.add_row(f"idle supervisor CPU over {idle.get('seconds', '?')} s, "
                      f"{idle['mode']} (% of a core)", value)
    for problem in scale.get("problems", []):
        table.add_row("n/a", problem)
    return table


def deployments_table(section: dict[str, Any]) -> Table:
    table = Table("deployment", "queue", "jobs/s", "results seen",
                  "Redis CPU us/job:\neach master", "replicas", "round trip p50 / p99 ms",
                  title="5. Deployments (sandboxrunner threads, both queues served): "
                        "N no-op jobs per queue (best run), then run_job round trips")
    table.caption = (f"{section.get('server', '')}; masters in slot order (a cluster's "
                     "first holds {sr:default}, its second {sr:priority})")
    for d in section.get("deployments", []):
        rt = d.get("roundtrip") or {}
        for i, (queue, r) in enumerate(d["throughput"].items()):
            seen = f"{r['seen']:,}/{r['n']:,}" + ("" if r["complete"] else " (partial)")
            table.add_row(d["deployment"] if i == 0 else "", queue, _num(r["jobs_per_s"], 0),
                          seen, " / ".join(_num(u) for u in r["master_cpu_us"]),
                          _num(r["replicas_cpu_us"]) if d["replicas"] else "-",
                          f"{_num(rt.get('p50_ms'), 3)} / {_num(rt.get('p99_ms'), 3)}"
                          if i == 0 else "")
        pub = d.get("publish_cost")
        if pub:
            spublish, publish = pub["spublish_us"], pub["publish_us"]
            table.caption += (f"\n{d['deployment']}: Redis CPU per reply published from a "
                              "script, us, every server (publishing master first, its "
                              f"replica fourth): SPUBLISH {' / '.join(map(str, spublish))} = "
                              f"{sum(spublish):.1f}; PUBLISH {' / '.join(map(str, publish))} "
                              f"= {sum(publish):.1f} ({pub['replies']:,} of each)")
        cost = d.get("wait_cost")
        if cost:
            table.caption += (f"\n{d['deployment']}: a write's round trip p50 / p99 "
                              f"{cost['write_p50_ms']:.3f} / {cost['write_p99_ms']:.3f} ms alone, "
                              f"{cost['write_wait_p50_ms']:.3f} / {cost['write_wait_p99_ms']:.3f}"
                              f" ms followed by WAIT 1 ({cost['calls']:,} of each, interleaved)")
    for problem in section.get("problems", []):
        table.add_row("n/a", "", "", problem[:120])
    return table


def summary_table(figures: list[dict[str, Any]]) -> Table:
    table = Table("figure", "sandboxrunner", "best peer", "peer value", "ratio sr/peer",
                  "better", "target", "met", title="Summary: sandboxrunner / best peer")
    for f in figures:
        ratio = f"{f['ratio']:.2f}x" if f["ratio"] is not None else NA
        met = {True: "yes", False: "NO", None: NA}[f["met"]]
        table.add_row(f["figure"], _num(f["sandboxrunner"], 3), f["best_peer"] or "-",
                      _num(f["best_peer_value"], 3), ratio, f["better"], f["target"], met)
    return table


def print_report(console: Console, results: dict[str, Any]) -> None:
    if results.get("throughput") or results.get("latency"):
        console.print(config_table(results))
    if results.get("throughput"):
        console.print(throughput_table(results["throughput"]))
    if results.get("latency"):
        console.print(latency_table(results["latency"]))
    if results.get("timeout"):
        console.print(timeout_table(results["timeout"]))
    if results.get("scale"):
        console.print(scale_table(results["scale"]))
    if results.get("cluster"):
        console.print(deployments_table(results["cluster"]))
    if results.get("delayed"):
        d = results["delayed"]
        console.print(f"delayed jobs ({d['delayed']:,} waiting, run_at spread over "
                      f"{d['spread_s']:g} s): start - due p50 {d['late_p50_ms']} ms, p99 "
                      f"{d['late_p99_ms']} ms, max {d['late_max_ms']} ms; {d['early']} early")
    console.print(summary_table(results["summary"]))


# --------------------------------------------------------------------------- files


def write_results(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """<date>-<host>.json and latest.json, each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().split(".")[0] or "host"
    text = json.dumps(results, indent=2, sort_keys=False, default=str) + "\n"
    paths = [out_dir / f"{time.strftime('%Y-%m-%d')}-{host}.json", out_dir / "latest.json"]
    for path in paths:
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return paths
