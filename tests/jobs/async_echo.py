import asyncio


async def run(data, ctx):
    await asyncio.sleep(0.001)
    return {"async_echo": data}
