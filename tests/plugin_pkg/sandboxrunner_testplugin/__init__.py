"""Jobs this package contributes to sandboxrunner: one as a job module, one as a dict."""

import os

from sandboxrunner_testplugin import greet


def whoami(data, ctx):
    return {"pid": os.getpid(), "queue": ctx.job.queue, "data": data}


JOBS = {
    "plugin_greet": greet,
    "plugin_whoami": {"handler": whoami, "worker": "priority", "timeout": 5000},
}
