"""The scale section's part of the report (report.py prints it): the rows of one drain
and the summary figures of the drains (benchmarks/scale_bench.py measures them).

Targets (issue 17): the biggest backlog drains within 10 % of the smallest one's rate
(its whole drain rate at least DRAIN_RATIO_TARGET times the other's, per mode; beside it
the CPU per job of the two, at most COST_RATIO_TARGET times, which the other load of a
shared machine sways less), and each
supervisor's RSS stays flat over the biggest drain: the growth fitted after its warm-up
(benchmarks/rss.py) at most RSS_FLAT_FRACTION of its first sample.
"""

from __future__ import annotations

from typing import Any

from benchmarks.variant import PROCESSES, THREADS

DRAIN_RATIO_TARGET = 0.9
COST_RATIO_TARGET = 1.1
RSS_FLAT_FRACTION = 0.05


def scale_figures(drains: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per mode: the biggest backlog's drain rate over the smallest's, and whether the
    supervisors' RSS stayed flat over the biggest drain (DRAINS: smallest first)."""
    out = []
    for mode in (THREADS, PROCESSES):
        mine = [d for d in drains if d.get("mode", THREADS) == mode]
        if len(mine) >= 2:
            small, big = mine[0]["drain_jobs_per_s"], mine[-1]["drain_jobs_per_s"]
            ratio = round(big / small, 3) if small and big else None
            out.append(_plain(f"drain rate {mine[-1]['waiting']:,} vs {mine[0]['waiting']:,} "
                              f"waiting, {mode}", ratio, "higher", f">= {DRAIN_RATIO_TARGET:g}",
                              ratio >= DRAIN_RATIO_TARGET if ratio else None))
            out.append(_cost_figure(mine[0], mine[-1], mode))
        if mine and mine[-1].get("rss"):
            out.append(_rss_figure(mine[-1], mode))
    return out


def _cost_figure(small: dict[str, Any], big: dict[str, Any], mode: str) -> dict[str, Any]:
    """CPU per job (supervisors + Redis) of the biggest backlog over the smallest's: what
    the drain rate shows, less the other load of a shared machine."""
    costs = [d.get("per_job") and d["per_job"]["supervisors_cpu_us"] + d["per_job"]["redis_cpu_us"]
             for d in (small, big)]
    ratio = round(costs[1] / costs[0], 3) if costs[0] and costs[1] else None
    return _plain(f"CPU per job {big['waiting']:,} vs {small['waiting']:,} waiting, {mode}",
                  ratio, "lower", f"<= {COST_RATIO_TARGET:g}",
                  ratio <= COST_RATIO_TARGET if ratio else None)


def _rss_figure(drain: dict[str, Any], mode: str) -> dict[str, Any]:
    """The largest fitted RSS growth of DRAIN's supervisors against the flat target."""
    fits = [r for r in drain["rss"] if r.get("growth_mib") is not None]
    worst = max(fits, key=lambda r: r["growth_mib"] / r["first_mib"], default=None)
    met = worst["growth_mib"] <= RSS_FLAT_FRACTION * worst["first_mib"] if worst else None
    return _plain(f"supervisor RSS growth over the {drain['waiting']:,} drain, {mode} (MiB)",
                  worst["growth_mib"] if worst else None, "lower",
                  f"<= {RSS_FLAT_FRACTION:.0%} of its first sample", met)


def _plain(name: str, value: float | None, better: str, target: str,
           met: bool | None) -> dict[str, Any]:
    """A summary figure of sandboxrunner alone (no peer to compare with)."""
    return {"figure": name, "sandboxrunner": value, "best_peer": None, "best_peer_value": None,
            "ratio": None, "better": better, "target": target, "met": met}


def drain_rows(d: dict[str, Any]) -> list[tuple[str, str]]:
    """(figure, value) rows of drain D, each figure prefixed with its backlog and mode."""
    tenths = " / ".join(_jobs(r) for r in d["drain_tenths_jobs_per_s"])
    shares = ", ".join(f"{r['share']:.0%}" for r in d["rss"])
    rss = "; ".join(f"{r['first_mib']} -> {r['last_mib']}, max {r['max_mib']}, "
                    f"{_or_na(r['slope_mib_per_min'])} MiB/min, threads "
                    f"{r.get('threads_first')} -> {r.get('threads_last')}"
                    + (f" (with children {r['tree_last_mib']})" if d["mode"] == PROCESSES
                       else "") for r in d["rss"])
    rows = [(f"enqueue rate ({d['enqueue_method']}; jobs/s)", _jobs(d["enqueue_jobs_per_s"])),
            (f"drain rate, {d['supervisors']} supervisors (jobs/s, first claim to last "
             "settle)", _jobs(d["drain_jobs_per_s"])),
            ("drain rate, middle 80% of settles (jobs/s)", _jobs(d["drain_mid_jobs_per_s"])),
            ("drain rate of each tenth of the settles (jobs/s)", tenths),
            ("share of the jobs each supervisor ran (sampled)", shares),
            ("CPU per job, us: supervisors / Redis (its scripts' own time); Redis calls",
             _cost(d.get("per_job"))),
            ("CPU per job in each tenth of the drain, us: supervisors+Redis",
             _tenths_cost(d.get("per_job"))),
            ("Redis bytes per waiting job", _jobs(d["redis_bytes_per_waiting_job"])),
            ("Redis bytes per completed job (kept for result_ttl)",
             _jobs(d["redis_bytes_per_completed_job"])),
            ("supervisor RSS, MiB: first -> last, max, slope after warm-up", rss)]
    return [(f"{d['waiting']:,} waiting ({d['mode']}): {figure}", value)
            for figure, value in rows]


def _cost(cost: dict[str, Any] | None) -> str:
    if not cost:
        return "n/a"
    return (f"{cost['supervisors_cpu_us']:,.1f} / {cost['redis_cpu_us']:,.1f} "
            f"({cost['redis_script_us']:,.1f}); {cost['redis_calls']:g}")


def _tenths_cost(cost: dict[str, Any] | None) -> str:
    tenths = (cost or {}).get("tenths", [])
    return " / ".join(f"{t['supervisors_cpu_us']:.0f}+{t['redis_cpu_us']:.0f}"
                      for t in tenths) or "n/a"


def _jobs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _or_na(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"
