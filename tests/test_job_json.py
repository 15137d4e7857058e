"""Job data and results as JSON text (job.py): the same text json.dumps writes, compact;
what JSON cannot carry refused with a clear error, whatever thread encodes what."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from sandboxrunner.errors import InvalidJobData
from sandboxrunner.job import Settlement, Status, encode_data

VALUES: list[Any] = [
    None, True, 0, -7, 2**70, 1.5, 1e-300, "", "é ☃ \u2028 \" \\ \n", [], {},
    {"b": [1, {"c": None}], "a": "x", "1": 2.25}, [[[]]], ("a", 1),
]


@pytest.mark.parametrize("value", VALUES)
def test_data_is_the_text_json_dumps_writes_compact(value: Any) -> None:
    assert encode_data(value, 10**6) == json.dumps(value, separators=(",", ":"))


@pytest.mark.parametrize(("value", "says"), [
    ({"when": object()}, "not JSON-serialisable"),
    ({"x": float("nan")}, "not JSON-serialisable"),
    ([float("inf")], "not JSON-serialisable"),
    ({1.5j: 1}, "not JSON-serialisable"),
])
def test_what_json_cannot_carry_is_refused(value: Any, says: str) -> None:
    with pytest.raises(InvalidJobData, match=says):
        encode_data(value, 10**6)


def test_data_that_contains_itself_is_refused_and_the_next_call_still_works() -> None:
    loop: list[Any] = [1]
    loop.append({"again": loop})
    with pytest.raises(InvalidJobData, match="circular"):
        encode_data(loop, 10**6)
    assert encode_data({"fine": [1]}, 10**6) == '{"fine":[1]}'


def test_a_result_that_contains_itself_fails_its_job() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    settled = Settlement.returned("default-" + "0" * 32, loop)
    assert settled.status is Status.FAILED and "circular" in settled.body


def test_threads_encoding_the_same_data_at_once_all_succeed() -> None:
    shared = {"items": [{"n": i, "tags": ["a", "b"]} for i in range(200)]}
    expected = json.dumps(shared, separators=(",", ":"))
    errors: list[BaseException] = []

    def encode() -> None:
        try:
            for _ in range(200):
                assert encode_data(shared, 10**6) == expected
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=encode) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
