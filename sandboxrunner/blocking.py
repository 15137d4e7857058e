"""Sending commands on a connection, and blocking reads that a stop can cut short.

`exchange` is the one way store.py talks on a connection it holds: commands in one write,
replies read in order. `BlockingConnections` is the pool a Store keeps for BLMOVE (so a
supervisor's other traffic never waits behind a blocked read). A stopping supervisor
would wait up to the block's timeout (a second) for a fetch blocked on an empty queue;
`interrupt` cuts such waits short with CLIENT UNBLOCK, which needs the server's id of
each connection: it is learnt with CLIENT ID on every connect. CLIENT UNBLOCK aims at our
own connections only (a wake marker in the wait list would wake any supervisor of the
queue). Where an ACL forbids CLIENT, the waits just run their course.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Any

import redis


def exchange(conn: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Send COMMANDS in one write on CONN and read their replies; an error reply comes
    back in its place as an exception. Neither retried nor health-checked: redis-py's
    machinery for that costs ~15 us a call (a sixth of a round trip) and replays commands
    blindly. A connection that fails is dropped and the error raised."""
    try:
        conn.send_packed_command(conn.pack_commands(commands), check_health=False)
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


class BlockingConnections:
    """CLIENT's connections for blocking reads, and which of them are in one now."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        # each connection's server-side id (-1: CLIENT ID refused), learnt on connect
        self._ids: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._waiting: set[Any] = set()
        self._lock = threading.Lock()

    def send(self, *commands: tuple[Any, ...]) -> list[Any]:
        """`exchange` COMMANDS on a connection of the pool, marked as waiting meanwhile."""
        pool = self.client.connection_pool
        conn: Any = pool.get_connection()  # redis-py's Connection methods are untyped
        try:
            if conn not in self._ids:  # a new connection: learn its id now
                conn.register_connect_callback(self._learn_id)  # and on each reconnect
                self._learn_id(conn)
            with self._lock:
                self._waiting.add(conn)
            try:
                return exchange(conn, commands)
            finally:
                with self._lock:
                    self._waiting.discard(conn)
        finally:
            pool.release(conn)

    def interrupt(self, unblocker: redis.Redis) -> int:
        """CLIENT UNBLOCK (sent through UNBLOCKER) every connection in a blocking read;
        how many were unblocked (0: none had blocked yet)."""
        with self._lock:
            ids = [self._ids.get(conn, -1) for conn in self._waiting]
        return sum(int(unblocker.client_unblock(i)) for i in ids if i >= 0)

    def close(self) -> None:
        self.client.close()

    def _learn_id(self, conn: Any) -> None:
        conn.send_command("CLIENT", "ID", check_health=False)
        try:
            self._ids[conn] = int(conn.read_response())
        except redis.ResponseError:  # an ACL without CLIENT: its waits run their course
            self._ids[conn] = -1
