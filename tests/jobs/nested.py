from sandboxrunner import run_job


def run(data):
    return run_job(data["inner"], data.get("inner_data"))
