"""Timeout probe: one long C call (sum over a huge range); run with a 1 s limit."""

from benchmarks.marks import c_call_job

timeout = 1000


def run(data):
    return c_call_job()
