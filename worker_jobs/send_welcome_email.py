"""Example job: pretend to send a welcome email."""


def run(data, ctx):
    ctx.log("sending welcome email", data={"user_id": data["user_id"]})
    return {"ok": True, "user_id": data["user_id"]}
