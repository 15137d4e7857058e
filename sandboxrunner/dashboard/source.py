"""What the dashboard reads from Redis and changes there: through the library only (the
snapshot `top` reads and the job durations, job_control, job_listing, joblog, the store's
pause, the client's run_cron_now), never a command of its own. The snapshot and the
durations are shared readings (shared_snapshot.py): one read per ``refresh_s`` each.
Every method is a blocking call; the routes run them on Starlette's thread pool.
redis-py's errors become ours (redis_errors.api_boundary), naming the server without its
password.

Which Redis: the configured URL, else the project's running embedded server, found at the
first request (so an app may mount the dashboard before its worker starts the server);
the dashboard never starts one. Connections are made once and kept.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..durations import Durations
from ..errors import InvalidJobState, RedisUnavailable
from ..job_control import JobInfo, checked_job_id, read_job
from ..job_listing import JobPage, failed_job_ids, list_page
from ..job_lookup import resolve_job_id
from ..joblog import display_level, read_job_log
from ..queue_control import check_queue
from ..redis_errors import api_boundary
from ..registry import Registry, load_project_registry
from ..snapshot import Snapshot, SnapshotReader
from .shared_snapshot import SharedReading, SharedSnapshot

if TYPE_CHECKING:
    from ..client import Client
    from ..config import Config

LOG_LINES_PER_READ = 1000  # a job keeps log_max_lines (1000 by default) and one marker


@dataclass(frozen=True)
class JobView:
    """A job as its page shows it: its JobInfo and its data (JSON text as stored)."""

    info: JobInfo
    data: str


@dataclass(frozen=True)
class LogRow:
    id: str  # the stream entry id: the next read starts after it
    ts_ms: int
    label: str  # as `logs` and `top` show it (joblog.display_level)
    msg: str


class Source:
    """The dashboard's door to Redis, for one configuration."""

    def __init__(self, config: Config, refresh_s: float) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._url: str | None = None
        self._client: Client | None = None
        self._cron_client: Client | None = None
        self._reader: SnapshotReader | None = None
        self.shared = SharedSnapshot(self._read_snapshot, refresh_s)
        self.shared_durations = SharedReading(self._read_durations, refresh_s)

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = self.config.redis_url or _embedded_url(self.config)
        return self._url

    def client(self) -> Client:
        """The client the reads and actions use (no job files: jobs are named by id)."""
        from ..client import Client

        with self._lock:
            if self._client is None:
                self._client = Client(self.config, Registry({}), self.url)
            return self._client

    def close(self) -> None:
        with self._lock:
            for client in (self._client, self._cron_client):
                if client is not None:
                    client.close()
            if self._reader is not None:
                self._reader.close()
            self._client = self._cron_client = self._reader = None

    def _snapshot_reader(self) -> SnapshotReader:
        with self._lock:
            if self._reader is None:
                self._reader = SnapshotReader(self.config, self.url)
            return self._reader

    def _read_snapshot(self) -> Snapshot:
        return self._snapshot_reader().read()

    def _read_durations(self) -> Durations:
        return self._snapshot_reader().read_durations()

    def snapshot(self) -> Snapshot:
        return self.shared.get()

    def metrics(self) -> tuple[Snapshot, Durations]:
        """What /metrics shows: the shared snapshot and the job durations, each read at
        most once per refresh interval."""
        return self.shared.get(), self.shared_durations.get()

    @api_boundary("find job {!r}")
    def resolve(self, given: str) -> str:
        """The full id GIVEN names (a full id, or its start); JobNotFound if none or many."""
        return resolve_job_id(self.client().store, given)

    @api_boundary("read job {}")
    def job(self, job_id: str) -> JobView:
        """JOB_ID as get_job reads it (one round trip, two while it runs), and its data."""
        client = self.client()
        info = read_job(client, job_id)
        (data,) = client.store.job_fields(job_id, "data")
        return JobView(info, data)

    @api_boundary("read the log of job {}")
    def log_rows(self, job_id: str, after: str = "-") -> list[LogRow]:
        """JOB_ID's log lines after stream id AFTER ('-': all), oldest first."""
        entries = read_job_log(self.client().store, checked_job_id(job_id), after,
                               LOG_LINES_PER_READ)
        return [_log_row(entry_id, line) for entry_id, line in entries]

    @api_boundary("list the jobs of queue {}")
    def page(self, queue: str, status: str | None, cursor: str | None,
             limit: int) -> JobPage:
        return list_page(self.client(), check_queue(queue), status, None, limit, cursor)

    # -- actions (actions.py checks the request; these only do them) -------------------
    def cancel(self, job_id: str) -> str:
        done = self.client().cancel(job_id)
        return {"cancelled": "cancelled: it will not run",
                "cancelling": "cancelling: its supervisor stops it within a heartbeat",
                }.get(done.outcome, f"not cancelled: it had already {done.status}")

    def retry(self, job_id: str) -> str:
        self.client().retry(job_id)
        return "retried: it runs again, same id"

    def delete(self, job_id: str) -> str:
        return self.client().delete_job(job_id).message

    def run_cron_now(self, job: str) -> str:
        """Run cron job JOB now (client.run_cron_now); the new job's id."""
        return self.cron_client().run_cron_now(job)

    def cron_client(self) -> Client:
        """A client with the project's job files: a cron job's run is prepared from its
        file, as a tick's is. Loaded at the first run-now, so a dashboard that never runs
        one never imports the project's jobs."""
        from ..client import Client

        with self._lock:
            if self._cron_client is None:
                self._cron_client = Client(self.config, load_project_registry(self.config),
                                           self.url)
            return self._cron_client

    @api_boundary("retry the failed jobs of queue {}")
    def retry_failed(self, queue: str) -> str:
        client, retried, skipped = self.client(), 0, 0
        for job_id in failed_job_ids(client, check_queue(queue), None):
            try:
                client.retry(job_id)
                retried += 1
            except InvalidJobState:  # it moved on, or its singleton key is held
                skipped += 1
        return f"retried {retried} failed job(s)" + (f", skipped {skipped}" if skipped else "")

    @api_boundary("pause or resume queue {}")
    def set_paused(self, queue: str, paused: bool) -> str:
        changed = self.client().store.set_paused(check_queue(queue), paused)
        word = "paused" if paused else "resumed"
        return f"queue {queue} {word}" if changed else f"queue {queue} was already {word}"


def _embedded_url(config: Config) -> str:
    from ..embedded import embedded_status

    status = None if not config.project_found else embedded_status(config.project_dir)
    if status is None:
        raise RedisUnavailable(
            f"no Redis URL is configured (REDIS_URL or [tool.sandboxrunner] redis_url) and "
            f"no embedded server runs for {config.project_dir}; the dashboard only reads, so "
            f"it starts none: start a supervisor there (`sandboxrunner start`) or set REDIS_URL")
    return str(status["url"])


def _log_row(entry_id: str, line: dict[str, Any]) -> LogRow:
    msg = str(line.get("msg", ""))
    if isinstance(line.get("err"), dict):
        msg += f" [{line['err'].get('type', 'Error')}: {line['err'].get('message', '')}]"
    if "data" in line:
        msg += " " + json.dumps(line["data"], default=str)
    try:
        ts_ms = int(float(line.get("ts", 0)) * 1000)
    except (TypeError, ValueError):
        ts_ms = 0
    ts_ms = ts_ms or int(entry_id.partition("-")[0] or 0)
    return LogRow(entry_id, ts_ms, display_level(str(line.get("level", "info")),
                                                 str(line.get("source", ""))), msg)
