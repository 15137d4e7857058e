"""Factories for supervisors and clients used by the tests: in-process and as real
`sandboxrunner start` subprocesses (for SIGKILL and SIGTERM), always torn down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from sandboxrunner.client import Client
from sandboxrunner.config import load_config
from sandboxrunner.keys import Keys
from sandboxrunner.process_client import ClientFactory, set_default_client
from sandboxrunner.registry import load_registry
from sandboxrunner.supervisor import Supervisor
from tests.deployments import raw_client

TEST_JOBS = Path(__file__).parent / "jobs"
ROOT = Path(__file__).parent.parent

# the two ways a supervisor runs jobs, as make_config overrides: parametrise a test by them
MODES = {"threads": {}, "processes": {"use_separate_process": True, "concurrency": 2}}


def wait_for(predicate: Any, timeout_s: float = 10.0, what: str = "condition") -> Any:
    """Poll PREDICATE until it returns something truthy (returned); fail after TIMEOUT_S."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def make_config(redis_url: str, **overrides: Any) -> Any:
    values = {"redis_url": redis_url, "jobs_dir": str(TEST_JOBS), "lease_ms": 1000,
              "heartbeat_ms": 200, "grace_period": 5000}
    values.update(overrides)
    return load_config(values, project_dir=ROOT, env={})


@contextmanager
def running_supervisor(redis_url: str, **overrides: Any) -> Iterator[Supervisor]:
    config = make_config(redis_url, **overrides)
    registry = load_registry(config.jobs_dir)
    make_client = ClientFactory(config, registry, redis_url)  # as `sandboxrunner start`
    supervisor = Supervisor(config, registry, redis_url, make_client=make_client)
    supervisor.start()
    try:
        yield supervisor
    finally:
        supervisor.stop(grace_ms=2000)
        make_client.close()


@contextmanager
def client_for(redis_url: str, **overrides: Any) -> Iterator[Client]:
    config = make_config(redis_url, **overrides)
    client = Client(config, load_registry(config.jobs_dir), redis_url)
    set_default_client(client)
    try:
        yield client
    finally:
        set_default_client(None)
        client.close()


def supervisor_env(redis_url: str, **env: str) -> dict[str, str]:
    out = dict(os.environ)
    out.update({
        "REDIS_URL": redis_url,
        "SANDBOXRUNNER_JOBS_DIR": str(TEST_JOBS),
        "SANDBOXRUNNER_LEASE_MS": "1000",
        "SANDBOXRUNNER_HEARTBEAT_MS": "200",
        "PYTHONPATH": str(ROOT) + os.pathsep + out.get("PYTHONPATH", ""),
    })
    out.update(env)
    return out


class SupervisorProcess:
    """`python -m sandboxrunner start` in a subprocess, waited for until it heartbeats."""

    def __init__(self, redis_url: str, args: list[str] = (), **env: str) -> None:
        self.redis_url = redis_url
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sandboxrunner", "start", *args],
            env=supervisor_env(redis_url, **env), cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )

    def wait_ready(self, queues: tuple[str, ...] = ("default",), timeout_s: float = 20) -> None:
        keys = Keys("sr")
        deadline = time.monotonic() + timeout_s
        with raw_client(self.redis_url) as r:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"supervisor exited early:\n{self.output()}")
                members = [r.zrange(keys.sups(q), 0, -1) for q in queues]
                if all(any(str(self.proc.pid).encode() in m for m in ms) for ms in members):
                    return
                time.sleep(0.05)
        raise AssertionError(f"supervisor not ready in {timeout_s}s:\n{self.output()}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float = 20) -> int:
        return self.proc.wait(timeout=timeout_s)

    def output(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stdout.read() if self.proc.stdout else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()


def assert_idle(pid: int, seconds: float = 3.0) -> None:
    """Assert process PID spins no CPU over SECONDS: a spin shows as tens of %; idle is
    well under 1 % (heartbeats, snapshots), a few % on a machine loaded by other work, so
    the bound tells a spin, not a figure."""
    proc = psutil.Process(pid)
    before = proc.cpu_times()
    time.sleep(seconds)
    after = proc.cpu_times()
    busy_s = (after.user + after.system) - (before.user + before.system)
    assert busy_s < 0.05 * seconds, f"{busy_s / seconds:.1%} CPU while idle"
