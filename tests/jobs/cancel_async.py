"""An async handler that sleeps data['seconds']; writes 'cancelled' to data['file'] when its
task is cancelled."""

import asyncio


async def run(data, ctx):
    try:
        await asyncio.sleep(data["seconds"])
    except asyncio.CancelledError:
        with open(data["file"], "w") as fh:
            fh.write("cancelled")
        raise
    return {"slept": data["seconds"]}
