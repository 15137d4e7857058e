"""The Celery app the benchmark's Celery workers and client share: Redis broker and
Redis result backend, JSON serialisation (Celery's defaults)."""

import os

from celery import Celery

from benchmarks import marks

URL = os.environ[marks.URL_ENV]

app = Celery("bench", broker=URL, backend=URL)
app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)


@app.task(name="noop")
def noop(data):
    return data


@app.task(name="stamp")
def stamp():
    return marks.mark_stamp()


# time_limit is Celery's hard limit: the pool kills the child and starts another
@app.task(name="sleep_long", time_limit=1)
def sleep_long():
    marks.sleep_job()


@app.task(name="c_call", time_limit=1)
def c_call():
    return marks.c_call_job()
