"""Layers point one way: the worker side (supervisor, fetching, the thread executor,
cron) and the dashboard never import the caller side (client, listener), not even
lazily inside a function; a job's nested run_job gets its client from the factory its
supervisor was handed. Read from the source, as the package's __init__ imports both."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "sandboxrunner"
WORKER_SIDE = ["supervisor", "fetching", "executors.threads", "executors.base",
               "executors.processes", "executors.in_child", "executors.in_forkserver", "cron",
               "snapshot", "top"]
CALLER_SIDE = {"client", "client_control", "process_client", "listener", "async_store",
               "worker", "integrations"}
NOT_FOLLOWED: set[str] = set()


def _imports(module: str) -> set[str]:
    """The package modules MODULE imports anywhere in its source (dotted, package-relative)."""
    path = PACKAGE.joinpath(*module.split(".")).with_suffix(".py")
    here = module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[:len(here) - node.level + 1]
            target = ".".join([*base, node.module] if node.module else base)
            names = [f"{target}.{a.name}" if target else a.name for a in node.names]
            found.update(n for n in [target, *names] if _is_module(n))
    return found


def _is_module(name: str) -> bool:
    return bool(name) and PACKAGE.joinpath(*name.split(".")).with_suffix(".py").exists()


def _reached_from(start: list[str]) -> set[str]:
    seen, todo = set(), list(start)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            if module not in NOT_FOLLOWED:
                todo.extend(_imports(module))
    return seen


def test_the_worker_side_and_the_dashboard_never_import_the_caller_side() -> None:
    reached = _reached_from(WORKER_SIDE)
    assert {"store", "job", "registry"} <= reached  # the walk does follow imports
    assert reached.isdisjoint(CALLER_SIDE), sorted(reached & CALLER_SIDE)


def test_the_dashboard_reads_without_importing_the_scheduler_or_the_supervisor() -> None:
    reached = _reached_from(["snapshot", "top", "top_render"])
    assert "cron_state" in reached  # it reads the schedules, through their read side
    writers = {"cron", "calls", "supervisor", "fetching", "executors.threads"}
    assert reached.isdisjoint(writers | CALLER_SIDE), sorted(reached & (writers | CALLER_SIDE))


# Redis through one layer: connections are made only by connection.py (the factory) for
# routing.py and async_routing.py (which send each command to the right server); every
# other module talks to Redis through a store. server_process.py and testdeployments.py
# manage servers they started (by port), not a deployment.
LAYER = {"connection", "routing", "async_routing"}
STORES = {"store", "store_reads", "store_cron", "async_store"}
SERVER_MANAGERS = {"server_process", "testdeployments"}
CLIENT_MAKERS = {"Redis", "StrictRedis", "RedisCluster", "Sentinel", "from_url", "from_pool",
                 "ConnectionPool", "BlockingConnectionPool", "master_for"}
RAW_CALLS = {"pipeline", "pubsub", "execute_command", "get_connection", "register_script"}


def _called_and_reached(path: Path) -> tuple[set[str], set[str]]:
    """The names a module calls (f() or x.f()), and the attributes it reads."""
    called, reached = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            called.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
        elif isinstance(node, ast.Attribute):
            reached.add(node.attr)
    return called, reached


def _modules() -> list[str]:
    return [".".join(p.relative_to(PACKAGE).with_suffix("").parts)
            for p in sorted(PACKAGE.rglob("*.py"))]


def test_every_connection_comes_from_the_one_layer_and_only_stores_use_it() -> None:
    offenders = []
    for module in _modules():
        path = PACKAGE.joinpath(*module.split(".")).with_suffix(".py")
        called, reached = _called_and_reached(path)
        if module not in LAYER | SERVER_MANAGERS and called & CLIENT_MAKERS:
            offenders.append(f"{module} makes a client: {sorted(called & CLIENT_MAKERS)}")
        if module not in LAYER | STORES | SERVER_MANAGERS and called & RAW_CALLS:
            offenders.append(f"{module} talks to Redis itself: {sorted(called & RAW_CALLS)}")
        if module not in LAYER | STORES and reached & {"redis", "router"}:
            offenders.append(f"{module} borrows a store's client: "
                             f"{sorted(reached & {'redis', 'router'})}")
    assert offenders == []


def test_the_web_dashboard_acts_as_a_caller_and_never_imports_the_worker_side() -> None:
    web = ["dashboard.app", "dashboard.source", "dashboard.actions", "dashboard.views",
           "dashboard.security", "dashboard.shared_snapshot", "cli_dashboard"]
    reached = _reached_from(web)
    assert {"snapshot", "job_control", "client"} <= reached  # reads, and acts as a caller
    worker_side = {"supervisor", "fetching", "cron", "executors.threads",
                   "executors.processes"}
    assert reached.isdisjoint(worker_side), sorted(reached & worker_side)


def test_the_web_dashboard_imports_no_cli_module() -> None:
    web = ["dashboard.app", "dashboard.source", "dashboard.actions", "dashboard.views",
           "dashboard.security", "dashboard.shared_snapshot", "dashboard.metrics"]
    reached = _reached_from(web)
    assert "job_lookup" in reached  # short ids are found as the CLI finds them
    cli_modules = {m for m in reached if m == "cli" or m.startswith("cli_")}
    assert cli_modules == set(), sorted(cli_modules)
