"""list_jobs: paged, bounded listings of queued, delayed, active, completed, failed and
cancelled jobs, by queue, status and name."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from sandboxrunner import InvalidJobData, JobFailed
from sandboxrunner.executors.processes import PREFETCH_MAX
from tests.deployments import every_deployment
from tests.supervisors import client_for, running_supervisor, wait_for


def _ids(page: Any) -> list[str]:
    return [info.id for info in page.items]


MODES = {"threads": {}, "processes": {"use_separate_process": True}}


@every_deployment
@pytest.mark.parametrize("mode", MODES)
def test_each_status_lists_its_jobs(redis_url: str, mode: str) -> None:
    with running_supervisor(redis_url, concurrency=1, **MODES[mode]) as sup, \
            client_for(redis_url) as client:
        completed = client.enqueue("echo", {"n": 1})
        completed.result(wait_timeout=10_000)
        failed = client.enqueue("fail", {"card": "1"})
        with pytest.raises(JobFailed):
            failed.result(wait_timeout=10_000)
        delayed = client.enqueue("retry_distant")
        wait_for(lambda: client.get_job(delayed.id).status == "delayed", what="its retry")
        active = client.enqueue("slow", {"seconds": 30})
        wait_for(lambda: client.get_job(active.id).status == "active", what="it runs")
        # process mode claims up to PREFETCH_MAX ahead for the busy child (as many as its
        # recent jobs' run time says): those are active (in the lease); the last stays queued
        queued = [client.enqueue("echo", {"n": n}) for n in range(PREFETCH_MAX + 2)]
        cancelled = client.enqueue("echo", {"n": 9})
        client.cancel(cancelled.id)
        handles = [completed, failed, delayed, active, *queued, cancelled]
        truth, pages = wait_for(lambda: _listed_while_still(client, handles),
                                what="the jobs' states to hold still over a listing")
        assert [truth[h.id] for h in (completed, failed, delayed, active, queued[-1],
                                      cancelled)] == [
            "completed", "failed", "delayed", "active", "queued", "cancelled"]
        for status in STATUSES:
            page = pages[status]
            expected = [h.id for h in handles if truth[h.id] == status]  # FIFO: oldest first
            assert sorted(_ids(page)) == sorted(expected), status
            assert _ids(page) == expected or status == "active", status
            assert {info.status for info in page.items} == {status}
            assert page.cursor is None
        everything = client.list_jobs(queue="default", limit=100)
        assert sorted(_ids(everything)) == sorted(truth)
        assert client.list_jobs(queue="priority").items == []
        page = asyncio.run(_alist(client, status="active"))
        assert page.items[0].supervisor == sup.sid and page.items[0].name == "slow"


STATUSES = ("completed", "failed", "delayed", "active", "queued", "cancelled")


def _listed_while_still(client: Any,
                        handles: list[Any]) -> tuple[dict[str, str], dict[str, Any]] | None:
    """Each job's status and each status's listing, if no job changed state meanwhile
    (process mode may claim one more job ahead for its busy child at any moment); None
    otherwise, to try again."""
    before = {h.id: client.get_job(h.id).status for h in handles}
    pages = {status: client.list_jobs(status=status) for status in STATUSES}
    after = {h.id: client.get_job(h.id).status for h in handles}
    return (before, pages) if before == after else None


async def _alist(client: Any, **kwargs: Any) -> Any:
    return await client.alist_jobs(**kwargs)


def test_pages_follow_the_cursor_newest_first_without_repeats(redis_url: str) -> None:
    with running_supervisor(redis_url), client_for(redis_url) as client:
        done = []
        for n in range(7):
            handle = client.enqueue("echo", {"n": n})
            handle.result(wait_timeout=10_000)
            done.append(handle.id)
        seen: list[list[str]] = []
        ended: list[float] = []
        cursor = None
        while True:
            page = client.list_jobs(status="completed", limit=3, cursor=cursor)
            seen.append(_ids(page))
            ended += [info.ended_at or 0 for info in page.items]
            cursor = page.cursor
            if cursor is None:
                break
    assert [len(ids) for ids in seen] == [3, 3, 1]
    listed = [i for ids in seen for i in ids]
    assert sorted(listed) == sorted(done) and ended == sorted(ended, reverse=True)


def test_a_name_filter_reads_a_bounded_slice_per_page(redis_url: str) -> None:
    with running_supervisor(redis_url), client_for(redis_url) as client:
        handles = [client.enqueue("echo", {"n": n}) for n in range(250)]
        for handle in handles:
            handle.result(wait_timeout=10_000)
        wanted = client.enqueue("async_echo", {"n": 1})
        wanted.result(wait_timeout=10_000)
        first = client.list_jobs(status="completed", name="slow", limit=10)
        assert first.items == [] and first.cursor is not None  # gave up early, can go on
        pages, cursor, found = 0, None, []
        while True:
            page = client.list_jobs(status="completed", name="async_echo", limit=10,
                                    cursor=cursor)
            found += _ids(page)
            pages += 1
            cursor = page.cursor
            if cursor is None:
                break
    assert found == [wanted.id] and pages > 1


@pytest.mark.parametrize("kwargs, says", [
    ({"status": "done"}, "status 'done'"), ({"queue": "urgent"}, "queue 'urgent'"),
    ({"limit": 0}, "limit 0"), ({"limit": 1001}, "limit 1001"),
    ({"cursor": "garbage"}, "cursor 'garbage'"), ({"name": ""}, "name ''")])
def test_bad_arguments_are_clear_errors(redis_url: str, kwargs: dict[str, Any],
                                        says: str) -> None:
    with client_for(redis_url) as client, pytest.raises(InvalidJobData, match=says):
        client.list_jobs(**kwargs)


def test_the_module_level_functions_use_the_default_client(redis_url: str) -> None:
    import sandboxrunner

    with client_for(redis_url):
        handle = sandboxrunner.enqueue("echo", {"n": 1})
        assert sandboxrunner.get_job(handle.id).status == "queued"
        assert [i.id for i in sandboxrunner.list_jobs(status="queued").items] == [handle.id]
        assert sandboxrunner.cancel(handle.id).outcome == "cancelled"
        assert sandboxrunner.retry(handle.id).id == handle.id

        async def twins() -> None:
            assert (await sandboxrunner.aget_job(handle.id)).status == "queued"
            assert (await sandboxrunner.alist_jobs(status="queued")).items
            assert (await sandboxrunner.acancel(handle.id)).outcome == "cancelled"
            assert (await sandboxrunner.aretry(handle.id)).id == handle.id

        asyncio.run(twins())


def test_the_settled_index_goes_with_the_records_it_names(redis_url: str,
                                                          redis_client: Any) -> None:
    from sandboxrunner.keys import Keys

    key = Keys().done("default", "completed")
    with running_supervisor(redis_url, result_ttl=300), \
            client_for(redis_url, result_ttl=300) as client:
        first = client.enqueue("echo", {"n": 1})
        first.result(wait_timeout=10_000)
        assert redis_client.zscore(key, first.id) is not None
        time.sleep(0.4)  # its record expired: a later settlement trims it from the index
        second = client.enqueue("echo", {"n": 2})
        second.result(wait_timeout=10_000)
        assert [i.decode() for i in redis_client.zrange(key, 0, -1)] == [second.id]
        assert client.list_jobs(status="completed").items[0].id == second.id
        time.sleep(0.4)  # no settlement since: the whole index expired with the records
        assert not redis_client.exists(key)
        assert client.list_jobs(status="completed").items == []
