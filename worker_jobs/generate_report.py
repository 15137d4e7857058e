"""Example async job with a schedule: every Monday at 09:00 UTC."""

import asyncio

cron = {"pattern": "0 9 * * 1", "data": {"report_type": "weekly"}}


async def run(data, ctx):
    await asyncio.sleep(0.01)
    ctx.log("report generated", data=data)
    return {"ok": True, "report_type": data.get("report_type", "adhoc")}
