def run(data, ctx):
    ctx.log("echo", data=data)
    return {"echo": data, "attempt": ctx.job.attempt, "queue": ctx.job.queue}
