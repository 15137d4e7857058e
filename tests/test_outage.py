"""A supervisor's threads back off on schedules of their own while Redis is down; the first
of them to find it back ends the others' pauses (outage.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sandboxrunner import fetching, settling
from sandboxrunner.testserver import TestServer
from tests.faults.common import job_lines, wait_for
from tests.supervisors import client_for, running_supervisor

HOUR_S = 3600.0  # a backoff pause that only Redis answering another thread can end


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in record.getMessage() for record in caplog.records)


def test_fetching_and_settling_resume_as_soon_as_the_heartbeat_finds_redis_back(
        fresh_server: TestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the fetch and settle threads pause for an hour after their first failure; the
    # heartbeat tries every heartbeat_ms (200) as always
    monkeypatch.setattr(fetching, "FETCH_BACKOFF_MIN_S", HOUR_S)
    monkeypatch.setattr(settling, "BACKOFF_MIN_S", HOUR_S)
    caplog.set_level(logging.WARNING, logger="sandboxrunner")
    url = fresh_server.url
    runs = tmp_path / "runs"
    runs.mkdir()
    with running_supervisor(url, workers="default", concurrency=2) as supervisor, \
            client_for(url) as client:
        running = client.enqueue("fault_work", {"dir": str(runs), "seconds": 0.5})
        wait_for(lambda: job_lines(runs), what="the job to start")
        fresh_server.stop()  # SHUTDOWN with the AOF: the job and its lease are kept
        wait_for(lambda: _logged(caplog, "fetching jobs: Redis failed")
                 and _logged(caplog, "writing job outcomes: Redis failed"),
                 what="the fetch and the outcome of the running job to fail")
        assert supervisor.settler.unwritten() == {"default": [running.id]}
        fresh_server.restart()
        # settled: the settle thread's pause ended; fetched: so did the fetch thread's
        assert running.result(wait_timeout=20_000)["job"] == running.id
        assert client.run_job("echo", 1, wait_timeout=20_000)["echo"] == 1
    assert _logged(caplog, "heartbeat: Redis is back")
