"""Example job on the priority queue: never waits behind a backlog of default jobs."""

worker = "priority"
timeout = 5000  # ms


def run(data, ctx):
    ctx.log("sending one-time password", data={"phone": data["phone"]})
    return {"sent": True, "phone": data["phone"]}
