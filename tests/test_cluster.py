"""A Redis Cluster moving a queue: its slot migrating to another master while scripts run.
A script must never run half: one that meets a key already moved stops before it wrote
anything, waits, and runs whole on the new master once the slot has moved. Each test has
a cluster of its own (slots move)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from redis.crc import key_slot

from sandboxrunner.job import PreparedJob, Settlement, Status
from sandboxrunner.keys import Keys
from sandboxrunner.store import Store
from sandboxrunner.testdeployments import TestCluster, node_client
from tests.deployments import raw_client
from tests.supervisors import make_config

K = Keys("sr")
SLOT = key_slot(K.wait("default").encode())
HALF_MOVED_S = 0.5  # how long a slot stays half moved while a script waits



def _in_thread(call: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    return thread, out


def _busy_queue(store: Store, jobs: int) -> list[str]:
    """JOBS waiting jobs on default, and every key a claim names in use: a job in the
    lease of sup-a, and one waiting for its retry (a slot being migrated runs a script
    only when all its declared keys are still there)."""
    ids = [f"default-{i:032x}" for i in range(jobs + 2)]
    for job_id in ids:
        store.enqueue(PreparedJob("default", job_id, "echo", json.dumps(job_id), 1000,
                                  retries=1, backoff_json='{"delay": 60000}'))
    (retried, held), _ = store.claim("default", "sup-a", 2)
    store.finish("default", "sup-a", [Settlement(retried.id, Status.FAILED, "{}")])
    return [i for i in ids if i not in (retried.id, held.id)]


def test_a_claim_while_its_queues_slot_migrates_waits_and_then_takes_every_job_once(
        cluster: TestCluster) -> None:
    store = Store(make_config(cluster.url), cluster.url)
    waiting = _busy_queue(store, 40)
    source = cluster.port_of_slot(SLOT)
    target = next(p for p in cluster.master_ports() if p != source)
    cluster.begin_migration(SLOT, target)
    # the newest job records move first; the keys the claim names stay: it runs, and meets
    # moved records only once it has popped their ids
    cluster.move_keys(SLOT, target, 30, containing=":job:")
    thread, claimed = _in_thread(lambda: store.claim("default", "sup-a", 100))
    time.sleep(HALF_MOVED_S)
    with raw_client(cluster.url) as r:  # the claim waits, and has changed nothing
        assert thread.is_alive()
        assert (r.llen(K.wait("default")), r.llen(K.active("default", "sup-a"))) == (40, 1)
    cluster.move_keys(SLOT, target, 2**31)
    cluster.end_migration(SLOT, target)
    thread.join(10)
    jobs, _ = claimed[0]
    assert sorted(j.id for j in jobs) == sorted(waiting)  # each once, records read whole
    with node_client(target) as dst:
        assert dst.llen(K.wait("default")) == 0
        assert dst.llen(K.active("default", "sup-a")) == 41
    store.close()


def test_taking_back_a_dead_supervisors_jobs_while_the_slot_migrates_requeues_each_once(
        cluster: TestCluster) -> None:
    config = make_config(cluster.url, lease_ms=1000)
    store = Store(config, cluster.url)
    _busy_queue(store, 40)
    jobs, _ = store.claim("default", "sup-dead", 40)
    store.heartbeat("default", "sup-dead")
    time.sleep(1.2)  # its lease lapses
    source = cluster.port_of_slot(SLOT)
    target = next(p for p in cluster.master_ports() if p != source)
    cluster.begin_migration(SLOT, target)
    cluster.move_keys(SLOT, target, 20, containing=":job:")
    thread, got = _in_thread(lambda: store.requeue_stalled("default", "sup-dead"))
    time.sleep(HALF_MOVED_S)
    with raw_client(cluster.url) as r:
        assert thread.is_alive() and r.llen(K.wait("default")) == 0
    cluster.move_keys(SLOT, target, 2**31)
    cluster.end_migration(SLOT, target)
    thread.join(10)
    assert got == [(40, 0)]
    with node_client(target) as dst:
        requeued = [i.decode() for i in dst.lrange(K.wait("default"), 0, -1)]
    assert sorted(requeued) == sorted(j.id for j in jobs)  # no job twice
    store.close()
