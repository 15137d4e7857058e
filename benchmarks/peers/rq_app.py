"""The functions RQ's workers run (RQ imports them by dotted path)."""

from benchmarks import marks


def noop(data):
    return data


def stamp():
    return marks.mark_stamp()


def sleep_long():
    marks.sleep_job()


def c_call():
    return marks.c_call_job()
