"""Executors run claimed jobs: threads in the supervisor, or pre-forked child processes."""
