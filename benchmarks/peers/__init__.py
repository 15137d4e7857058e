"""The peers, one module each: ``<peer>_bench.py`` (variants, client side) and
``<peer>_app.py`` (what its workers import). A peer whose package is missing is skipped
with "not installed"; its bench module is only imported when the package is present."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from benchmarks.harness import Unavailable

# peer name -> the import name of its package
PEERS: dict[str, str] = {
    "celery": "celery",
    "rq": "rq",
    "huey": "huey",
    "dramatiq": "dramatiq",
    "arq": "arq",
    "saq": "saq",
}


def load(peer: str) -> ModuleType:
    """The bench module of PEER; Unavailable("not installed") when its package is missing."""
    package = PEERS[peer]
    if importlib.util.find_spec(package) is None:
        raise Unavailable("not installed")
    try:
        return importlib.import_module(f"benchmarks.peers.{peer}_bench")
    except ImportError as exc:
        raise Unavailable(f"cannot import: {exc}") from exc


def version(peer: str) -> str | None:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(PEERS[peer])
    except PackageNotFoundError:
        return None
