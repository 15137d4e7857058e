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
"""

from __future__ import annotations

from collections.abc import Iterator

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
            children = [c for s in supervisors if s.state != "gone" for c in s.children
                        if c.queue == q.name]
            families["count"].add_metric([q.name], len(children))
            families["cpu"].add_metric([q.name], sum(c.cpu_percent for c in children))
            families["rss"].add_metric([q.name], sum(c.rss_bytes for c in children))
        yield from families.values()


def metrics_text(snapshot: Snapshot, durations: Durations) -> tuple[bytes, str]:
    """The body of ``/metrics`` and its content type (the Prometheus text format)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, durations))
    return generate_latest(registry), CONTENT_TYPE_LATEST
