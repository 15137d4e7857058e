"""Process-mode tests: ctx.log lines and prints, interleaved, and C-level output."""

import os
import sys


def run(data, ctx):
    ctx.log("one", data={"n": 1})
    print("two")
    ctx.log.warn("three")
    print("four", file=sys.stderr)
    print("fi", end="")
    print("ve")
    try:
        raise ValueError("six")
    except ValueError as exc:
        ctx.log.error("six", err=exc)
    os.write(1, b"from fd 1\n")
    sys.stdout.buffer.write(b"from sys.stdout.buffer\n")
    print("no newline at the end", end="")
    return "logged"
