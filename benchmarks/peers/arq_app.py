"""The arq worker settings (defaults: max_jobs=10, poll_delay=0.5 s)."""

import os

from arq.connections import RedisSettings

from benchmarks import marks


async def noop(ctx, data):
    return data


class WorkerSettings:
    functions = [noop]
    redis_settings = RedisSettings.from_dsn(os.environ[marks.URL_ENV])
