"""What the supervisor does to a child's process tree and learns of it: its pidfd,
signalling its group and stray descendants, and their RSS (how it ended: deaths.py).

A child is the fork server's child, not the supervisor's, yet its pid cannot be a
stranger's while the pool signals it: the fork server reaps a child only when the pool
asks (in_forkserver.py), after the pool has killed what is left of its group.
"""

from __future__ import annotations

import os

import psutil


def open_pidfd(pid: int) -> int:
    """A pidfd of PID (any process, not only our children), or -1 without pidfd_open."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # Linux < 5.3, or it is gone already
        return -1


def signal_tree(pid: int, sig: int, doomed: tuple[psutil.Process, ...] = ()) -> None:
    """Send SIG to the process group PID leads and to its DOOMED descendants."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        # no such group: the child was forked a moment ago and has not called setsid
        # yet (it has started nothing either), or it is a zombie already
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    for proc in doomed:  # descendants that may have left the group
        try:
            proc.send_signal(sig)
        except psutil.Error:
            pass


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for member in (proc, *descendants(proc.pid)):
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass  # gone meanwhile
    return total


def descendants(pid: int) -> list[psutil.Process]:
    """Every live process below PID. Walks /proc/P/task/T/children down the tree, which
    costs microseconds; psutil's children() reads every process on the host (ms)."""
    if not _PROC_CHILDREN:
        try:
            return psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            return []
    found: list[psutil.Process] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for kid in _children_of(parent):
            try:
                found.append(psutil.Process(kid))  # remembers its start time: no pid reuse
            except psutil.Error:
                continue
            todo.append(kid)
    return found


def _children_of(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                kids += [int(k) for k in fh.read().split()]
    except OSError:
        pass  # exited meanwhile
    return kids


# /proc/P/task/T/children needs CONFIG_PROC_CHILDREN (on in mainstream kernels)
_PROC_CHILDREN = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
