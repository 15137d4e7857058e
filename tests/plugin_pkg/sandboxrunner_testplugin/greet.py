"""A plugin job written like a job file: `run` plus optional attributes."""

import os

timeout = 5000


def run(data, ctx):
    ctx.log("greeting", data=data)
    return {"greeting": f"hello {data['name']}", "pid": os.getpid()}
