"""Message framing between a supervisor, its fork server and its children.

Children: frames on plain ``os.pipe`` pairs.

A frame is a 5-byte header, the payload length (uint32, little-endian) and a kind byte,
followed by the payload. Each side reads whole chunks (``os.read(fd, 64 KiB)``) and cuts
every complete frame out of them, so one readiness event and one read usually carry one
job's result, or many log lines. ``multiprocessing.connection`` was the alternative; its
``recv_bytes`` costs two blocking reads per message and cannot be fed from a
non-blocking fd by a manager thread that serves many children at once.

Directions and payloads:

  supervisor -> child   RUN    pickle of (the ClaimedJob's fields, spec blob or None)
                               (encode_run): the only place pickle travels, and only
                               towards the child
  child -> supervisor   READY  empty: initialised, waiting for a call
                        LOG    ``JOB_ID \\n`` + JSON of one log line
                        PROGRESS ``JOB_ID \\n`` + JSON of a report (progress.py;
                               the child sends its latest at most every 100 ms)
                        DONE   ``c`` or ``f`` + result JSON or ErrorInfo JSON
                        BROKEN UTF-8 text: the child could not initialise (it exits next)

Nothing from a child is unpickled: a job can corrupt its child's pipe, so the supervisor
parses the child's frames as bytes and JSON and treats anything unexpected as a broken
child (`ProtocolError`).

The fork server: one message per send on a SOCK_SEQPACKET socket pair (the kernel keeps
the boundaries and carries file descriptors with a message), a kind byte then JSON. The
supervisor asks, the fork server answers each request before it reads the next:

  supervisor -> server  SPAWN  ``[queue, slot]`` + the child's three pipe ends as
                               SCM_RIGHTS (command read, message write, output write)
                        REAP   ``[pid]``: that child exited, and what it left is killed
  server -> supervisor  READY  ``{"missing": {job: why}}``: started; specs it could not
                               load (a spawned server unpickles the supervisor's)
                        SPAWNED ``[pid]``       FAILED  ``"why"`` (fork failed)
                        REAPED ``[pid, wait status or null]``
                        BROKEN ``"why"``: it could not start (it exits next)

Nothing from the fork server is unpickled either: it imported the user's job files.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import struct
from typing import Any

from ..store import ClaimedJob

HEADER = struct.Struct("<IB")
# a bound on what a broken child can make the supervisor buffer
MAX_FRAME_BYTES = 256 * 1024 * 1024
READ_CHUNK = 64 * 1024

RUN = ord("J")
READY = ord("R")
LOG = ord("L")
DONE = ord("D")
BROKEN = ord("E")
PROGRESS = ord("G")

TO_CHILD = frozenset({RUN})
FROM_CHILD = frozenset({READY, LOG, DONE, BROKEN, PROGRESS})

SPAWN = ord("S")
REAP = ord("K")
SPAWNED = ord("P")
FAILED = ord("F")
REAPED = ord("W")
MAX_MESSAGE = 64 * 1024  # a server message; the specs of a spawned one go by its stdin
CHILD_FDS = 3  # sent with SPAWN


class ProtocolError(Exception):
    """A peer wrote something that is not a valid frame (internal: never reaches users)."""


def frame(kind: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(len(payload), kind) + payload


class FrameReader:
    """Cuts complete frames out of a byte stream that arrives in arbitrary chunks."""

    def __init__(self, kinds: frozenset[int]) -> None:
        self._kinds = kinds
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The frames completed by DATA, in order; raises ProtocolError on garbage."""
        buffer = self._buffer
        buffer += data
        frames: list[tuple[int, bytes]] = []
        start = 0
        while len(buffer) - start >= HEADER.size:
            length, kind = HEADER.unpack_from(buffer, start)
            if kind not in self._kinds or length > MAX_FRAME_BYTES:
                raise ProtocolError(f"bad frame header: kind {kind}, length {length}")
            end = start + HEADER.size + length
            if end > len(buffer):
                break
            frames.append((kind, bytes(buffer[start + HEADER.size:end])))
            start = end
        if start:
            del buffer[:start]
        return frames

    def pending(self) -> int:
        """Bytes of an incomplete frame still buffered."""
        return len(self._buffer)


def from_supervisor(blob: bytes) -> Any:
    """Unpickle a frame of the command pipe, in a child. Only the supervisor whose pool
    asked for the child writes there, so this is the one trusted place pickles travel;
    nothing read from Redis or sent by a child is ever unpickled."""
    return pickle.loads(blob)  # trusted: supervisor pipe


def encode_run(job: ClaimedJob, spec_blob: bytes | None) -> bytes:
    """The RUN frame of JOB, as claimed; SPEC_BLOB is cloudpickle of its JobSpec when the
    child lacks it (registered after the fork server started, or replaced)."""
    # the claimed job crosses as a plain tuple of its fields, rebuilt in the child: a
    # dataclass pickles and unpickles several times slower (5.4 + 6.2 us against 1.8 +
    # 1.0 us per job, measured), on the hot path of every job
    payload = (tuple(job), spec_blob)
    return frame(RUN, pickle.dumps(payload, pickle.HIGHEST_PROTOCOL))


def decode_run(payload: bytes) -> tuple[ClaimedJob, bytes | None]:
    fields, spec_blob = from_supervisor(payload)
    return ClaimedJob(*fields), spec_blob


def write_all(fd: int, data: bytes) -> None:
    """Write DATA in full to a blocking fd (a pipe write can be partial past PIPE_BUF)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def send_message(sock: socket.socket, kind: int, body: Any,
                 fds: tuple[int, ...] = ()) -> None:
    """One message to the fork server or from it, with FDS passed along (SCM_RIGHTS)."""
    data = bytes([kind]) + json.dumps(body).encode()
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def receive_message(sock: socket.socket) -> tuple[int, Any, list[int]]:
    """The next message and the fds that came with it; kind 0 when the peer is gone.
    Raises ProtocolError on a message that is not a kind byte and JSON."""
    data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, CHILD_FDS)
    if not data:
        return 0, None, fds
    try:
        return data[0], json.loads(data[1:]), fds
    except ValueError as exc:
        for fd in fds:
            os.close(fd)
        raise ProtocolError(f"a fork server message that is not JSON: {exc}") from None
