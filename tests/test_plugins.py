"""Jobs from an installed package: tests/plugin_pkg is pip-installed for real, and its
`sandboxrunner.jobs` entry point is found by importlib.metadata in this process and in
`sandboxrunner` subprocesses.

The package goes into a folder of its own (pip --target) that is put on sys.path and
PYTHONPATH only for the tests that ask for it, so no other test sees its jobs and nothing
is left in the environment after the run.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxrunner.errors import EXIT_CONFIG, JobLoadError
from sandboxrunner.registry import PLUGIN_GROUP, load_registry
from tests.supervisors import ROOT, TEST_JOBS, SupervisorProcess, client_for, running_supervisor

PLUGIN_PKG = Path(__file__).parent / "plugin_pkg"
PLUGIN_MODULE = "sandboxrunner_testplugin"
# the entry point, and the installed distribution and version that declared it
SOURCE = "plugin:testplugin from sandboxrunner-testplugin 0.1.0"


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/plugin_pkg built into a wheel and installed by pip into its own folder."""
    target = tmp_path_factory.mktemp("plugin-site")
    # The package's in-tree backend needs nothing from an index: install offline.
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_ROOT_USER_ACTION="ignore",
               PIP_NO_INPUT="1", PIP_BREAK_SYSTEM_PACKAGES="1")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
         "--target", str(target), str(PLUGIN_PKG)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    if done.returncode != 0:
        pytest.fail(f"pip could not install {PLUGIN_PKG}:\n{done.stdout}\n{done.stderr}",
                    pytrace=False)
    return target


@pytest.fixture
def plugin_installed(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The installed plugin visible here (sys.path) and to subprocesses (PYTHONPATH)."""
    monkeypatch.syspath_prepend(str(plugin_site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(plugin_site), os.environ.get("PYTHONPATH", "")) if p))
    yield plugin_site
    for name in [m for m in sys.modules if m.partition(".")[0] == PLUGIN_MODULE]:
        del sys.modules[name]


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k != "REDIS_URL" and not k.startswith("SANDBOXRUNNER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "sandboxrunner", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def write_job(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


def test_the_installed_package_declares_a_real_entry_point(plugin_installed: Path) -> None:
    (ep,) = [ep for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP)
             if ep.name == "testplugin"]
    assert ep.value == f"{PLUGIN_MODULE}:JOBS"
    assert ep.dist is not None and ep.dist.name == "sandboxrunner-testplugin"
    assert (plugin_installed / "sandboxrunner_testplugin-0.1.0.dist-info").is_dir()


def test_plugin_jobs_are_invisible_without_the_package() -> None:
    names = load_registry(TEST_JOBS).names()
    assert "plugin_greet" not in names and "plugin_whoami" not in names


def test_plugin_jobs_join_the_registry_with_their_source(plugin_installed: Path) -> None:
    registry = load_registry(TEST_JOBS)
    greet, whoami = registry.get("plugin_greet"), registry.get("plugin_whoami")
    assert (greet.source, greet.queue, greet.timeout_ms) == (SOURCE, "default", 5000)
    assert greet.module_name == f"{PLUGIN_MODULE}.greet"  # a job module, like a job file
    assert (whoami.source, whoami.queue, whoami.timeout_ms) == (SOURCE, "priority", 5000)
    assert "echo" in registry.names()  # job files load alongside


def test_jobs_command_lists_plugin_jobs_with_their_source(plugin_installed: Path,
                                                          tmp_path: Path) -> None:
    write_job(tmp_path / "worker_jobs", "local", "def run(data):\n    return data\n")
    done = cli(["jobs"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[1:] if line}
    assert rows["plugin_greet"].split()[1] == "default"
    assert rows["plugin_greet"].endswith(f" {SOURCE}")
    assert rows["plugin_whoami"].split()[1] == "priority"
    assert rows["plugin_whoami"].endswith(f" {SOURCE}")
    assert rows["local"].endswith(" " + os.path.join("worker_jobs", "local.py"))


def test_plugin_jobs_run_in_thread_mode(plugin_installed: Path, redis_url: str) -> None:
    with running_supervisor(redis_url), client_for(redis_url) as client:
        greeting = client.run_job("plugin_greet", {"name": "ada"})
        assert greeting == {"greeting": "hello ada", "pid": os.getpid()}
        whoami = client.run_job("plugin_whoami", [1])
        assert whoami == {"pid": os.getpid(), "queue": "priority", "data": [1]}


def test_plugin_jobs_run_in_process_mode(plugin_installed: Path, redis_url: str) -> None:
    with running_supervisor(redis_url, use_separate_process=True, concurrency=1), \
            client_for(redis_url) as client:
        greeting = client.run_job("plugin_greet", {"name": "bob"})
        assert greeting["greeting"] == "hello bob" and greeting["pid"] != os.getpid()
        whoami = client.run_job("plugin_whoami", None)
        assert whoami["queue"] == "priority" and whoami["pid"] != os.getpid()


def test_a_supervisor_service_finds_the_plugin_and_runs_its_jobs_in_children(
        plugin_installed: Path, redis_url: str) -> None:
    service = SupervisorProcess(redis_url, ["--separate-process", "--concurrency", "1"])
    try:
        service.wait_ready(("default", "priority"))
        with client_for(redis_url) as client:
            greeting = client.run_job("plugin_greet", {"name": "cy"}, wait_timeout=10_000)
            whoami = client.run_job("plugin_whoami", None, wait_timeout=10_000)
        assert greeting["greeting"] == "hello cy"
        service_pid = service.proc.pid
        assert greeting["pid"] not in (os.getpid(), service_pid)
        assert whoami["pid"] not in (os.getpid(), service_pid)
    finally:
        service.stop()


def test_a_job_file_named_like_a_plugin_job_is_an_error_naming_both(
        plugin_installed: Path, tmp_path: Path) -> None:
    jobs = tmp_path / "worker_jobs"
    path = write_job(jobs, "plugin_greet", "def run(data):\n    return data\n")
    with pytest.raises(JobLoadError) as info:
        load_registry(jobs)
    message = str(info.value)
    assert "'plugin_greet'" in message and str(path) in message and SOURCE in message

    done = cli(["jobs"], cwd=tmp_path)
    assert done.returncode == EXIT_CONFIG
    assert "plugin_greet" in done.stderr and SOURCE in done.stderr
    assert str(path.resolve()) in done.stderr
