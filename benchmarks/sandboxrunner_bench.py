"""sandboxrunner under the benchmark: a `sandboxrunner start` subprocess and a client here.

The supervisor is a real `python -m sandboxrunner start` (own process, own GIL) serving
the default queue with the job files of ``benchmarks/jobs``; the client is an in-process
`Client` built like the tests build one. Process mode needs
``sandboxrunner/executors/processes.py``: when it is missing, or the supervisor fails to
start in that mode, every process-mode figure is n/a and the run goes on.

Client methods for throughput (``--sr-wait``):

  enqueue   ``client.enqueue`` N times (fire and forget), then ``handle.result()`` on
            each in order; one thread, no asyncio
  gather    ``client.arun_job`` on one event loop, at most WINDOW calls in flight
            (``--sr-window``), each woken by the shared pub/sub listener
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import time
from pathlib import Path
from typing import Any

from benchmarks import marks
from benchmarks.harness import (
    JOBS_DIR,
    ROOT,
    Latency,
    Throughput,
    Unavailable,
    WorkerProcess,
    left_s,
    python_argv,
    wait_until,
)
from benchmarks.patterns import collect_in_order
from benchmarks.variant import PROCESSES, TimeoutTarget, Variant, payload, run_roundtrips
from sandboxrunner.client import Client
from sandboxrunner.config import THREAD_CONCURRENCY, load_config
from sandboxrunner.errors import JobError, WaitTimeout
from sandboxrunner.keys import Keys
from sandboxrunner.registry import load_registry
from sandboxrunner.store import Store

QUEUE = "default"
PROCESS_CHILDREN = 2
READY_TIMEOUT_S = 30.0
WAIT_METHODS = {
    "enqueue": "client.enqueue() x N, then handle.result() on each",
    "gather": "asyncio.gather of client.arun_job(), {window} in flight",
}


def process_mode_missing() -> str | None:
    """Why process mode cannot run here, or None when its module exists."""
    if importlib.util.find_spec("sandboxrunner.executors.processes") is None:
        return "sandboxrunner/executors/processes.py does not exist yet"
    return None


def make_client(url: str, **settings: Any) -> Client:
    """A client of URL (any kind of deployment) with the benchmark's job files; SETTINGS:
    more config keys (wait_replicas)."""
    config = load_config({"redis_url": url, "jobs_dir": str(JOBS_DIR), **settings},
                         project_dir=ROOT, env={})
    return Client(config, load_registry(config.jobs_dir), url)


def make_client_config(url: str) -> Any:
    return load_config({"redis_url": url, "jobs_dir": str(JOBS_DIR)}, project_dir=ROOT, env={})


class Supervisor:
    """`python -m sandboxrunner start` for QUEUES (the default queue unless given), waited
    for until it heartbeats; SETTINGS: more config keys, passed as SANDBOXRUNNER_<KEY>."""

    def __init__(self, url: str, logdir: Path, *, processes: bool,
                 concurrency: int | None, queues: str = QUEUE,
                 settings: dict[str, Any] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXRUNNER_")}
        env.update({"REDIS_URL": url, "WORKERS": queues, "SANDBOXRUNNER_JOBS_DIR": str(JOBS_DIR),
                    marks.URL_ENV: url})
        env.update({f"SANDBOXRUNNER_{k.upper()}": str(v) for k, v in (settings or {}).items()})
        args = ["-m", "sandboxrunner", "start", "--workers", queues]
        if processes:
            args.append("--separate-process")
        if concurrency is not None:
            args += ["--concurrency", str(concurrency)]
        mode = "processes" if processes else "threads"
        self.proc = WorkerProcess(python_argv(*args), logdir / f"sandboxrunner-{mode}.log",
                                  env=env)
        self.url = url
        try:
            self._wait_ready()
        except Unavailable:
            self.proc.stop()
            raise

    def _wait_ready(self) -> None:
        sups = Keys("sr").sups(QUEUE)
        needle = f"-{self.proc.pid}-".encode()
        store = Store(make_client_config(self.url), self.url)  # any kind of deployment

        def ready() -> bool:
            if not self.proc.alive():
                raise Unavailable(f"supervisor exited early:\n{self.proc.tail()}")
            return any(needle in member for member in store.redis.zrange(sups, 0, -1))

        try:
            wait_until(ready, READY_TIMEOUT_S, 0.02, "supervisor heartbeat")
        except Unavailable as exc:
            raise Unavailable(f"{exc}:\n{self.proc.tail()}") from exc
        finally:
            store.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.stop()


def _stopped(client: Client | None, supervisor: Supervisor | None) -> tuple[None, None]:
    """Close the client, then stop the supervisor (either may be missing)."""
    if client is not None:
        client.close()
    if supervisor is not None:
        supervisor.stop()
    return None, None


class SandboxrunnerVariant(Variant):
    system = "sandboxrunner"

    def __init__(self, mode: str, wait: str = "gather", window: int = 64) -> None:
        self.mode = mode
        self.wait = wait
        self.window = window
        processes = mode == PROCESSES
        self.label = f"sandboxrunner {'processes' if processes else 'threads'}"
        self.concurrency = PROCESS_CHILDREN if processes else None
        shown = (f"--separate-process --concurrency {PROCESS_CHILDREN}" if processes
                 else f"(thread mode, default concurrency {THREAD_CONCURRENCY})")
        self.workers = f"sandboxrunner start --workers default {shown}"
        self.wait_method = "handle.result() on each (pub/sub reply)"
        self.pipelined_method = WAIT_METHODS["gather"].format(window=window)
        self.roundtrip_method = "run_job() (pub/sub reply to this client)"
        self.supervisor: Supervisor | None = None
        self.client: Client | None = None

    def start(self, url: str, logdir: Path) -> None:
        if self.mode == PROCESSES:
            missing = process_mode_missing()
            if missing:
                raise Unavailable(missing)
        self.supervisor = Supervisor(url, logdir, processes=self.mode == PROCESSES,
                                     concurrency=self.concurrency)
        self.client = make_client(url)
        got = self.client.run_job("noop", payload(0), wait_timeout=20_000)
        if got != payload(0):
            raise Unavailable(f"noop returned {got!r}")

    def stop(self) -> None:
        self.client, self.supervisor = _stopped(self.client, self.supervisor)

    def worker_pids(self) -> list[int]:
        return [self.supervisor.pid] if self.supervisor is not None else []

    def _client(self) -> Client:
        assert self.client is not None, "start() first"
        return self.client

    async_client = True

    def submit(self, i: int) -> Any:
        return self._client().enqueue("noop", payload(i))

    def collect(self, handles: list[tuple[int, Any]], deadline: float) -> tuple[int, int]:
        return collect_in_order(
            handles, deadline, lambda handle, left: handle.result(wait_timeout=int(left * 1000)))

    async def asubmit(self, i: int) -> Any:
        return await self._client().aenqueue("noop", payload(i))

    async def acollect(self, handles: list[tuple[int, Any]], deadline: float) -> tuple[int, int]:
        client, seen, wrong = self._client(), 0, 0
        for i, handle in handles:
            try:
                got = await client.aget_result(handle.id, int(left_s(deadline) * 1000))
            except Exception:  # noqa: BLE001 - WaitTimeout past the deadline: stop counting
                break
            seen += 1
            wrong += got != payload(i)
        return seen, wrong

    def run_async(self, coro: Any) -> Any:
        async def closing() -> Any:
            try:
                return await coro
            finally:
                await self._client().aclose()  # this loop's connections

        return asyncio.run(closing())

    def throughput(self, n: int, deadline: float) -> Throughput:
        """The pipelined client (``gather``: ours, no peer is driven so), or with
        ``--sr-wait enqueue`` the one-client pattern every system runs (patterns.py)."""
        if self.wait == "gather":
            return asyncio.run(gather_jobs(self._client(), "noop", n, self.window, deadline))
        return super().throughput(n, deadline)

    def roundtrip(self, calls: int, warmup: int, deadline: float) -> Latency:
        return run_job_roundtrips(self._client(), "noop", calls, warmup, deadline)


async def gather_jobs(client: Client, name: str, n: int, window: int,
                      deadline: float) -> Throughput:
    """N calls of no-op job NAME with ``client.arun_job`` on this event loop, at most WINDOW
    in flight (the ``gather`` client), until DEADLINE; closes the loop's connections."""
    gate = asyncio.Semaphore(window)
    counts = {"seen": 0, "wrong": 0}

    async def one(i: int) -> None:
        async with gate:
            try:
                got = await client.arun_job(name, payload(i),
                                            wait_timeout=int(left_s(deadline) * 1000))
            except JobError:
                got = None
            counts["seen"] += 1
            counts["wrong"] += got != payload(i)

    start = time.perf_counter()
    tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), left_s(deadline))
    except (TimeoutError, WaitTimeout):
        pass  # partial: counted so far
    finally:
        elapsed = time.perf_counter() - start
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()
    return Throughput(n, counts["seen"], elapsed, counts["wrong"])


def run_job_roundtrips(client: Client, name: str, calls: int, warmup: int,
                       deadline: float) -> Latency:
    """Sequential ``run_job`` calls of no-op job NAME (`run_roundtrips`)."""

    def call(i: int) -> None:
        got = client.run_job(name, payload(i), wait_timeout=10_000)
        if got != payload(i):
            raise AssertionError(f"noop returned {got!r}")

    return run_roundtrips(call, calls, warmup, deadline)


# --------------------------------------------------------------------------- timeouts


class SandboxrunnerTimeouts(TimeoutTarget):
    system = "sandboxrunner"
    label = "sandboxrunner processes"
    how = ("--separate-process --concurrency 1; job file `timeout = 1000` (ms); "
           "the supervisor kills the child's process tree at the deadline")

    def __init__(self) -> None:
        self.supervisor: Supervisor | None = None
        self.client: Client | None = None

    def start(self, url: str, logdir: Path) -> None:
        missing = process_mode_missing()
        if missing:
            raise Unavailable(missing)
        self.supervisor = Supervisor(url, logdir, processes=True, concurrency=1)
        self.client = make_client(url)
        self.client.run_job("noop", payload(0), wait_timeout=20_000)

    def stop(self) -> None:
        self.client, self.supervisor = _stopped(self.client, self.supervisor)

    def root_pid(self) -> int:
        assert self.supervisor is not None
        return self.supervisor.pid

    def submit(self, kind: str) -> Any:
        assert self.client is not None
        return self.client.enqueue("sleep_long" if kind == "sleep" else "c_call")

    def wait_outcome(self, handle: Any, timeout_s: float) -> tuple[bool, str]:
        try:
            handle.result(wait_timeout=int(timeout_s * 1000))
        except JobError as exc:
            return True, f"{type(exc).__name__}: {exc.error_message or exc}"[:160]
        return False, "completed"

    def submit_stamp(self) -> None:
        assert self.client is not None
        self.client.enqueue("stamp")
