"""Bad input: each is a clear error, and nothing is enqueued, lost or left in a lease.

Covered elsewhere: data that is not JSON and a zero timeout
(tests/test_core.py::test_non_json_data_is_refused_before_anything_is_enqueued), an unknown
job (test_unknown_job_lists_the_available_names), a handler returning a non-JSON value
(test_a_non_json_return_value_fails_the_job_clearly, and through a child in
tests/test_processes.py::test_results_and_errors_round_trip_through_a_child), a singleton
key function that raises (tests/test_singleton.py::
test_a_bad_singleton_key_fails_the_call_before_anything_is_enqueued), a queue entry with no
job record (tests/test_store.py::test_a_malformed_queue_entry_is_dropped_and_the_supervisor_
carries_on) and a record naming an unknown job (test_a_job_record_naming_an_unknown_job_
fails_cleanly). Records and entries written by hand: here, and in test_security.py.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import redis

from sandboxrunner import InvalidJobData, JobFailed
from tests.faults.common import K, job_record, leftovers
from tests.supervisors import client_for, running_supervisor

MODES = pytest.mark.parametrize(
    "mode", [{"concurrency": 2}, {"use_separate_process": True, "concurrency": 2}],
    ids=["threads", "processes"])


def test_data_over_max_data_size_is_refused_naming_the_limit(
        redis_url: str, redis_client: redis.Redis) -> None:
    with client_for(redis_url) as client:
        with pytest.raises(InvalidJobData, match=r"over the limit of 524288 bytes "
                                                 r"\(config max_data_size\)"):
            client.run_job("echo", "x" * 512 * 1024)
        with pytest.raises(InvalidJobData, match="max_data_size"):
            client.enqueue("echo", {"blob": "x" * 600_000})
    with client_for(redis_url, max_data_size=0.01) as client:
        with pytest.raises(InvalidJobData, match="over the limit of 10485 bytes"):
            client.enqueue("echo", "x" * 10_500)
    assert redis_client.keys("*") == []


@pytest.mark.parametrize("timeout", [-1, 0, 1.5, "100", True])
def test_a_timeout_that_is_not_a_positive_whole_number_of_ms_is_refused(
        redis_url: str, redis_client: redis.Redis, timeout: Any) -> None:
    with client_for(redis_url) as client:
        with pytest.raises(InvalidJobData, match="timeout must be a positive whole number"):
            client.run_job("echo", 1, timeout=timeout)
        with pytest.raises(InvalidJobData, match="timeout must be a positive whole number"):
            client.enqueue("echo", 1, timeout=timeout)
    assert redis_client.keys("*") == []


def _place(r: redis.Redis, job_id: str, **fields: Any) -> None:
    """A job record and its queue entry written by hand, as a buggy producer might."""
    record = {"name": "echo", "data": "1", "timeout": 5000, "status": "queued", "enq": 1,
              "attempt": 0, "stalled": 0, "reply": "", "skey": "", "retries": 0,
              "backoff": ""}
    record.update(fields)
    r.hset(K.job(job_id), mapping=record)
    r.lpush(K.wait("default"), job_id)


@MODES
@pytest.mark.parametrize(("fields", "expected"), [
    ({"data": "{not json"}, "job data is not valid JSON"),
    ({"data": b"\x80\x81 not even utf-8"}, "job data is not valid JSON"),
    ({"timeout": "soon"}, "timeout is not a positive whole number of ms: 'soon'"),
    ({"timeout": "-5"}, "timeout is not a positive whole number of ms: '-5'"),
])
def test_a_record_with_garbage_fields_fails_clearly_and_the_supervisor_carries_on(
        redis_url: str, redis_client: redis.Redis, mode: dict[str, Any],
        fields: dict[str, str], expected: str) -> None:
    job_id = "default-" + "b" * 32
    _place(redis_client, job_id, **fields)
    with running_supervisor(redis_url, workers="default", **mode), \
            client_for(redis_url) as client:
        with pytest.raises(JobFailed) as info:
            client.get_result(job_id, wait_timeout=5000)
        assert client.run_job("echo", 2)["echo"] == 2
    assert expected in info.value.error_message
    assert job_record(redis_client, job_id)["status"] == "failed"
    assert set(leftovers(redis_client).values()) == {0}


@MODES
def test_garbage_counters_in_a_record_neither_abort_a_script_nor_stop_settling(
        redis_url: str, redis_client: redis.Redis, mode: dict[str, Any]) -> None:
    job_id = "default-" + "c" * 32
    _place(redis_client, job_id, name="fail", data='{"card": "9"}', attempt="x",
           stalled="y", retries="1", backoff="{oops", errors="[broken")
    with running_supervisor(redis_url, workers="default", **mode), \
            client_for(redis_url) as client:
        with pytest.raises(JobFailed, match="card 9 declined"):
            client.get_result(job_id, wait_timeout=5000)
        assert client.run_job("echo", 3)["echo"] == 3
    record = job_record(redis_client, job_id)
    assert (record["attempt"], record["fails"]) == ("2", "2")  # retried once, as asked
    assert set(leftovers(redis_client).values()) == {0}


@MODES
def test_a_syntax_error_in_a_lazily_imported_module_fails_the_job_naming_the_file(
        redis_url: str, tmp_path: Path, mode: dict[str, Any]) -> None:
    jobs = tmp_path / "worker_jobs"
    jobs.mkdir()
    (jobs / "_broken.py").write_text("def half(x):\n    return x /\n")
    (jobs / "lazy.py").write_text(textwrap.dedent("""
        def run(data):
            from sandboxrunner_jobs import _broken  # imported only when the job runs
            return _broken.half(data)
    """))
    (jobs / "fine.py").write_text("def run(data):\n    return data\n")
    with running_supervisor(redis_url, jobs_dir=str(jobs), workers="default", **mode), \
            client_for(redis_url, jobs_dir=str(jobs)) as client:
        with pytest.raises(JobFailed) as info:
            client.run_job("lazy", 4)
        assert client.run_job("fine", 5) == 5
        with pytest.raises(JobFailed):  # and again: nothing was cached half-imported
            client.run_job("lazy", 4)
    assert info.value.error_type == "SyntaxError"
    assert "_broken.py" in info.value.error_message
    assert str(jobs / "_broken.py") in info.value.remote_traceback
