"""Fixtures the fault tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxrunner.testserver import TestServer


@pytest.fixture
def debug_server(tmp_path: Path) -> Iterator[TestServer]:
    """A server of the test's own that takes DEBUG (SLEEP stalls it for real)."""
    server = TestServer(tmp_path / "redis", options={"enable-debug-command": "yes"})
    server.start()
    try:
        yield server
    finally:
        server.stop()
