"""Idle connections kept ready for the next send, and commands packed for them in one call.

`IdleConnections` keeps each server's connections that no thread is using in a list of
its own: a send pops one (or makes one from the server's pool settings when none is idle,
outside the pool's own list, which the redis-py client of the same pool keeps using) and
puts it back after. A pool checkout and release cost 10-15 us a command in
redis-py 8 (a lock, its observability counters, an event, a poll of the socket), a tenth
of a whole enqueue on a local server; a list's pop and append cost a fraction of a
microsecond and need no lock (each is atomic). There are never more connections than
sends under way at once, as with the pool, and any thread reuses any idle one.

- Health: before each use, a connection whose socket has something to read (EOF: the
  server closed it, restarted, or timed the client out) is dropped and connected afresh,
  as the pool's checkout does (one poll(2), about a microsecond).
- Pools: a cluster reads its topology again after a failover and may replace a node's
  pool; a replaced pool's idle list goes with it (they are keyed by the pool object).
- Fork: a forked child never uses what its parent kept (redis-py's pools reset in a child
  too). `close` disconnects them all (the pools' own close does not know them).

Blocking reads (BLMOVE) do not come here: they take a pool connection each, as a stop
cuts them short by connection (blocking.py).

`pack` writes commands in the protocol with hiredis in one call per command (a third of
redis-py's own packer's cost, which re-checks every argument in Python).
"""

from __future__ import annotations

import os
import select
import ssl
from collections.abc import Sequence
from typing import Any

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    _hiredis_pack = None  # type: ignore[assignment]


def pack(conn: Any, commands: Sequence[tuple[Any, ...]]) -> list[bytes]:
    """COMMANDS as the chunks to send on CONN (send_packed_command's argument). hiredis
    packs str (UTF-8), bytes, int and float as redis-py does; a command name with a space
    in it ("CLIENT ID"), and anything else, goes through redis-py's packer."""
    if _hiredis_pack is None or any(" " in str(cmd[0]) for cmd in commands):
        return conn.pack_commands(commands)  # type: ignore[no-any-return]
    try:
        return [b"".join([_hiredis_pack(cmd) for cmd in commands])]
    except TypeError:
        return conn.pack_commands(commands)  # type: ignore[no-any-return]  # it says why


def _stale(conn: Any) -> bool:
    """Whether CONN's socket has something to read before anything was sent: EOF or data
    nobody asked for. Either way the connection is not fit to use."""
    sock = conn._sock
    if sock is None:
        return False
    if isinstance(sock, ssl.SSLSocket):  # TLS may hold records only the TLS layer reads
        try:
            return bool(conn.can_read())
        except (OSError, ConnectionError):
            return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class IdleConnections:
    """The idle connections of one Router's pools (module docstring)."""

    def __init__(self) -> None:
        self._idle: dict[int, tuple[Any, list[Any]]] = {}  # id(pool): (pool, its idle)
        self._pid = os.getpid()
        self._closed = False

    def take(self, pool: Any) -> Any:
        """A connection to POOL's server that no other thread uses, ready to send on;
        hand it back with `give_back`."""
        if self._pid != os.getpid():
            self._idle, self._pid = {}, os.getpid()
        entry = self._idle.get(id(pool))
        if entry is None or entry[0] is not pool:
            entry = self._idle[id(pool)] = (pool, [])
        try:
            conn = entry[1].pop()
        except IndexError:
            conn = pool.make_connection()
        if _stale(conn):
            conn.disconnect()
        if conn._sock is None:
            # connect() itself, not a send's own reconnect: a Sentinel-managed connection
            # asks the Sentinels where the master is only there
            try:
                conn.connect()
            except BaseException:
                self.give_back(pool, conn)
                raise
        return conn

    def give_back(self, pool: Any, conn: Any) -> None:
        entry = self._idle.get(id(pool))
        if self._closed or entry is None or entry[0] is not pool:
            conn.disconnect()  # closed, or its pool was replaced meanwhile
        else:
            entry[1].append(conn)

    def close(self) -> None:
        """Disconnect every idle connection; one in use now is when it is handed back."""
        self._closed = True
        idle, self._idle = self._idle, {}
        for _, conns in idle.values():
            for conn in conns:
                conn.disconnect()
