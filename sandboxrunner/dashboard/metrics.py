"""``/metrics``: one snapshot (the one `top` reads) and the job duration histograms in the
Prometheus text format, built by prometheus_client (its escaping of label values, its
format), with a custom collector on a private registry: never the process's global one,
so nothing of the app's own metrics leaks in, and nothing is kept between scrapes.

Names and labels (``queue`` and ``job`` only, plus ``state`` of supervisors: each bounded):

  sandboxrunner_jobs_waiting|delayed|active|throttled{queue}   gauges: jobs in each state
  sandboxrunner_queue_paused{queue}                            gauge: 1 while paused
  sandboxrunner_jobs_enqueued|completed|failed|retried|stalled_total{queue}   counters
  sandboxrunner_job_duration_seconds{queue,job}                histogram (durations.py:
                                                               buckets 0.005 s to 1 h)
  sandboxrunner_supervisors{state}                             gauge: live, late, gone
  sandboxrunner_children{queue}                                gauge: child processes
  sandboxrunner_children_cpu_percent{queue}                    gauge: their CPU, summed
  sandboxrunner_children_rss_bytes{queue}                      gauge: their RSS, summed

Counters count since the queue's stats hash was created (they never reset while Redis
keeps its data).

``/api/metrics`` (`metrics_json`) is the same data as JSON, for scripts::

  {"queues": {Q: {"waiting", "delayed", "active", "throttled", "paused" (true/false),
                  "enqueued", "completed", "failed", "retried", "stalled",
                  "children", "children_cpu_percent", "children_rss_bytes"}},
   "supervisors": {"live", "late", "gone"},
   "job_duration_seconds": {"buckets": [upper bounds, s],
                            "histograms": {Q: {JOB: {"count", "sum" (s),
                                                     "cumulative": [per bucket, then +Inf]}}}}}
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from ..durations import Durations
from ..snapshot_records import Snapshot

PREFIX = "sandboxrunner_"
SUPERVISOR_STATES = ("live", "late", "gone")
QUEUE_GAUGES = (("waiting", "Jobs waiting in the queue's wait list."),
                ("delayed", "Jobs waiting for their delay, run_at or retry's backoff."),
                ("active", "Jobs claimed by supervisors and not settled yet."),
                ("throttled", "Jobs held back by their job's rate limit."))
QUEUE_COUNTERS = (("enqueued", "Jobs enqueued."), ("completed", "Jobs completed."),
                  ("failed", "Jobs failed (retries used up)."),
                  ("retried", "Failed attempts queued again for a retry."),
                  ("stalled", "Jobs taken back from a supervisor that died."))


class SnapshotCollector(Collector):
    """The metric families of one snapshot and its durations, each scrape anew."""

    def __init__(self, snapshot: Snapshot, durations: Durations) -> None:
        self._snapshot, self._durations = snapshot, durations

    def collect(self) -> Iterator[Metric]:
        yield from self._queues()
        yield self._histogram()
        yield from self._supervisors()

    def _queues(self) -> Iterator[Metric]:
        queues = self._snapshot.queues
        for field, doc in QUEUE_GAUGES:
            gauge = GaugeMetricFamily(f"{PREFIX}jobs_{field}", doc, labels=["queue"])
            for q in queues:
                gauge.add_metric([q.name], getattr(q, field))
            yield gauge
        paused = GaugeMetricFamily(f"{PREFIX}queue_paused", "1 while the queue is paused.",
                                   labels=["queue"])
        for q in queues:
            paused.add_metric([q.name], int(q.paused))
        yield paused
        for field, doc in QUEUE_COUNTERS:
            counter = CounterMetricFamily(f"{PREFIX}jobs_{field}", doc, labels=["queue"])
            for q in queues:
                counter.add_metric([q.name], getattr(q, field))
            yield counter

    def _histogram(self) -> Metric:
        family = HistogramMetricFamily(
            f"{PREFIX}job_duration_seconds", "Attempts' durations, claim to settle, by "
            "job name.", labels=["queue", "job"])
        bounds = [*(str(ms / 1000) for ms in self._durations.bounds_ms), "+Inf"]
        for h in self._durations.histograms:
            family.add_metric([h.queue, h.job], list(zip(bounds, h.cumulative, strict=True)),
                              h.sum_ms / 1000)
        return family

    def _supervisors(self) -> Iterator[Metric]:
        supervisors = self._snapshot.supervisors
        by_state = GaugeMetricFamily(f"{PREFIX}supervisors", "Supervisors by state.",
                                     labels=["state"])
        for state in SUPERVISOR_STATES:
            by_state.add_metric([state], sum(1 for s in supervisors if s.state == state))
        yield by_state
        families = {
            "count": GaugeMetricFamily(f"{PREFIX}children", "Child processes serving the "
                                       "queue (process mode).", labels=["queue"]),
            "cpu": GaugeMetricFamily(f"{PREFIX}children_cpu_percent", "The children's CPU "
                                     "use, summed (100 = one core).", labels=["queue"]),
            "rss": GaugeMetricFamily(f"{PREFIX}children_rss_bytes", "The children's "
                                     "resident memory, summed.", labels=["queue"]),
        }
        for q in self._snapshot.queues:
            for key, total in zip(families, _children_totals(self._snapshot, q.name),
                                  strict=True):
                families[key].add_metric([q.name], total)
        yield from families.values()


def _children_totals(snapshot: Snapshot, queue: str) -> tuple[int, float, int]:
    """How many live children serve QUEUE, their CPU percent and RSS bytes summed."""
    children = [c for s in snapshot.supervisors if s.state != "gone" for c in s.children
                if c.queue == queue]
    return (len(children), sum(c.cpu_percent for c in children),
            sum(c.rss_bytes for c in children))


def metrics_text(snapshot: Snapshot, durations: Durations) -> tuple[bytes, str]:
    """The body of ``/metrics`` and its content type (the Prometheus text format)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, durations))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def metrics_json(snapshot: Snapshot, durations: Durations) -> dict[str, Any]:
    """The same numbers as `metrics_text`, as ``/api/metrics`` serves them (shape in the
    module docstring): durations in seconds, counters and gauges by queue."""
    queues: dict[str, dict[str, Any]] = {}
    for q in snapshot.queues:
        row: dict[str, Any] = {field: getattr(q, field) for field, _ in QUEUE_GAUGES}
        row["paused"] = bool(q.paused)
        row |= {field: getattr(q, field) for field, _ in QUEUE_COUNTERS}
        count, cpu, rss = _children_totals(snapshot, q.name)
        row |= {"children": count, "children_cpu_percent": cpu, "children_rss_bytes": rss}
        queues[q.name] = row
    histograms: dict[str, dict[str, Any]] = {}
    for h in durations.histograms:
        histograms.setdefault(h.queue, {})[h.job] = {
            "count": h.count, "sum": h.sum_ms / 1000, "cumulative": list(h.cumulative)}
    states = [s.state for s in snapshot.supervisors]
    return {"queues": queues,
            "supervisors": {state: states.count(state) for state in SUPERVISOR_STATES},
            "job_duration_seconds": {"buckets": [ms / 1000 for ms in durations.bounds_ms],
                                     "histograms": histograms}}
