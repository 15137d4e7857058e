"""Throwaway deployments bigger than one server, for tests and benchmarks: a Redis Cluster
(`TestCluster`: 3 masters with a replica each) and a master with a replica watched by
three Sentinels (`TestSentinel`), on loopback, from Debian's `redis-server` (PATH), each
server a `TestServer` in a folder of its own.

Both start in about a second: the cluster is formed by hand (slots assigned, nodes met,
replicas attached) rather than by `redis-cli --cluster create`, which polls once a second
while the nodes gossip; the Sentinels start once the replica is in sync, so they find it
at once. Both are ready for traffic when `start` returns; a failover needs the Sentinels
to have found each other too (`TestSentinel.wait_until_failover_ready`, a few seconds).
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import redis

from .errors import RedisUnavailable
from .server_process import HOST, port_is_free
from .testserver import TestServer

HASH_SLOTS = 16384
CLUSTER_NODE_TIMEOUT_MS = 3000  # how long a silent master takes to be failed over
SERVICE = "mymaster"  # the Sentinels' name for the master they watch
SENTINEL_DOWN_AFTER_MS = 1000
SENTINEL_FAILOVER_TIMEOUT_MS = 5000
FORM_TIMEOUT_S = 20.0
POLL_S = 0.02
# a replica's first sync starts at once (Redis waits 5 s by default for more replicas),
# and its offset moves within a second (a cluster lists a replica in CLUSTER SLOTS only
# once its offset is past 0, and an idle master pings its replicas every 10 s by default)
SYNC_AT_ONCE = {"repl-diskless-sync-delay": "0", "repl-ping-replica-period": "1"}


def redis_server_binary() -> Path:
    """Debian's redis-server (cluster and Sentinel modes), or RedisUnavailable."""
    found = shutil.which("redis-server")
    if not found:
        raise RedisUnavailable("cluster and Sentinel tests need redis-server on PATH: "
                               "apt-get install redis-server redis-tools redis-sentinel")
    return Path(found)


def node_client(port: int, **kwargs: Any) -> redis.Redis:
    """A plain client of one server on loopback, for setting deployments up."""
    return redis.Redis(host=HOST, port=port, socket_timeout=5, **kwargs)


def _await(predicate: Callable[[], bool], what: str, timeout_s: float = FORM_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RedisUnavailable(f"test deployment: {what} not within {timeout_s:g} s")
        time.sleep(POLL_S)


def _info(port: int, section: str) -> dict[str, Any]:
    with node_client(port) as client:
        return dict(client.info(section))


# A cluster node also listens on its port + 10000 (the cluster bus). Both are drawn below the
# kernel's ephemeral range: a port from that range that was free when chosen can be handed to
# any outgoing connection or free_port() before the node binds it.
CLUSTER_BUS_OFFSET = 10000
LOWEST_CLUSTER_PORT = 10000


def ephemeral_ports_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; macOS starts at 49152


CLUSTER_PORTS = range(LOWEST_CLUSTER_PORT,
                      max(ephemeral_ports_start(), 2 * CLUSTER_BUS_OFFSET + 1) - CLUSTER_BUS_OFFSET)


def cluster_node_port(avoid: Collection[int] = ()) -> int:
    """A port where a cluster node can listen, its bus port free too, neither of them a
    port (or bus port) in AVOID."""
    used = {p for port in avoid for p in (port, port + CLUSTER_BUS_OFFSET)}
    while True:
        port = random.choice(CLUSTER_PORTS)
        bus = port + CLUSTER_BUS_OFFSET
        if not {port, bus} & used and port_is_free(port) and port_is_free(bus):
            return port


class TestCluster:
    """A Redis Cluster of MASTERS masters, each with REPLICAS replicas."""

    __test__ = False

    def __init__(self, dir: Path, *, masters: int = 3, replicas: int = 1) -> None:
        binary = redis_server_binary()
        options = {"cluster-enabled": "yes", "cluster-config-file": "nodes.conf",
                   "cluster-node-timeout": str(CLUSTER_NODE_TIMEOUT_MS), **SYNC_AT_ONCE}
        self.masters_count = masters
        # each node picks its port as it starts, away from the nodes started before it
        self.servers = [TestServer(Path(dir) / f"node{i}", binary=binary, options=options,
                                   pick_port=lambda: cluster_node_port(avoid=self.ports))
                        for i in range(masters * (1 + replicas))]

    @property
    def url(self) -> str:
        seeds = ",".join(f"{HOST}:{s.port}" for s in self.servers[:2])
        return f"redis+cluster://{seeds}/"

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    def start(self) -> TestCluster:
        try:
            for server in self.servers:
                server.start()
            self._form()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.kill()  # nothing to save, and a cluster node's SHUTDOWN may wait

    def _form(self) -> None:
        ports = self.ports
        masters, replicas = ports[:self.masters_count], ports[self.masters_count:]
        per_master = HASH_SLOTS // len(masters)
        for i, port in enumerate(masters):
            last = HASH_SLOTS - 1 if i == len(masters) - 1 else (i + 1) * per_master - 1
            with node_client(port) as client:
                client.execute_command("CLUSTER ADDSLOTSRANGE", i * per_master, last)
                client.execute_command("CLUSTER SET-CONFIG-EPOCH", i + 1)
        for port in ports:  # every node meets every other: no waiting for gossip
            with node_client(port) as client:
                for other in ports:
                    if other != port:
                        client.execute_command("CLUSTER MEET", HOST, other)
        _await(lambda: all(self._known(p) == len(ports) for p in ports), "nodes meeting")
        ids = {port: self._myid(port) for port in masters}
        for i, port in enumerate(replicas):
            with node_client(port) as client:
                client.execute_command("CLUSTER REPLICATE", ids[masters[i % len(masters)]])
        _await(lambda: all(_info(p, "replication").get("master_link_status") == "up"
                           for p in replicas), "the replicas syncing")
        for port in masters:  # moves the replicas' offsets past 0 (see SYNC_AT_ONCE)
            with node_client(port) as client:
                client.flushall()  # a write: replicated
        _await(self._settled, "the cluster agreeing on its slots and replicas")

    def _known(self, port: int) -> int:
        """How many nodes PORT's node knows by their ids (their handshake done)."""
        with node_client(port, decode_responses=True) as client:
            nodes = client.execute_command("CLUSTER NODES")
        return sum(1 for node in nodes.values() if "handshake" not in node["flags"])

    def _myid(self, port: int) -> str:
        with node_client(port) as client:
            return str(client.execute_command("CLUSTER MYID").decode())

    def _settled(self) -> bool:
        """Every node sees the cluster ok with the same slots, each with its replicas, and
        every replica is in sync."""
        views = []
        for port in self.ports:
            with node_client(port) as client:
                if client.execute_command("CLUSTER INFO")["cluster_state"] != "ok":
                    return False
                views.append(sorted(
                    (int(s[0]), int(s[1]), len(s) - 3)
                    for s in client.execute_command("CLUSTER SLOTS")))
        replicas = len(self.servers) // self.masters_count - 1
        synced = all(_info(p, "replication").get("master_link_status") == "up"
                     for p in self.ports if _info(p, "replication")["role"] == "slave")
        return synced and all(v == views[0] for v in views) and all(
            n == replicas for _, _, n in views[0])

    def master_ports(self) -> list[int]:
        return [p for p in self.ports if _info(p, "replication")["role"] == "master"]

    def port_of_slot(self, slot: int) -> int:
        """The port of the master serving SLOT now."""
        with node_client(self.master_ports()[0]) as client:
            for lo, hi, master, *_ in client.execute_command("CLUSTER SLOTS"):
                if int(lo) <= slot <= int(hi):
                    return int(master[1])
        raise AssertionError(f"slot {slot} is served by no master")

    def begin_migration(self, slot: int, to_port: int) -> None:
        """Mark SLOT as moving from its master to the master at TO_PORT (IMPORTING there,
        MIGRATING here), as `redis-cli --cluster reshard` does before moving keys."""
        source = self.port_of_slot(slot)
        with node_client(source) as src, node_client(to_port) as dst:
            dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", self._myid(source))
            src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", self._myid(to_port))

    def move_keys(self, slot: int, to_port: int, count: int, batch: int = 10,
                  containing: str = "") -> int:
        """Move up to COUNT keys of SLOT (those CONTAINING a text, if given), newest first
        in MIGRATE batches of BATCH, as redis-cli moves them; how many moved."""
        moved = 0
        with node_client(self.port_of_slot(slot)) as src:
            while moved < count:
                found = src.execute_command("CLUSTER GETKEYSINSLOT", slot, 2**31)
                keys = [k for k in map(str, found) if containing in k][:min(batch, count - moved)]
                if not keys:
                    break
                src.execute_command("MIGRATE", HOST, to_port, "", 0, 5000, "KEYS", *keys)
                moved += len(keys)
        return moved

    def end_migration(self, slot: int, to_port: int) -> None:
        """Give SLOT to the master at TO_PORT on every master (it first, then the source)."""
        source = self.port_of_slot(slot)
        target = self._myid(to_port)
        for port in [to_port, source, *(p for p in self.master_ports() if p not in
                                         (to_port, source))]:
            with node_client(port) as client:
                client.execute_command("CLUSTER SETSLOT", slot, "NODE", target)

    def migrate_slot(self, slot: int, to_port: int, batch: int = 10) -> int:
        """Move SLOT and all its keys to the master at TO_PORT; how many keys moved."""
        self.begin_migration(slot, to_port)
        moved = self.move_keys(slot, to_port, 2**31, batch)
        self.end_migration(slot, to_port)
        return moved

    def flush(self) -> None:
        """Empty every master (their replicas follow)."""
        for port in self.master_ports():
            with node_client(port) as client:
                client.flushall()


class TestSentinel:
    """A master with REPLICAS replicas, watched by SENTINELS Sentinels under SERVICE."""

    __test__ = False

    def __init__(self, dir: Path, *, sentinels: int = 3, replicas: int = 1,
                 options: dict[str, str] | None = None) -> None:
        binary = redis_server_binary()
        self.options = {**SYNC_AT_ONCE, **(options or {})}
        self.master = TestServer(Path(dir) / "master", binary=binary, options=self.options)
        self.replicas = [TestServer(Path(dir) / f"replica{i}", binary=binary,
                                    options=dict(self.options)) for i in range(replicas)]
        self.replica = self.replicas[0]
        self.sentinels = [TestServer(Path(dir) / f"sentinel{i}", binary=binary, sentinel=True)
                          for i in range(sentinels)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    @property
    def data_servers(self) -> list[TestServer]:
        return [self.master, *self.replicas]

    def start(self) -> TestSentinel:
        try:
            self.master.start()
            for replica in self.replicas:
                replica.options["replicaof"] = f"{HOST} {self.master.port}"
                replica.start()
            _await(lambda: all(_info(r.port, "replication").get("master_link_status") == "up"
                               for r in self.replicas), "the replicas syncing")
            quorum = len(self.sentinels) // 2 + 1
            for sentinel in self.sentinels:
                sentinel.config = (
                    f"sentinel monitor {SERVICE} {HOST} {self.master.port} {quorum}\n"
                    f"sentinel down-after-milliseconds {SERVICE} {SENTINEL_DOWN_AFTER_MS}\n"
                    f"sentinel failover-timeout {SERVICE} {SENTINEL_FAILOVER_TIMEOUT_MS}\n")
                sentinel.start()
            _await(lambda: all(self._master_seen_by(s) for s in self.sentinels),
                   "the Sentinels finding the master")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in [*self.sentinels, *self.replicas, self.master]:
            server.kill()

    def _master_seen_by(self, sentinel: TestServer) -> bool:
        with node_client(sentinel.port) as client:
            return client.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", SERVICE) is not None

    def _master_state(self, sentinel: TestServer) -> dict[str, Any]:
        with node_client(sentinel.port, decode_responses=True) as client:
            state: dict[str, Any] = client.execute_command("SENTINEL MASTER", SERVICE)
            return state

    def master_port(self) -> int:
        """The port of the master, as the first Sentinel says."""
        with node_client(self.sentinels[0].port) as client:
            _host, port = client.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", SERVICE)
            return int(port)

    def wait_until_failover_ready(self) -> None:
        """Wait until every Sentinel knows the replica and the other Sentinels (they announce
        themselves every 2 s), as a failover needs."""
        others = len(self.sentinels) - 1

        def ready(sentinel: TestServer) -> bool:
            state = self._master_state(sentinel)
            return (int(state["num-slaves"]) >= len(self.replicas)
                    and int(state["num-other-sentinels"]) >= others)

        _await(lambda: all(ready(s) for s in self.sentinels), "the Sentinels meeting")

    def failover(self) -> int:
        """SENTINEL FAILOVER; returns the new master's port once every Sentinel names it
        and it has taken the role."""
        old = self.master_port()
        with node_client(self.sentinels[0].port) as client:
            client.execute_command("SENTINEL FAILOVER", SERVICE)
        _await(lambda: self.master_port() != old, "the failover")
        new = self.master_port()
        _await(lambda: _info(new, "replication")["role"] == "master", "the new master")
        return new

    def flush(self) -> None:
        with node_client(self.master_port()) as client:
            client.flushall()
