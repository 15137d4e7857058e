"""The Huey instance the benchmark's consumers and client share: RedisHuey with
notify_result=True, so a blocking get() waits on BLPOP instead of polling."""

import os

from huey import RedisHuey

from benchmarks import marks

huey = RedisHuey("bench", url=os.environ[marks.URL_ENV], notify_result=True)


@huey.task()
def noop(data):
    return data


@huey.task()
def stamp():
    return marks.mark_stamp()


# timeout: SIGALRM in a process worker raises TaskTimeout inside the task
@huey.task(timeout=1)
def sleep_long():
    marks.sleep_job()


@huey.task(timeout=1)
def c_call():
    return marks.c_call_job()
