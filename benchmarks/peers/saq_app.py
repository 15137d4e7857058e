"""The SAQ worker settings (concurrency 10, SAQ's default)."""

import os

from saq import Queue

from benchmarks import marks


async def noop(ctx, *, data):
    return data


settings = {
    "queue": Queue.from_url(os.environ[marks.URL_ENV], name="bench"),
    "functions": [noop],
    "concurrency": 10,
}
