"""sandboxrunner on the deployments that outgrow one Redis (``--only cluster``): one
redis-server, a Redis Cluster of 3 masters (a replica each), and a master with one replica
behind 3 Sentinels, without and with ``wait_replicas = 1``. All come from the same
redis-server binary (Debian's: cluster and Sentinel modes), started by
sandboxrunner.testdeployments, one after the other in one run.

Each deployment gets the supervisor of the throughput section (`sandboxrunner start`,
thread mode), serving both queues, and the same clients: per queue (default, then
priority), N no-op jobs through ``arun_job`` with the ``gather`` client (best of
--repeat), with each server's Redis CPU per job over that run (INFO cpu: used_cpu_sys plus
used_cpu_user, after minus before, over the jobs seen; each master apart, the replicas
summed); then sequential ``run_job`` round trips on the default queue. With
``wait_replicas``, also what WAIT itself adds to a write's round trip (`wait_cost`), which
the noise of a shared machine hides in the figures above. In the cluster, also what a
reply costs Redis with SPUBLISH (the finish script's) against a classic PUBLISH
(`publish_cost`).

In the cluster a queue is the unit of sharding: the default queue's hash tag {sr:default}
falls in slot 516 (the first master's range, 0-5460) and {sr:priority} in slot 10092 (the
second's, 5461-10921), so each queue's load shows on its own master and the third master
carries neither.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness import Latency, Unavailable
from benchmarks.sandboxrunner_bench import (
    Supervisor,
    gather_jobs,
    make_client,
    run_job_roundtrips,
)
from benchmarks.variant import payload
from sandboxrunner.keys import Keys
from sandboxrunner.testdeployments import (
    TestCluster,
    TestSentinel,
    node_client,
    redis_server_binary,
)
from sandboxrunner.testserver import TestServer

QUEUE_JOBS = (("default", "noop"), ("priority", "noop_priority"))
WARMUP_JOBS = 200
REPLIES = 20_000  # replies published per kind in publish_cost
REPLY = '{"id": "default-0123456789abcdef0123456789abcdef", "status": "completed", "result": 1}'
PUBLISH_SCRIPT = "return redis.call(ARGV[1], KEYS[1], ARGV[2])"


@dataclass
class Deployment:
    """One deployment as measured: its URL, its servers' ports and the settings used."""

    label: str
    url: str
    masters: list[int]  # in slot order for a cluster
    replicas: list[int]
    flush: Callable[[], None]
    settings: dict[str, Any] = field(default_factory=dict)
    publish_cost: bool = False  # measure SPUBLISH against PUBLISH (a cluster)

    def describe(self) -> dict[str, Any]:
        return {"deployment": self.label, "url": self.url, "masters": self.masters,
                "replicas": self.replicas, "settings": self.settings}


@contextmanager
def _single(folder: Path) -> Iterator[list[Deployment]]:
    server = TestServer(folder, binary=redis_server_binary()).start()
    try:
        def flush() -> None:
            with node_client(server.port) as client:
                client.flushall()

        yield [Deployment("redis-server", server.url, [server.port], [], flush)]
    finally:
        server.stop()


@contextmanager
def _cluster(folder: Path) -> Iterator[list[Deployment]]:
    cluster = TestCluster(folder).start()
    try:
        masters = cluster.ports[:cluster.masters_count]  # formed in slot order
        yield [Deployment("cluster, 3 masters + 3 replicas", cluster.url, masters,
                          cluster.ports[cluster.masters_count:], cluster.flush,
                          publish_cost=True)]
    finally:
        cluster.stop()


@contextmanager
def _sentinel(folder: Path) -> Iterator[list[Deployment]]:
    group = TestSentinel(folder, replicas=1).start()
    try:
        ports = ([group.master.port], [r.port for r in group.replicas])
        yield [Deployment("sentinel, master + 1 replica", group.url, *ports, group.flush),
               Deployment("sentinel, wait_replicas = 1", group.url, *ports, group.flush,
                          {"wait_replicas": 1})]
    finally:
        group.stop()


DEPLOYMENTS = (("single", _single), ("cluster", _cluster), ("sentinel", _sentinel))


def run_deployments(logdir: Path, args: Any, log: Callable[[str], None]) -> dict[str, Any]:
    """Every deployment's figures (the module docstring), and what could not be measured."""
    section: dict[str, Any] = {"deployments": [], "problems": []}
    try:
        binary = redis_server_binary()
        section["server"] = _version(binary)
    except Exception as exc:  # noqa: BLE001 - the whole section is n/a
        section["problems"].append(f"{type(exc).__name__}: {exc}")
        return section
    for name, opener in DEPLOYMENTS:
        try:
            with opener(logdir / f"deployment-{name}") as deployments:
                for deployment in deployments:
                    deployment.flush()
                    section["deployments"].append(measure(deployment, logdir, args, log))
        except Exception as exc:  # noqa: BLE001 - one deployment is n/a, the rest go on
            log(f"[red]{name} deployment failed[/]: {exc!r}")
            section["problems"].append(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")
    return section


def measure(deployment: Deployment, logdir: Path, args: Any,
            log: Callable[[str], None]) -> dict[str, Any]:
    """One deployment: each queue's throughput and CPU per job, then the round trip."""
    queues = ",".join(queue for queue, _ in QUEUE_JOBS)
    supervisor = Supervisor(deployment.url, logdir, processes=False, concurrency=None,
                            queues=queues, settings=deployment.settings)
    client = make_client(deployment.url, **deployment.settings)
    try:
        row: dict[str, Any] = {**deployment.describe(), "throughput": {}}
        for queue, job in QUEUE_JOBS:
            if client.run_job(job, payload(0), wait_timeout=20_000) != payload(0):
                raise Unavailable(f"{job} did not return its input")
            best = _throughput(deployment, client, job, args)
            row["throughput"][queue] = best
            log(f"{deployment.label}, {queue}: {best['jobs_per_s']:,.0f} jobs/s; Redis CPU "
                f"us/job: masters {best['master_cpu_us']}, replicas {best['replicas_cpu_us']}")
        latency = run_job_roundtrips(client, "noop", args.calls, args.warmup,
                                     time.monotonic() + args.latency_seconds)
        row["roundtrip"] = latency.to_json()
        log(f"{deployment.label}: round trip p50 {latency.p50_ms:.3f} ms, "
            f"p99 {latency.p99_ms:.3f} ms")
        if deployment.settings.get("wait_replicas"):
            row["wait_cost"] = wait_cost(deployment.masters[0], args.calls)
            log(f"{deployment.label}: a write's round trip {row['wait_cost']}")
        if deployment.publish_cost:
            row["publish_cost"] = publish_cost(deployment, REPLIES)
            log(f"{deployment.label}: Redis CPU per reply {row['publish_cost']}")
        return row
    finally:
        client.close()
        supervisor.stop()


def _throughput(deployment: Deployment, client: Any, job: str, args: Any) -> dict[str, Any]:
    """The best of --repeat runs of N jobs of JOB, each with its servers' CPU per job."""
    asyncio.run(gather_jobs(client, job, min(WARMUP_JOBS, args.n), args.sr_window,
                            time.monotonic() + args.max_seconds))
    runs = []
    ports = deployment.masters + deployment.replicas
    for _ in range(max(1, args.repeat)):
        before = [_cpu_s(port) for port in ports]
        result = asyncio.run(gather_jobs(client, job, args.n, args.sr_window,
                                         time.monotonic() + args.max_seconds))
        used_us = [(_cpu_s(port) - b) * 1e6 / max(1, result.seen)
                   for port, b in zip(ports, before, strict=True)]
        masters = len(deployment.masters)
        runs.append({**result.to_json(),
                     "master_cpu_us": [round(u, 1) for u in used_us[:masters]],
                     "replicas_cpu_us": round(sum(used_us[masters:]), 1)})
    best = max(runs, key=lambda r: (r["complete"], r["jobs_per_s"]))
    return {**best, "runs": runs}


def wait_cost(port: int, calls: int) -> dict[str, float]:
    """A write's round trip (SET) on the master at PORT, alone and followed by WAIT 1 in
    the same round trip (as wait_replicas = 1 sends each enqueue and settlement),
    interleaved call by call so both see the same machine: p50 and p99 in ms."""
    alone, waited = Latency(wanted=calls), Latency(wanted=calls)
    with node_client(port) as client:
        for i in range(calls):
            for latency, commands in ((alone, [("SET", "bench:wait", i)]),
                                      (waited, [("SET", "bench:wait", i), ("WAIT", 1, 1000)])):
                pipe = client.pipeline(transaction=False)
                for command in commands:
                    pipe.execute_command(*command)
                start = time.perf_counter()
                pipe.execute()
                latency.samples_s.append(time.perf_counter() - start)
    return {"calls": calls, "write_p50_ms": round(alone.p50_ms, 3),
            "write_p99_ms": round(alone.p99_ms, 3), "write_wait_p50_ms": round(waited.p50_ms, 3),
            "write_wait_p99_ms": round(waited.p99_ms, 3)}


def publish_cost(deployment: Deployment, replies: int) -> dict[str, Any]:
    """Redis CPU per reply (us) on each server of a cluster, REPLIES replies published from
    a script on the default queue's reply channel as the finish script does: with SPUBLISH
    (a subscriber on that master, as a listener has), and with PUBLISH (a subscriber on
    another master: a classic message reaches every node). Servers in the deployment's
    order: masters (the publishing one first), then replicas (the first one its own)."""
    channel = Keys("sr").reply_channel("default", "bench")
    publisher, elsewhere = deployment.masters[0], deployment.masters[1]
    ports = deployment.masters + deployment.replicas
    out: dict[str, Any] = {"replies": replies}
    for command, sub_port, kind in (("SPUBLISH", publisher, "ssubscribe"),
                                    ("PUBLISH", elsewhere, "subscribe")):
        with node_client(sub_port) as sub_client, node_client(publisher) as client:
            pubsub = sub_client.pubsub()
            getattr(pubsub, kind)(channel)
            pubsub.get_message(timeout=5)  # the confirmation
            reader = threading.Thread(target=_read, args=(pubsub, replies), daemon=True)
            reader.start()
            before = [_cpu_s(port) for port in ports]
            for start in range(0, replies, 100):
                pipe = client.pipeline(transaction=False)
                for _ in range(min(100, replies - start)):
                    pipe.eval(PUBLISH_SCRIPT, 1, channel, command, REPLY)
                pipe.execute()
            reader.join(60)
            used = [(_cpu_s(port) - b) * 1e6 / replies for port, b in zip(ports, before,
                                                                        strict=True)]
            pubsub.close()
        out[command.lower() + "_us"] = [round(u, 2) for u in used]
    return out


def _read(pubsub: Any, count: int) -> None:
    """Read COUNT messages (what a listener does; its CPU is the client's)."""
    got, deadline = 0, time.monotonic() + 60
    while got < count and time.monotonic() < deadline:
        if pubsub.get_message(timeout=1) is not None:
            got += 1


def _cpu_s(port: int) -> float:
    """CPU seconds the server at PORT has used (all its threads, user and system)."""
    with node_client(port) as client:
        info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _version(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                         timeout=10).stdout
    return f"{binary}: {out.strip()}"
