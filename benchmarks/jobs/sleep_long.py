"""Timeout probe: sleeps 60 s; the benchmark runs it with a 1 s limit."""

from benchmarks.marks import sleep_job

timeout = 1000


def run(data):
    sleep_job()
