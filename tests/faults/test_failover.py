"""A Redis Cluster failing over the default queue's master, and moving the queue's slot to
another master, while a supervisor runs jobs, a caller loops on run_job and a backlog of
enqueued jobs drains: no job may be lost, none may run twice, every caller must get its
outcome, and nobody restarts. Each test has a deployment of its own (roles and slots move).
The Sentinel failover (with what it loses) is in test_sentinel_failover.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from redis.crc import key_slot

from sandboxrunner.client import Client, JobHandle
from sandboxrunner.testdeployments import TestCluster, node_client
from tests.deployments import raw_client
from tests.faults.common import K, job_lines, leftovers, starts
from tests.supervisors import client_for, running_supervisor, wait_for

SLOT = key_slot(K.wait("default").encode())
BACKLOG = 200
WORK_S = 0.02  # each job's run: the backlog drains in about a second on 4 threads
CALLS_AFTER = 20  # run_job calls that must complete after the event


class Traffic:
    """A caller looping on run_job and a backlog of enqueued jobs, and what each got."""

    def __init__(self, client: Client, runs: Path) -> None:
        self.client, self.work = client, {"dir": str(runs), "seconds": WORK_S}
        self.results: list[tuple[float, Any]] = []  # (when, result) of each run_job
        self.errors: list[BaseException] = []
        self.backlog: list[JobHandle] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()
        wait_for(lambda: len(self.results) >= 5, what="the run_job loop going")
        self.backlog = [self.client.enqueue("fault_work", self.work) for _ in range(BACKLOG)]

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                result = self.client.run_job("fault_work", self.work, wait_timeout=30_000)
                self.results.append((time.monotonic(), result))
            except BaseException as exc:  # noqa: BLE001 - every failure is counted
                self.errors.append(exc)

    def finish(self) -> list[Any]:
        """Stop the loop; the backlog's results (every one of them, or the test fails)."""
        self._stop.set()
        self._thread.join(40)
        return [h.result(wait_timeout=30_000) for h in self.backlog]


@contextmanager
def traffic_on(url: str, runs: Path) -> Iterator[Traffic]:
    with running_supervisor(url, workers="default", concurrency=4), client_for(url) as client:
        traffic = Traffic(client, runs)
        traffic.start()
        yield traffic


def _check_nothing_lost_and_nothing_twice(url: str, traffic: Traffic, backlog: list[Any],
                                          runs: Path, event_at: float, event_epoch: float,
                                          ) -> None:
    assert traffic.errors == [], traffic.errors[:3]
    after = [r for at, r in traffic.results if at > event_at]
    drained_after = sum(starts(job_lines(runs)[r["job"]])[0].at > event_epoch for r in backlog)
    assert drained_after > 0, "the backlog had drained before the event"
    results = [r for _, r in traffic.results] + backlog
    lines = job_lines(runs)
    assert sorted(r["job"] for r in results) == sorted(lines)  # every caller got its job's
    twice = {job: len(starts(ran)) for job, ran in lines.items() if len(starts(ran)) != 1}
    assert twice == {}, twice
    with raw_client(url) as r:
        assert set(leftovers(r).values()) == {0}
    print(f"\n{len(traffic.results)} run_job calls ({len(after)} after the event), "
          f"{len(backlog)} backlog jobs ({drained_after} run after the event), 0 errors, "
          "0 lost, 0 run twice")



def _mid_traffic(cluster: TestCluster, tmp_path: Path, event: Callable[[], None]) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    with traffic_on(cluster.url, runs) as traffic:
        time.sleep(0.2)  # the backlog drains meanwhile
        event_at, event_epoch = time.monotonic(), time.time()
        event()
        wait_for(lambda: sum(at > event_at for at, _ in traffic.results) >= CALLS_AFTER,
                 timeout_s=30, what="run_job calls after the event")
        backlog = traffic.finish()
    _check_nothing_lost_and_nothing_twice(cluster.url, traffic, backlog, runs, event_at,
                                          event_epoch)


def test_a_failover_of_the_default_queues_master_mid_traffic_loses_nothing(
        cluster: TestCluster, tmp_path: Path) -> None:
    master = cluster.port_of_slot(SLOT)

    def fail_over() -> None:
        replica = next(p for p in cluster.ports if p not in cluster.master_ports()
                       and node_client(p).info("replication")["master_port"] == master)
        with node_client(replica) as client:
            client.execute_command("CLUSTER FAILOVER")
        wait_for(lambda: cluster.port_of_slot(SLOT) == replica, what="the failover")

    _mid_traffic(cluster, tmp_path, fail_over)
    assert cluster.port_of_slot(SLOT) != master


def test_moving_the_default_queues_slot_mid_traffic_loses_nothing(
        cluster: TestCluster, tmp_path: Path) -> None:
    source = cluster.port_of_slot(SLOT)
    target = next(p for p in cluster.master_ports() if p != source)
    _mid_traffic(cluster, tmp_path, lambda: cluster.migrate_slot(SLOT, target))
    assert cluster.port_of_slot(SLOT) == target
