"""Process-mode fault: the first attempt kills its own child process (SIGKILL); later
attempts succeed. Appends each attempt to DATA['file']."""

retries = 1


def run(data, ctx):
    import os
    import signal

    from sandboxrunner.executors import in_child

    if in_child.CURRENT is None:
        raise RuntimeError("fault_crash_once kills its process: run it in process mode only")
    with open(data["file"], "a") as fh:
        fh.write(f"{ctx.job.attempt} {os.getpid()}\n")
    if ctx.job.attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return {"attempt": ctx.job.attempt, "pid": os.getpid()}
