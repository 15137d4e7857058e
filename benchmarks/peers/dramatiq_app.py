"""The Dramatiq broker the benchmark's workers and client share: RedisBroker plus the
Results middleware with the Redis result backend."""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from benchmarks import marks

URL = os.environ[marks.URL_ENV]
broker = RedisBroker(url=URL)
broker.add_middleware(Results(backend=RedisBackend(url=URL)))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True)
def noop(data):
    return data


@dramatiq.actor(store_results=True, max_retries=0)
def stamp():
    return marks.mark_stamp()


# time_limit (ms): the TimeLimit middleware raises TimeLimitExceeded in the worker thread
@dramatiq.actor(store_results=True, max_retries=0, time_limit=1000)
def sleep_long():
    marks.sleep_job()


@dramatiq.actor(store_results=True, max_retries=0, time_limit=1000)
def c_call():
    return marks.c_call_job()
