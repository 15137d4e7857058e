"""The read side of cron: the schedules as Redis holds them, for `sandboxrunner cron`, `top`
and dashboards. It never writes; `sandboxrunner.cron` owns the schedules and firing.

`list_schedules` returns one plain dict per schedule (two round trips for any number of
schedules: the cron hashes with the queues' supervisors and the server clock, then the
status of each schedule's last run). Its keys:

  queue, job, pattern, tz    the schedule as last synced (croniter's pattern: six fields
                             have seconds last)
  next_ms                    the tick the schedule fires next, as last written by a sync or a
                             fire; in the past when nobody fires it (see live_supervisors)
  last_tick_ms, last_job_id  the last handled tick and its run (or the in-flight run that
                             made it skip: last_skipped)
  last_outcome               'skipped', or the last run's job status ('expired': gone)
  last_job_status            the last run's job status
  runs, skips, error         fired and skipped ticks; why it never fires ('' = it does)
  manual_runs, last_manual_ms, last_manual_job_id
                             runs by hand (cron_now.run_now: not ticks), the latest's time and id
  synced_by, synced_at_ms    the supervisor that last synced it
  newest_sid                 the supervisor whose start synced the queue last
  loaded_by_newest           that supervisor has this job: false for a schedule it kept
                             because it could not have loaded the job (see cron_sync.lua)
  live_supervisors           supervisors of the queue heartbeating within a lease: with none
                             nothing fires, whatever next_ms says
  server_ms                  the Redis server's clock when this was read
"""

from __future__ import annotations

import json
from typing import Any

from .keys import QUEUES
from .store import Store

SYNC_MARKER = "@sync"


def _decode(text: str) -> dict[str, Any]:
    try:
        raw = json.loads(text)
    except ValueError:
        raw = None
    return raw if isinstance(raw, dict) else {"error": "unreadable schedule record"}


def list_schedules(store: Store, queues: tuple[str, ...] = QUEUES) -> list[dict[str, Any]]:
    """Every schedule as a plain dict (keys in the module docstring), in queue, name order."""
    read = store.cron_schedules(queues)
    rows: list[dict[str, Any]] = []
    for queue, fields in read.schedules.items():
        newest_sid = str(_decode(fields.get(SYNC_MARKER, "{}")).get("sid") or "")
        for name in sorted(fields):
            if name == SYNC_MARKER:
                continue
            row = _row(queue, name, _decode(fields[name]))
            if not row["last_job_id"].startswith(f"{queue}-"):
                row["last_job_id"] = ""  # a hand-edited record: no job to look up
            row.update(newest_sid=newest_sid,
                       loaded_by_newest=bool(newest_sid) and row["synced_by"] == newest_sid,
                       live_supervisors=read.live_supervisors[queue],
                       server_ms=read.server_ms)
            rows.append(row)
    statuses = store.job_statuses([r["last_job_id"] for r in rows if r["last_job_id"]])
    it = iter(statuses)
    for row in rows:
        if row["last_job_id"]:
            status = next(it) or "expired"
            row["last_outcome"] = "skipped" if row["last_skipped"] else status
            row["last_job_status"] = status
    return rows


def _row(queue: str, name: str, raw: dict[str, Any]) -> dict[str, Any]:
    last = int(raw.get("last") or 0)
    return {
        "queue": queue,
        "job": name,
        "pattern": raw.get("pattern", ""),
        "tz": raw.get("tz", ""),
        "next_ms": int(raw.get("next") or 0) or None,
        "last_tick_ms": last or None,
        "last_job_id": raw.get("job") or "",
        "last_skipped": bool(raw.get("skipped")),
        "last_outcome": None,  # 'skipped' or the last run's job status ('expired': gone)
        "last_job_status": None,
        "runs": int(raw.get("runs") or 0),
        "skips": int(raw.get("skips") or 0),
        "error": raw.get("error") or "",
        "manual_runs": int(raw.get("manual_runs") or 0),
        "last_manual_ms": int(raw.get("manual_at") or 0) or None,
        "last_manual_job_id": str(raw.get("manual_job") or ""),
        "synced_by": raw.get("synced_by", ""),
        "synced_at_ms": int(raw.get("synced_at") or 0) or None,
    }
