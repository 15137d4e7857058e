"""Sending commands on a connection, and blocking reads that a stop can cut short.

`exchange` is the one way routing.py talks on a connection it holds: commands in one
write, replies read in order. `BlockedConnections` knows which connections are in a
blocking read (BLMOVE) now, and on which server: a stopping supervisor would wait up to
the block's timeout (a second) for a fetch blocked on an empty queue, so `Router` cuts
such waits short with CLIENT UNBLOCK, sent to the server holding each connection (in a
cluster, the node of its queue; behind Sentinels, the master it connected to). CLIENT
UNBLOCK needs the server's id of each connection: it is learnt with CLIENT ID on every
connect. It aims at our own connections only (a wake marker in the wait list would wake
any supervisor of the queue). Where an ACL forbids CLIENT, the waits just run their
course.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis

from .idle_connections import pack

Address = tuple[str, int] | str  # (host, port), or a unix socket's path


def exchange(conn: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Send COMMANDS in one write on CONN and read their replies; an error reply comes
    back in its place as an exception. Neither retried nor health-checked: redis-py's
    machinery for that costs ~15 us a call (a sixth of a round trip) and replays commands
    blindly. A connection that fails is dropped and the error raised."""
    try:
        conn.send_packed_command(pack(conn, commands), check_health=False)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except redis.ResponseError as exc:
                replies.append(exc)
        return replies
    except BaseException:
        conn.disconnect()
        raise


def address_of(conn: Any) -> Address:
    """The server CONN is connected to (or will connect to)."""
    path = getattr(conn, "path", None)
    if path:
        return str(path)
    return (str(conn.host), int(conn.port))


class BlockedConnections:
    """The connections in a blocking read now, with the server and id of each."""

    def __init__(self) -> None:
        # each connection's server and id there (-1: CLIENT ID refused), learnt on connect
        self._ids: weakref.WeakKeyDictionary[Any, tuple[Address, int]] = (
            weakref.WeakKeyDictionary())
        self._waiting: set[Any] = set()
        self._lock = threading.Lock()

    @contextmanager
    def blocking(self, conn: Any) -> Iterator[None]:
        """CONN is in a blocking read while this lasts."""
        if conn not in self._ids:  # a new connection: learn its id now
            conn.register_connect_callback(self._learn_id)  # and on each reconnect
            if conn._sock is None:
                conn.connect()  # which learns it
            else:
                self._learn_id(conn)
        with self._lock:
            self._waiting.add(conn)
        try:
            yield
        finally:
            with self._lock:
                self._waiting.discard(conn)

    def waiting(self) -> list[tuple[Address, int]]:
        """The server and id of each connection in a blocking read now (ids known only)."""
        with self._lock:
            found = [self._ids.get(conn) for conn in self._waiting]
        return [f for f in found if f is not None and f[1] >= 0]

    def _learn_id(self, conn: Any) -> None:
        conn.send_command("CLIENT", "ID", check_health=False)
        try:
            self._ids[conn] = (address_of(conn), int(conn.read_response()))
        except redis.ResponseError:  # an ACL without CLIENT: its waits run their course
            self._ids[conn] = (address_of(conn), -1)
