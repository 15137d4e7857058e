"""Waits up to data['seconds'] for ctx.cancelled (a thread cannot be killed: it must look),
then writes what it saw to data['file'] and returns."""


def run(data, ctx):
    seen = ctx.cancelled.wait(data["seconds"])
    with open(data["file"], "w") as fh:
        fh.write("cancelled" if seen else "ran out")
    return {"cancelled_seen": seen}
