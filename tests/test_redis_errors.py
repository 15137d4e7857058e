"""Redis trouble reaches a user as one of our errors: one line naming the server (never
its password), what could not be done and what to do; the CLI exits 4 and never prints a
traceback. Every kind of trouble is a real server refusing for real: an ACL user without
sandboxrunner's keys, its EVALSHA or its channels; a replica; a full server (maxmemory,
noeviction); a Cluster node given as redis://; a Sentinel given as redis://; a wrong
password, and none; rediss:// to a plain server, and to a certificate nobody trusts.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from sandboxrunner import errors
from sandboxrunner.client import Client
from sandboxrunner.server_process import free_port, server_binary
from sandboxrunner.testdeployments import cluster_node_port
from sandboxrunner.testserver import TestServer
from sandboxrunner.worker import current_worker, init_worker
from tests.clirun import one_error_line, project_with, run_cli
from tests.faults.common import TLSProxyProcess
from tests.supervisors import TEST_JOBS, client_for, wait_for

PASSWORD = "pw-5e2d-never-shown"
ALL_CALLS = ("run_job", "arun_job", "enqueue", "get_result")
UNKNOWN_ID = "default-" + "0" * 32
# a refusal is raised at its first answer, never after the 10 s the retry rule gives an
# outage (the slowest first answer: a plain server never answers a TLS handshake, which
# gives up at redis-py's 5 s socket timeout)
PROMPT_S = 8.0


@dataclass
class Trouble:
    url: str
    error: type[errors.SandboxRunnerError]
    words: tuple[str, ...]  # in every message
    refused: tuple[str, ...] = ALL_CALLS  # the API calls it refuses


def _acl_user(server: TestServer, name: str, **rules: Any) -> str:
    with redis.Redis.from_url(server.url) as admin:
        admin.acl_setuser(name, enabled=True, reset_keys=True, reset_channels=True,
                          passwords=[f"+{PASSWORD}"], **rules)
    return server.url.replace("redis://", f"redis://{name}:{PASSWORD}@")


def _full_server(folder: Path) -> TestServer:
    server = TestServer(folder).start()
    with redis.Redis.from_url(server.url) as r:
        used = int(r.info("memory")["used_memory"])
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("maxmemory", used + 256 * 1024)
        with pytest.raises(redis.OutOfMemoryError):
            for i in range(100_000):
                r.set(f"filler:{i}", "x" * 1000)
    return server


def _cluster_node(folder: Path) -> tuple[TestServer, TestServer]:
    """Two cluster nodes; the second serves every slot, so the first answers MOVED."""
    nodes = [TestServer(folder / name, pick_port=cluster_node_port,
                        options={"cluster-enabled": "yes",
                                 "cluster-config-file": "nodes.conf"}).start()
             for name in ("a", "b")]
    with redis.Redis.from_url(nodes[0].url) as a, redis.Redis.from_url(nodes[1].url) as b:
        b.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        a.execute_command("CLUSTER", "MEET", "127.0.0.1", nodes[1].port)
        wait_for(lambda: b"cluster_state:ok" in a.execute_command("CLUSTER", "INFO"),
                 what="the cluster to form")
    return nodes[0], nodes[1]


def _sentinel(folder: Path, master_port: int) -> tuple[subprocess.Popen[bytes], int]:
    folder.mkdir(parents=True)
    port = free_port()
    conf = folder / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                    f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n")
    proc = subprocess.Popen([str(server_binary()), str(conf), "--sentinel"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def answers() -> bool:
        try:
            with redis.Redis(port=port, socket_timeout=1) as s:
                return bool(s.ping())
        except redis.ConnectionError:
            return False

    wait_for(answers, what="the sentinel")
    return proc, port


def _self_signed(folder: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the TLS cases need the openssl command (Debian package openssl)")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


KINDS = ["acl-keys", "acl-command", "acl-channels", "replica", "full", "cluster-node",
         "sentinel", "wrong-password", "no-password", "tls-to-plain", "tls-untrusted"]


@pytest.fixture(params=KINDS)
def trouble(request: pytest.FixtureRequest, redis_url: str, redis_server: TestServer,
            tmp_path: Path) -> Iterator[Trouble]:
    kind: str = request.param
    cleanups: list[Callable[[], Any]] = []
    try:
        yield _make(kind, redis_server, tmp_path, cleanups)
    finally:
        for cleanup in reversed(cleanups):
            cleanup()


def _make(kind: str, session: TestServer, tmp_path: Path,
          cleanups: list[Callable[[], Any]]) -> Trouble:
    def own(server: TestServer) -> TestServer:
        cleanups.append(server.stop)
        return server

    if kind.startswith("acl-"):
        rules = {"acl-keys": {"keys": ["other:*"], "channels": ["*"], "commands": ["+@all"]},
                 "acl-command": {"keys": ["*"], "channels": ["*"],
                                 "commands": ["+@all", "-evalsha", "-eval"]},
                 "acl-channels": {"keys": ["*"], "commands": ["+@all"]}}[kind]
        user = kind.replace("-", "_")

        def drop_user() -> None:
            with redis.Redis.from_url(session.url) as admin:
                admin.acl_deluser(user)

        cleanups.append(drop_user)
        url = _acl_user(session, user, **rules)
        words = {"acl-keys": ("~sr:*",), "acl-command": ("EVALSHA", "+evalsha"),
                 "acl-channels": ("&sr:*",)}[kind]
        refused = ("run_job", "arun_job", "get_result") if kind == "acl-channels" else ALL_CALLS
        return Trouble(url, errors.RedisPermissionDenied, (f"user {user!r}", *words), refused)
    if kind == "replica":
        replica = own(TestServer(tmp_path / "replica").start())
        with redis.Redis.from_url(replica.url) as r:
            r.replicaof("127.0.0.1", session.port)
        return Trouble(replica.url, errors.RedisReadOnly, ("read-only replica", "master"))
    if kind == "full":
        full = own(_full_server(tmp_path / "full"))
        return Trouble(full.url, errors.RedisFull, ("is full", "maxmemory",
                                                    "nothing was written"),
                       ("run_job", "arun_job", "enqueue"))
    if kind == "cluster-node":
        first, second = _cluster_node(tmp_path / "cluster")
        own(first), own(second)
        return Trouble(first.url, errors.RedisWrongServer, ("Redis Cluster", "MOVED",
                                                            "redis+cluster://"))
    if kind == "sentinel":
        proc, port = _sentinel(tmp_path / "sentinel", session.port)
        cleanups.append(lambda: (proc.kill(), proc.wait()))
        return Trouble(f"redis://127.0.0.1:{port}", errors.RedisWrongServer,
                       ("Sentinel", "redis+sentinel://"))
    if kind in ("wrong-password", "no-password"):
        locked = own(TestServer(tmp_path / "locked", options={"requirepass": PASSWORD}).start())
        url = (locked.url.replace(PASSWORD, "not-" + PASSWORD) if kind == "wrong-password"
               else f"redis://127.0.0.1:{locked.port}")
        return Trouble(url, errors.RedisAuthFailed, ("refused the login", "password"))
    if kind == "tls-to-plain":
        # asyncio hides where its connect timed out, so an arun_job whose handshake a
        # plain server never answers counts as unreachable (retried, RedisUnavailable)
        return Trouble(f"rediss://127.0.0.1:{session.port}", errors.RedisTLSFailed,
                       ("TLS", "rediss://"), ("run_job", "enqueue", "get_result"))
    cert, key = _self_signed(tmp_path)
    proxy = TLSProxyProcess(session.port, cert, key)
    cleanups.append(proxy.close)
    return Trouble(f"rediss://127.0.0.1:{proxy.port}", errors.RedisTLSFailed,
                   ("TLS", "certificate", "ssl_ca_certs"))


async def _arun(client: Client) -> Any:
    try:
        return await client.arun_job("echo", 1)
    finally:
        await client.aclose()  # this loop's connections end with it


def _call(client: Client, name: str) -> Any:
    if name == "run_job":
        return client.run_job("echo", 1)
    if name == "arun_job":
        return asyncio.run(_arun(client))
    if name == "enqueue":
        return client.enqueue("echo", 1)
    return client.get_result(UNKNOWN_ID)


def _check_message(message: str, trouble: Trouble) -> None:
    assert "\n" not in message and PASSWORD not in message, message
    for word in trouble.words:
        assert word in message, message


def test_the_api_raises_our_error_for_redis_trouble_at_once(trouble: Trouble) -> None:
    with client_for(trouble.url) as client:
        for name in trouble.refused:
            started = time.monotonic()
            with pytest.raises(trouble.error) as raised:
                _call(client, name)
            assert time.monotonic() - started < PROMPT_S, name
            _check_message(str(raised.value), trouble)


def test_the_cli_reports_redis_trouble_in_one_line_with_exit_4(trouble: Trouble,
                                                               tmp_path: Path) -> None:
    project = project_with(tmp_path / "project",
                           {"echo": "def run(data):\n    return {'echo': data}\n"})
    env = {"REDIS_URL": trouble.url}
    ran = run_cli(["run", "echo", "1", "--wait-timeout", "3000"], project, **env)
    assert ran.returncode == errors.EXIT_REDIS, ran.stderr
    _check_message(one_error_line(ran), trouble)
    for args in (["top", "--json"], ["cron"], ["logs", "0123abcd"], ["result", UNKNOWN_ID]):
        done = run_cli(args, project, **env)
        assert done.returncode in (0, errors.EXIT_USAGE, errors.EXIT_REDIS), (args, done)
        if done.returncode:
            line = one_error_line(done)
            assert PASSWORD not in line, line
    if trouble.error is not errors.RedisFull:  # a full Redis is served: see test_maxmemory
        started = run_cli(["start", "--no-wait-for-redis"], project, timeout=30, **env)
        assert started.returncode == errors.EXIT_REDIS, started.stderr
        assert "Traceback" not in started.stderr, started.stderr
        last = started.stderr.strip().splitlines()[-1]
        assert last.startswith("error: "), started.stderr
        _check_message(last, trouble)


def test_init_worker_raises_our_error_when_redis_refuses_its_reply_channels(
        redis_server: TestServer, redis_url: str) -> None:
    # Redis 7 gives a new ACL user no channels: every outcome's PUBLISH would fail, so the
    # worker refuses to start instead of running jobs whose outcomes it cannot write
    url = _acl_user(redis_server, "no_channels", keys=["*"], commands=["+@all"])
    try:
        with pytest.raises(errors.RedisPermissionDenied) as refused:
            init_worker(redis_url=url, jobs_dir=str(TEST_JOBS))
        _check_message(str(refused.value), Trouble(url, errors.RedisPermissionDenied,
                                                   ("user 'no_channels'", "&sr:*")))
        assert current_worker() is None
    finally:
        with redis.Redis.from_url(redis_server.url) as admin:
            admin.acl_deluser("no_channels")
