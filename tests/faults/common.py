"""Helpers shared by the fault tests: waiting, reading what jobs recorded, a TCP proxy."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from sandboxrunner.keys import QUEUES, Keys
from tests.supervisors import wait_for

__all__ = ["wait_for"]  # re-exported for the fault tests

K = Keys("sr")


@dataclass(frozen=True)
class Line:
    word: str  # start, tick or end
    pid: int
    at: float  # epoch seconds


def job_lines(folder: Path) -> dict[str, list[Line]]:
    """What each fault_work run wrote, by job id."""
    out: dict[str, list[Line]] = {}
    for path in folder.iterdir():
        lines = []
        for raw in path.read_text().splitlines():
            word, pid, at = raw.split()
            lines.append(Line(word, int(pid), float(at)))
        out[path.name] = lines
    return out


def starts(lines: list[Line]) -> list[Line]:
    return [x for x in lines if x.word == "start"]


def stats(client: redis.Redis, queue: str = "default") -> dict[str, int]:
    raw = client.hgetall(K.stats(queue))
    return defaultdict(int, {k.decode(): int(v) for k, v in raw.items()})


def leftovers(client: redis.Redis) -> dict[str, int]:
    """Jobs still waiting, delayed or in some lease: all zero once nothing is lost."""
    out = {}
    for queue in QUEUES:
        out[f"{queue} wait"] = client.llen(K.wait(queue))
        out[f"{queue} delayed"] = client.zcard(K.delayed(queue))
        out[f"{queue} active"] = sum(
            client.llen(key) for key in client.scan_iter(match=K.active(queue, "*")))
    return out


def singleton_claims(client: redis.Redis) -> list[bytes]:
    return [k for q in QUEUES for k in client.scan_iter(match=K.singleton(q, "*"))]


def job_record(client: redis.Redis, job_id: str) -> dict[str, str]:
    return {k.decode(): v.decode(errors="replace")
            for k, v in client.hgetall(K.job(job_id)).items()}


def error_of(client: redis.Redis, job_id: str) -> dict[str, Any]:
    return dict(json.loads(job_record(client, job_id)["error"]))


class Proxy:
    """A TCP proxy on loopback in front of UPSTREAM_PORT: optionally TLS on the client
    side (TLS_CONTEXT, a server context), optionally DELAY_S added to every chunk it
    forwards in either direction (a slow network). Counts the connections it accepted."""

    def __init__(self, upstream_port: int, *, delay_s: float = 0.0,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.upstream_port = upstream_port
        self.delay_s = delay_s
        self.tls_context = tls_context
        self.accepted = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept_loop, daemon=True, name="proxy").start()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.close()
                except OSError:
                    pass

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            if self.tls_context is not None:
                client = self.tls_context.wrap_socket(client, server_side=True)
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except (OSError, ssl.SSLError):
            client.close()
            return
        with self._lock:
            self.accepted += 1
            self._sockets += [client, upstream]
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.delay_s:
                    time.sleep(self.delay_s)
                dst.sendall(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.close()
                except OSError:
                    pass


class TLSProxyProcess:
    """A TLS-terminating Proxy in a process of its own (python -m tests.faults.common)."""

    def __init__(self, upstream_port: int, cert: Path, key: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.common", str(upstream_port), str(cert),
             str(key)], cwd=Path(__file__).parent.parent.parent, stdout=subprocess.PIPE,
            text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def accepted(self) -> int:
        """Connections accepted so far (asks the proxy process)."""
        self.proc.send_signal(signal.SIGUSR1)
        assert self.proc.stdout is not None
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self) -> TLSProxyProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve_tls_proxy(upstream_port: int, cert: str, key: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    proxy = Proxy(upstream_port, tls_context=context)
    signal.signal(signal.SIGUSR1, lambda *_: print(proxy.accepted, flush=True))
    print(proxy.port, flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    _serve_tls_proxy(int(sys.argv[1]), sys.argv[2], sys.argv[3])
