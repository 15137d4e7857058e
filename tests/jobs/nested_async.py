from sandboxrunner import arun_job


async def run(data):
    return await arun_job(data["inner"], data.get("inner_data"))
