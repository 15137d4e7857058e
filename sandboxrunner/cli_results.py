"""`sandboxrunner logs`: one job's log lines, read from Redis."""

from __future__ import annotations

import json
import time

import typer

from .cli_support import load_cli_config


def logs(job_id: str = typer.Argument(...),
         follow: bool = typer.Option(False, "--follow", "-f")) -> None:
    """Print a job's log lines; --follow keeps printing until the job settles."""
    from .cli import _redis_url
    from .joblog import read_job_log
    from .store import Store

    config = load_cli_config()
    store = Store(config, _redis_url(config))
    after = "-"
    while True:
        for entry_id, line in read_job_log(store.redis, store.keys, job_id, after):
            after = entry_id
            stamp = time.strftime("%H:%M:%S", time.localtime(line.get("ts", 0)))
            extra = f" {json.dumps(line['data'])}" if "data" in line else ""
            typer.echo(f"{stamp} {line.get('level', 'info'):5} {line.get('msg', '')}{extra}")
            if "err" in line:
                typer.echo(line["err"].get("traceback", ""))
        if not follow:
            return
        status = store.job_fields(job_id, "status")[0]
        if status in ("completed", "failed", ""):
            return
        time.sleep(0.5)
