"""Holds the GIL in one C call for data["seconds"], as a catastrophic regex would: in
thread mode its whole supervisor (heartbeats included) is silent meanwhile."""

import ctypes

_usleep_holding_the_gil = ctypes.PyDLL(None).usleep  # PyDLL: the call keeps the GIL


def run(data, ctx):
    _usleep_holding_the_gil(int(data["seconds"] * 1_000_000))
    return {"held_gil_s": data["seconds"]}
