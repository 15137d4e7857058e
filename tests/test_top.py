"""`sandboxrunner top`: the snapshot (`--json`), the rendered screen (`--once`) and the live
dashboard in a real terminal (tmux), against real supervisors in thread and process mode.

The loaded scenario runs on a server of its own (module scope), so the tests that use the
session server's `redis_url` (and flush it) cannot disturb it.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from rich.console import Console

from sandboxrunner import JobFailed, JobTimeout
from sandboxrunner.keys import Keys
from sandboxrunner.snapshot import Snapshot, SnapshotReader
from sandboxrunner.testserver import TestServer
from sandboxrunner.top_render import render, time_bar
from tests.deployments import every_deployment
from tests.supervisors import (
    ROOT,
    SupervisorProcess,
    client_for,
    make_config,
    running_supervisor,
    wait_for,
)

CLI = [sys.executable, "-m", "sandboxrunner", "top"]
LONG_S = 90  # the running jobs outlive the module
LONG_TIMEOUT_MS = 120_000

JOBS = {
    "crunch": """
        import time

        def run(data, ctx):
            ctx.log("crunching batch", data={"batch": data["batch"]})
            time.sleep(data["seconds"])
            return data["batch"]
    """,
    "invoice": """
        class InvoiceRejected(Exception):
            pass

        def run(data, ctx):
            ctx.log.error("bank refused the invoice")
            raise InvoiceRejected(f"invoice {data['invoice']} rejected by the bank")
    """,
    "render_pdf": """
        import os
        import time

        worker = "priority"

        def run(data, ctx):
            print(f"rendering {data['pages']} pages")
            os.write(1, f"pdf engine: {data['pages']} pages\\n".encode())  # as C code would
            time.sleep(data["seconds"])
            return data["pages"]
    """,
    "sync_crm": """
        retries = 2
        backoff = 60_000

        def run(data, ctx):
            raise ConnectionError("crm is down")
    """,
    "nightly_report": """
        cron = "0 3 * * *"

        def run(data, ctx):
            return "ok"
    """,
}




def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def top_env(**extra: str) -> dict[str, str]:
    # COLUMNS and LINES (a pytest-xdist worker has 80 and 24) would override a terminal's
    # own size
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "COLUMNS", "LINES") and not k.startswith("SANDBOXRUNNER_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def run_top(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + args, cwd=cwd, env=top_env(**env), capture_output=True,
                          text=True, timeout=60)


# -- the loaded scenario -----------------------------------------------------------------


@dataclass
class Scenario:
    url: str
    jobs_dir: Path
    threads: SupervisorProcess  # serves default, 2 threads
    processes: SupervisorProcess  # serves priority, 2 children
    long_crunch: list[str]  # running on threads
    waiting_crunch: str
    long_render: str  # running in a child
    failed: list[str]

    def json(self, cwd: Path) -> dict[str, Any]:
        done = run_top(["--json"], cwd, REDIS_URL=self.url)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))


def _busy(snap: Snapshot, ids: set[str]) -> bool:
    return ids <= {r.id for r in snap.running}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    root = tmp_path_factory.mktemp("top")
    jobs_dir = root / "worker_jobs"
    jobs_dir.mkdir()
    for name, body in JOBS.items():
        (jobs_dir / f"{name}.py").write_text(textwrap.dedent(body))
    with TestServer(root / "redis") as server:
        # a lease long enough that a heartbeat slowed by a loaded machine is not "late"
        env = {"SANDBOXRUNNER_JOBS_DIR": str(jobs_dir), "SANDBOXRUNNER_LEASE_MS": "5000"}
        threads = SupervisorProcess(server.url, ["--workers", "default", "-c", "2"], **env)
        processes = SupervisorProcess(server.url, ["--workers", "priority", "-c", "2",
                                                   "--separate-process"], **env)
        try:
            threads.wait_ready(("default",))
            processes.wait_ready(("priority",))
            yield _load(server.url, jobs_dir, threads, processes)
        finally:
            threads.stop()
            processes.stop()


def _load(url: str, jobs_dir: Path, threads: SupervisorProcess,
          processes: SupervisorProcess) -> Scenario:
    with client_for(url, jobs_dir=str(jobs_dir)) as client:
        failed = []
        for quick in range(3):
            assert client.run_job("crunch", {"seconds": 0, "batch": f"quick-{quick}"})
        for invoice in (1040, 1041):
            with pytest.raises(JobFailed) as info:
                client.run_job("invoice", {"invoice": invoice})
            failed.append(info.value.job_id)
        for job, data in (("crunch", {"seconds": 3, "batch": "late"}),
                          ("render_pdf", {"pages": 1, "seconds": 3})):
            with pytest.raises(JobTimeout) as timeout:
                client.run_job(job, data, timeout=300)
            failed.append(timeout.value.job_id)
        client.enqueue("sync_crm", {})  # fails once, then waits a minute for its retry
        crunch = [client.enqueue("crunch", {"seconds": LONG_S, "batch": f"big-{i}"},
                                 timeout=LONG_TIMEOUT_MS).id for i in range(3)]
        render_id = client.enqueue("render_pdf", {"pages": 300, "seconds": LONG_S},
                                   timeout=LONG_TIMEOUT_MS).id
    reader = SnapshotReader(make_config(url, jobs_dir=str(jobs_dir)), url)
    try:
        snap = wait_for(lambda: (s := reader.read()) and _busy(s, {*crunch[:2], render_id})
                        and s.queues[0].delayed == 1 and s,
                        what="the long jobs running and a retry delayed")
    finally:
        reader.close()
    running = {r.id for r in snap.running}
    return Scenario(url, jobs_dir, threads, processes,
                    long_crunch=[i for i in crunch if i in running],
                    waiting_crunch=next(i for i in crunch if i not in running),
                    long_render=render_id, failed=failed)


def test_json_snapshot_counts_each_queue(scenario: Scenario, tmp_path: Path) -> None:
    queues = scenario.json(tmp_path)["queues"]
    assert set(queues) == {"default", "priority"}
    default, priority = queues["default"], queues["priority"]
    assert (default["waiting"], default["active"], default["enqueued"]) == (1, 2, 10)
    assert (default["completed"], default["failed"]) == (3, 3)
    assert (default["delayed"], default["retried"]) == (1, 1)
    assert (priority["waiting"], priority["active"], priority["failed"]) == (0, 1, 1)
    assert len(default["rate_per_s"]) == 60
    assert sum(default["rate_per_s"]) == 6  # every settlement happened this minute
    assert default["jobs_per_s"] == pytest.approx(6 / 60, abs=0.001)
    assert 0 < default["oldest_waiting_ms"] < 60_000
    assert priority["oldest_waiting_ms"] is None
    assert (default["supervisors"], priority["supervisors"]) == (1, 1)


def test_json_snapshot_lists_running_jobs_with_their_timeout_and_child(
        scenario: Scenario, tmp_path: Path) -> None:
    snap = scenario.json(tmp_path)
    running = {r["id"]: r for r in snap["running"]}
    assert set(running) == {*scenario.long_crunch, scenario.long_render}
    for job in running.values():
        assert job["timeout_ms"] == LONG_TIMEOUT_MS
        assert 0 < job["elapsed_ms"] < LONG_TIMEOUT_MS
    render_job = running[scenario.long_render]
    assert (render_job["name"], render_job["queue"]) == ("render_pdf", "priority")
    assert render_job["supervisor_pid"] == scenario.processes.proc.pid
    assert {running[i]["worker"] for i in scenario.long_crunch} == {"thread"}
    sup = next(s for s in snap["supervisors"] if s["pid"] == scenario.processes.proc.pid)
    busy = [c for c in sup["children"] if c["state"] == "busy"]
    assert [(c["job_id"], str(c["pid"])) for c in busy] == [(scenario.long_render,
                                                            render_job["worker"])]
    assert busy[0]["rss_bytes"] > 0 and busy[0]["jobs_served"] == 0  # its first job runs


def test_json_snapshot_lists_supervisors_failures_cron_and_log_tail(
        scenario: Scenario, tmp_path: Path) -> None:
    snap = scenario.json(tmp_path)
    sups = {s["pid"]: s for s in snap["supervisors"]}
    assert set(sups) == {scenario.threads.proc.pid, scenario.processes.proc.pid}
    threads, processes = sups[scenario.threads.proc.pid], sups[scenario.processes.proc.pid]
    assert (threads["mode"], threads["queues"], threads["state"]) == ("threads", ["default"],
                                                                       "live")
    assert (processes["mode"], processes["capacity"]) == ("processes", 2)
    assert threads["rss_bytes"] > 0 and threads["uptime_ms"] > 0
    assert snap["totals"]["supervisors"] == 2
    failures = {f["id"]: f for f in snap["failures"]}
    assert set(failures) == set(scenario.failed)
    invoice = failures[scenario.failed[0]]
    assert (invoice["name"], invoice["error_type"]) == ("invoice", "InvoiceRejected")
    assert invoice["message"] == "invoice 1040 rejected by the bank"
    assert {failures[i]["error_type"] for i in scenario.failed[2:]} == {"JobTimeout"}
    assert [(c["job"], c["pattern"]) for c in snap["cron"]] == [("nightly_report", "0 3 * * *")]
    assert snap["cron"][0]["next_ms"] > snap["server_time_ms"]
    lines = [(line["job_id"], line["msg"]) for line in snap["logs"]]
    assert (scenario.long_render, "rendering 300 pages") in lines
    assert any(job == scenario.long_crunch[0] and "crunching batch" in msg
               for job, msg in lines)
    assert 0 < len(lines) <= 20
    assert snap["redis"]["url"] == scenario.url and "valkey" in snap["redis"]["version"]


def _screen(scenario: Scenario, cwd: Path, width: int) -> list[str]:
    return screen_of(scenario.url, cwd, width)


def screen_of(url: str, cwd: Path, width: int) -> list[str]:
    """`top --once` at WIDTH columns, as lines."""
    done = run_top(["--once", "--width", str(width)], cwd, REDIS_URL=url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= width
    return lines


def short(job_id: str) -> str:
    return job_id.partition("-")[2][:8]


def _queue_row(lines: list[str], queue: str) -> list[str]:
    """The queues table's row of QUEUE, as words."""
    found = [line.split() for line in lines
             if line.startswith(queue + " ") and line.split()[1].isdigit()]
    assert len(found) == 1, (queue, "\n".join(lines))
    return found[0]


def _running_row(lines: list[str], job_id: str) -> str:
    found = [line for line in lines if line.startswith(short(job_id) + " ")]
    assert len(found) == 1, (job_id, "\n".join(lines))
    return found[0]


def _row(lines: list[str], *words: str) -> str:
    """The one line holding every word (a table row)."""
    found = [line for line in lines if all(w in line.split() for w in words)]
    assert len(found) == 1, (words, "\n".join(lines))
    return found[0]


def test_once_at_80_columns_keeps_queues_and_running_jobs_legible(
        scenario: Scenario, tmp_path: Path) -> None:
    lines = _screen(scenario, tmp_path, 80)
    # waiting, prefetched, running, completed, failed (jobs/s only as the sparkline)
    assert _queue_row(lines, "default")[:6] == ["default", "1", "0", "2", "3", "3"]
    assert _queue_row(lines, "priority")[:6] == ["priority", "0", "0", "1", "0", "1"]
    assert "0.12 jobs/s" in lines[2]  # both queues: 7 settlements this minute
    for job_id in scenario.long_crunch:
        row = _running_row(lines, job_id)
        # a job started less than a second ago shows its run time in ms ("878ms")
        assert re.search(r" crunch +default +█*░+ +[\d.]+m?s / 2m00s$", row)
    assert " render_pdf  priority " in _running_row(lines, scenario.long_render)
    failure = _row(lines, short(scenario.failed[1]), "InvoiceRejected:")
    assert re.search(r"s  \w{8}  invoice +InvoiceRejected: invoice 1041 rejected by the bank$",
                     failure)


def test_once_at_160_columns_shows_where_jobs_run_children_and_logs(
        scenario: Scenario, tmp_path: Path) -> None:
    lines = _screen(scenario, tmp_path, 160)
    # a retry delayed, none throttled, 1 supervisor
    assert _queue_row(lines, "default")[-3:] == ["1", "0", "1"]
    host, threads_pid = socket.gethostname(), scenario.threads.proc.pid
    processes_pid = scenario.processes.proc.pid
    assert f"{host}:{threads_pid} thread" in _running_row(lines, scenario.long_crunch[0])
    assert f"{host}:{processes_pid} child" in _running_row(lines, scenario.long_render)
    assert "threads" in _row(lines, str(threads_pid), "live")
    assert "processes" in _row(lines, str(processes_pid), "live")
    assert "render_pdf" in _row(lines, "└", "busy")
    assert "0 3 * * * UTC" in _row(lines, "nightly_report")
    assert any(re.search(r" out +\w{8} rendering 300 pages$", line) for line in lines)
    assert any(re.search(r" out +\w{8} pdf engine: 300 pages$", line) for line in lines)
    assert "redis://127.0.0.1:" in lines[0] and "2 supervisors" in lines[0]


# -- errors and policy -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["--json", "--once"])
def test_unreachable_redis_exits_4_naming_the_address_without_password(
        mode: str, tmp_path: Path) -> None:
    port = free_port()
    done = run_top([mode], tmp_path, REDIS_URL=f"redis://:hunter2@127.0.0.1:{port}/0")
    assert done.returncode == 4
    assert f"redis://:***@127.0.0.1:{port}/0" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout and "Traceback" not in done.stderr


def test_top_never_starts_an_embedded_server(tmp_path: Path) -> None:
    done = run_top(["--json"], tmp_path)
    assert done.returncode == 4
    assert "no embedded server runs" in done.stderr
    assert not (tmp_path / ".sandboxrunner" / "redis.json").exists()


def test_a_silent_supervisor_is_late_after_half_a_lease_gone_after_one_then_dropped(
        redis_url: str, redis_client: redis.Redis) -> None:
    keys = Keys("sr")
    now_ms = int(time.time() * 1000)

    def publish(sid: str, age_ms: int, running: list[dict[str, Any]] = ()) -> None:
        snap = {"sid": sid, "host": sid.split("-")[0], "pid": int(sid.split("-")[1]),
                "mode": "threads", "queues": ["default"], "started_at": now_ms / 1000 - 60,
                "heartbeat_ms": now_ms - age_ms, "lease_ms": 10_000, "ttl_ms": 30_000,
                "executors": {"default": {"capacity": 4, "running": len(running)}},
                "running": list(running)}
        redis_client.set(keys.supervisor(sid), json.dumps(snap), px=30_000 - age_ms)
        redis_client.zadd(keys.supervisors(), {sid: now_ms - age_ms})

    job = {"id": "default-" + "c" * 32, "name": "crunch", "queue": "default",
           "started_at": now_ms / 1000 - 20, "timeout_ms": 60_000, "worker": "thread"}
    publish("web-1-aa", 6000)  # past half its lease
    publish("crashed-4-dd", 12_000, [job])  # past its lease: gone, its job orphaned
    redis_client.zadd(keys.sups("default"), {"crashed-4-dd": now_ms - 12_000,
                                             "ancient-5-ee": now_ms - 3_600_000})
    redis_client.lpush(keys.active("default", "crashed-4-dd"), job["id"])
    redis_client.lpush(keys.active("default", "ancient-5-ee"), "default-" + "e" * 32)
    redis_client.zadd(keys.supervisors(), {"db-host-2-bb": now_ms - 5000,  # expired
                                           "old-3-cc": now_ms - 10 * 60_000})
    reader = SnapshotReader(make_config(redis_url), redis_url)
    try:
        snap = reader.read()
    finally:
        reader.close()
    shown = {s.sid: s for s in snap.supervisors}
    # old-3-cc is dropped; ancient-5-ee, long gone, stays while it holds a job
    assert set(shown) == {"web-1-aa", "crashed-4-dd", "db-host-2-bb", "ancient-5-ee"}
    assert shown["web-1-aa"].state == "late" and 5500 <= shown["web-1-aa"].heartbeat_age_ms
    crashed = shown["crashed-4-dd"]
    assert (crashed.state, crashed.mode, crashed.orphaned, crashed.busy) == ("gone", "threads",
                                                                             1, 0)
    assert 47_000 <= crashed.uptime_ms <= 49_000  # up to its last heartbeat, 12 s ago
    gone = shown["db-host-2-bb"]
    assert (gone.state, gone.host, gone.pid, gone.orphaned) == ("gone", "db-host", 2, 0)
    ancient = shown["ancient-5-ee"]
    assert (ancient.state, ancient.orphaned) == ("gone", 1)
    assert snap.running == ()  # a gone supervisor runs nothing
    assert (snap.queues[0].active, snap.queues[0].running, snap.queues[0].orphaned) == (2, 0, 2)
    assert snap.live_supervisors() == 1
    assert redis_client.zcard(keys.supervisors()) == 4  # read-only: nothing removed
    console = Console(width=100, file=io.StringIO())
    console.print(render(snap, 100))
    screen = console.file.getvalue()  # type: ignore[attr-defined]
    assert re.search(r"web +1 +late", screen)
    assert re.search(r"db-host +2 +gone .* last seen 5\.\ds ago *\n", screen)
    assert re.search(r"crashed +4 +gone .* last seen 12\.\ds ago · 1 orphaned", screen)


@every_deployment
def test_a_job_settled_since_the_last_heartbeat_is_not_shown_running(
        redis_url: str, redis_client: redis.Redis) -> None:
    keys = Keys("app")  # and the configured key prefix is respected
    now_ms = int(time.time() * 1000)
    started = now_ms / 1000 - 2
    running = [{"id": f"default-{c * 32}", "name": "crunch", "queue": "default",
                "started_at": started, "timeout_ms": 5000, "worker": "thread"} for c in "ab"]
    snap = {"host": "web", "pid": 1, "mode": "threads", "queues": ["default"],
            "started_at": started, "heartbeat_ms": now_ms, "lease_ms": 10_000,
            "ttl_ms": 30_000, "executors": {}, "running": running}
    redis_client.set(keys.supervisor("web-1-aa"), json.dumps(snap), px=30_000)
    redis_client.zadd(keys.supervisors(), {"web-1-aa": now_ms})
    redis_client.zadd(keys.sups("default"), {"web-1-aa": now_ms})
    redis_client.lpush(keys.active("default", "web-1-aa"), running[0]["id"])  # b settled
    reader = SnapshotReader(make_config(redis_url, key_prefix="app"), redis_url)
    try:
        got = reader.read()
    finally:
        reader.close()
    assert [(r.id, r.worker, r.timeout_ms) for r in got.running] == [
        (running[0]["id"], "thread", 5000)]
    assert 2000 <= got.running[0].elapsed_ms < 3000
    assert got.queues[0].active == 1
    # `top --json` shows the same, and every master with the queues it holds
    done = run_top(["--json"], Path(os.devnull).parent, REDIS_URL=redis_url,
                   SANDBOXRUNNER_KEY_PREFIX="app")
    assert done.returncode == 0, done.stderr
    snap = json.loads(done.stdout)
    assert [r["id"] for r in snap["running"]] == [running[0]["id"]]
    nodes = snap["redis"]["nodes"]
    assert all(n["role"] == "master" and n["version"].startswith(("redis", "valkey"))
               for n in nodes)
    where = {q: n["address"] for n in nodes for q in n["queues"]}
    assert set(where) == {"default", "priority"}
    screen = run_top(["--once", "--width", "100"], Path(os.devnull).parent, REDIS_URL=redis_url,
                     SANDBOXRUNNER_KEY_PREFIX="app")
    lines = screen.stdout.splitlines()
    if "+cluster" in redis_url:
        assert len(nodes) == 3 and where["default"] != where["priority"]
        for queue, address in where.items():  # the screen lists each master, queues by it
            assert queue in _row(lines, address, "master").split()
    else:
        assert len(nodes) == 1 and not any(line.startswith("nodes") for line in lines)


def test_a_refresh_is_read_only_and_costs_the_same_whatever_the_history(
        redis_url: str, redis_client: redis.Redis) -> None:
    keys = Keys("sr")
    password = uuid.uuid4().hex
    redis_client.execute_command(
        "ACL", "SETUSER", "viewer", "on", f">{password}", "~*", "&*", "+@read",
        "+@connection", "+info", "+time", "-keys", "-scan", "-@write")

    def history(n: int) -> None:
        pipe = redis_client.pipeline(transaction=False)
        for _ in range(n):
            job_id = f"default-{uuid.uuid4().hex}"
            pipe.hset(keys.job(job_id), mapping={"name": "x", "status": "failed", "end": 1,
                                                 "error": '{"type": "E", "message": "m"}'})
            pipe.lpush(keys.failures("default"), job_id)
            pipe.lpush(keys.recent("default"), job_id)
            pipe.xadd(keys.logs(), {"job": job_id, "line": '{"msg": "m", "ts": 1}'})
        pipe.execute()

    def commands_per_read(reader: SnapshotReader) -> int:
        before = int(redis_client.info("stats")["total_commands_processed"])
        reader.read()
        after = int(redis_client.info("stats")["total_commands_processed"])
        return after - before - 1  # the first INFO counts itself

    url = redis_url.replace("redis://", f"redis://viewer:{password}@")
    reader = SnapshotReader(make_config(url), url)
    try:
        history(12)
        reader.read()  # connects (AUTH, CLIENT SETINFO): not part of a refresh
        small = commands_per_read(reader)
        history(2000)
        assert commands_per_read(reader) == small
        snap = reader.read()
    finally:
        reader.close()
    assert len(snap.failures) == 10 and len(snap.logs) == 20
    assert small < 80


def test_the_elapsed_bar_turns_red_near_the_timeout() -> None:
    assert str(time_bar(500, 1000, 10)) == "█████░░░░░"
    assert time_bar(500, 1000, 10).spans[0].style == "green"
    assert time_bar(800, 1000, 10).spans[0].style == "yellow"
    assert time_bar(950, 1000, 10).spans[0].style == "red"
    assert str(time_bar(5000, 1000, 4)) == "████"


# -- running, prefetched and orphaned jobs -----------------------------------------------


def json_of(url: str, cwd: Path) -> dict[str, Any]:
    done = run_top(["--json"], cwd, REDIS_URL=url)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def supervisor_row(snap: dict[str, Any], pid: int) -> dict[str, Any]:
    found = [s for s in snap["supervisors"] if s["pid"] == pid]
    assert len(found) == 1, snap["supervisors"]
    return dict(found[0])


def test_jobs_a_process_pool_claimed_ahead_of_a_free_child_are_shown_as_prefetched(
        redis_url: str, tmp_path: Path) -> None:
    supervisor = SupervisorProcess(redis_url, ["--workers", "default", "-c", "1",
                                               "--separate-process"])
    try:
        supervisor.wait_ready()
        with client_for(redis_url) as client:
            ids = {client.enqueue("slow", {"seconds": LONG_S}).id for _ in range(3)}
        snap = wait_for(lambda: (s := json_of(redis_url, tmp_path))["running"] and s,
                        what="a job running in the child")
        default = snap["queues"]["default"]
        assert (default["waiting"], default["active"]) == (1, 2)
        assert (default["running"], default["prefetched"], default["orphaned"]) == (1, 1, 0)
        assert (snap["totals"]["running"], snap["totals"]["prefetched"]) == (1, 1)
        row = supervisor_row(snap, supervisor.proc.pid)
        assert (row["busy"], row["prefetched"], row["orphaned"], row["capacity"]) == (1, 1, 0, 1)
        assert len(snap["running"]) == 1 and snap["running"][0]["id"] in ids
        lines = screen_of(redis_url, tmp_path, 100)
    finally:
        supervisor.stop()
    assert "waiting 1  prefetched 1  running 1  completed 0" in lines[1]
    assert _queue_row(lines, "default")[:4] == ["default", "1", "1", "1"]
    assert "running jobs (1)" in lines
    assert _row(lines, str(supervisor.proc.pid), "live").endswith("1/1 busy · 1 prefetched")


@pytest.mark.parametrize("others", ["alone", "beside_another_queue", "beside_the_same_queue"])
def test_a_sigkilled_supervisor_is_gone_once_its_lease_lapsed_by_the_server_clock(
        redis_url: str, tmp_path: Path, others: str) -> None:
    # gone after 3 s, its snapshot kept for 9 s: a loaded machine's `top --json` takes a
    # second or two a read
    lease = {"SANDBOXRUNNER_LEASE_MS": "3000"}
    victim = SupervisorProcess(redis_url, ["--workers", "default", "-c", "2"], **lease)
    other = None
    try:
        victim.wait_ready()
        with client_for(redis_url) as client:
            ids = {client.enqueue("slow", {"seconds": LONG_S}).id for _ in range(2)}
        wait_for(lambda: {r["id"] for r in json_of(redis_url, tmp_path)["running"]} == ids,
                 what="both jobs running")
        if others != "alone":
            queue = "default" if others == "beside_the_same_queue" else "priority"
            other = SupervisorProcess(redis_url, ["--workers", queue, "-c", "2"], **lease)
            other.wait_ready((queue,))
        victim.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        victim.wait()
        snap = wait_for(lambda: (s := json_of(redis_url, tmp_path)) and supervisor_row(
            s, victim.proc.pid)["state"] == "gone" and s, timeout_s=20, what="gone")
        assert time.monotonic() - killed_at < 3 + 3  # its lease, and a margin for the load
        gone = supervisor_row(snap, victim.proc.pid)
        assert (gone["mode"], gone["queues"], gone["busy"]) == ("threads", ["default"], 0)
        assert gone["children"] == [] and gone["uptime_ms"] > 0
        assert supervisor_row(json_of(redis_url, tmp_path),
                              victim.proc.pid)["uptime_ms"] == gone["uptime_ms"]  # stopped
        if others == "beside_the_same_queue":
            assert other is not None
            snap = wait_for(lambda: (s := json_of(redis_url, tmp_path)) and {
                r["id"] for r in s["running"]} == ids and s, what="the jobs taken back")
            assert {r["supervisor_pid"] for r in snap["running"]} == {other.proc.pid}
            default = snap["queues"]["default"]
            assert (default["active"], default["running"], default["orphaned"]) == (2, 2, 0)
            return
        assert snap["running"] == [] and gone["orphaned"] == 2
        default = snap["queues"]["default"]
        assert (default["active"], default["running"], default["prefetched"],
                default["orphaned"]) == (2, 0, 0, 2)
        lines = screen_of(redis_url, tmp_path, 100)
        assert "orphaned 2" in lines[1] and "running jobs (0)  none" in lines
        assert re.search(r" gone .*last seen [\d.]+s ago · 2 orphaned$",
                         _row(lines, str(victim.proc.pid), "gone"))
    finally:
        victim.stop()
        if other is not None:
            other.stop()


# -- the live screen in a real terminal --------------------------------------------------


class Tmux:
    """One tmux server on a socket of its own, running sh in a 120x40 window."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.socket = f"sr-top-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.env = env
        self.tmux(["new-session", "-d", "-x", "120", "-y", "40", "-s", "top", "sh"], cwd=cwd)
        self.socket_path = Path(self.tmux(["display-message", "-p", "#{socket_path}"]).strip())

    def tmux(self, args: list[str], cwd: Path | None = None) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], env=self.env, cwd=cwd,
                              capture_output=True, text=True, timeout=10)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def type(self, line: str) -> None:
        self.tmux(["send-keys", "-t", "top", "-l", line])
        self.tmux(["send-keys", "-t", "top", "Enter"])

    def screen(self) -> str:
        return self.tmux(["capture-pane", "-p", "-t", "top"])

    def wait_for(self, text: str, timeout_s: float = 20) -> str:
        return str(wait_for(lambda: text in (s := self.screen()) and s, timeout_s,
                            f"{text!r} on the screen"))

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=10)
        self.socket_path.unlink(missing_ok=True)  # tmux leaves it behind


@pytest.fixture
def tmux_with(tmp_path: Path) -> Iterator[Callable[..., Tmux]]:
    if shutil.which("tmux") is None:
        pytest.fail("the terminal test needs tmux (.ci/run installs it)", pytrace=False)
    made: list[Tmux] = []

    def make(**env: str) -> Tmux:
        made.append(Tmux(tmp_path, top_env(PS1="$ ", **env)))
        return made[-1]

    try:
        yield make
    finally:
        for term in made:
            term.kill()


def _quit_and_check_the_terminal(term: Tmux) -> None:
    term.tmux(["send-keys", "-t", "top", "q"])
    screen = term.wait_for("TOP_EXIT=0", timeout_s=10)
    assert "q quits" not in screen  # the alternate screen is gone
    assert term.tmux(["display-message", "-p", "-t", "top", "#{pane_current_command}"]
                     ).strip() == "sh"
    term.type("stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon -e echo -e -echo")
    lines = term.wait_for("\necho\n").splitlines()
    typed = max(i for i, line in enumerate(lines) if "stty -a" in line)
    assert lines[typed + 1:typed + 3] == ["icanon", "echo"]  # cbreak mode was undone


def test_live_dashboard_in_a_real_terminal_shows_the_queues_and_quits_on_q(
        scenario: Scenario, tmux_with: Callable[..., Tmux]) -> None:
    term = tmux_with(REDIS_URL=scenario.url)
    term.type(f"{sys.executable} -m sandboxrunner top; echo TOP_EXIT=$?")
    # the cron rows come from the schedules the supervisors sync: a first frame drawn on a
    # loaded machine may come before them
    screen = term.wait_for("nightly_report")
    assert "queues" in screen and "q quits" in screen and "priority" in screen
    assert "waiting 1  prefetched 0  running 3  completed" in screen
    assert short(scenario.long_render) in screen
    _quit_and_check_the_terminal(term)


def test_live_dashboard_says_redis_is_unreachable_and_recovers_when_it_is_back(
        tmp_path: Path, tmux_with: Callable[..., Tmux]) -> None:
    port = free_port()
    term = tmux_with(REDIS_URL=f"redis://127.0.0.1:{port}/0")
    term.type(f"{sys.executable} -m sandboxrunner top --refresh 0.3; echo TOP_EXIT=$?")
    screen = term.wait_for("Redis unreachable")
    assert f"127.0.0.1:{port}" in screen and "Traceback" not in screen
    term.wait_for("(attempt 3)")
    with TestServer(tmp_path / "late-redis", port=port):
        term.wait_for("queues")
        _quit_and_check_the_terminal(term)


def test_live_dashboard_shows_a_sigkilled_supervisor_gone_with_its_jobs_orphaned(
        redis_url: str, tmux_with: Callable[..., Tmux]) -> None:
    victim = SupervisorProcess(redis_url, ["--workers", "default", "-c", "2"])  # lease 1 s
    try:
        victim.wait_ready()
        with client_for(redis_url) as client:
            for _ in range(2):
                client.enqueue("slow", {"seconds": LONG_S})
        term = tmux_with(REDIS_URL=redis_url)
        term.type(f"{sys.executable} -m sandboxrunner top --refresh 0.3; echo TOP_EXIT=$?")
        term.wait_for("2/2 busy")
        victim.signal(signal.SIGKILL)
        victim.wait()
        screen = term.wait_for("· 2 orphaned")
        assert "running jobs (0)" in screen and "orphaned 2" in screen
        assert re.search(rf" {victim.proc.pid} +gone ", screen)
        _quit_and_check_the_terminal(term)
    finally:
        victim.stop()


def test_the_cron_table_says_when_no_supervisor_serves_a_schedules_queue(
        redis_url: str, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "nightly.py").write_text("cron = '0 3 * * *'\ndef run():\n    return 1\n")
    with running_supervisor(redis_url, jobs_dir=str(jobs)):
        served = [line for line in screen_of(redis_url, tmp_path, 120) if "nightly" in line]
    unserved = [line for line in screen_of(redis_url, tmp_path, 120) if "nightly" in line]
    assert len(served) == 1 and " in " in served[0] and "no supervisor" not in served[0]
    assert len(unserved) == 1 and "no supervisor" in unserved[0]
