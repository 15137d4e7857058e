def run(data, ctx):
    """Call ctx.progress with a bad value; return what it raised."""
    value = data["value"]
    if value == "nan":
        value = float("nan")
    try:
        ctx.progress(value, data.get("message"))
    except Exception as exc:  # noqa: BLE001 - the test reads what was raised
        return {"raised": type(exc).__name__, "message": str(exc),
                "is_value_error": isinstance(exc, ValueError)}
    return {"raised": None}
