import time


def run(data, ctx):
    ctx.log("sleeping", data={"seconds": data["seconds"]})
    time.sleep(data["seconds"])
    return {"slept": data["seconds"], "tag": data.get("tag")}
