"""The test deployments themselves: a cluster whose two queues live on two masters, each
with a replica in sync, and a Sentinel group that names its master; each is emptied
before a test."""

from __future__ import annotations

from redis.crc import key_slot

from sandboxrunner.keys import Keys
from sandboxrunner.testdeployments import TestCluster, TestSentinel, node_client
from tests.deployments import every_deployment, raw_client


def test_the_cluster_has_three_masters_each_with_a_synced_replica_and_the_queues_apart(
        redis_cluster: TestCluster) -> None:
    masters = redis_cluster.master_ports()
    assert len(masters) == 3 and len(redis_cluster.ports) == 6
    keys = Keys("sr")
    default, priority = (redis_cluster.port_of_slot(key_slot(keys.wait(q).encode()))
                         for q in ("default", "priority"))
    assert default != priority and {default, priority} <= set(masters)
    for port in set(redis_cluster.ports) - set(masters):
        with node_client(port) as replica:
            assert replica.info("replication")["master_link_status"] == "up"


def test_the_sentinels_name_the_master_and_its_replica_follows_it(
        redis_sentinel: TestSentinel) -> None:
    assert redis_sentinel.master_port() == redis_sentinel.master.port
    with node_client(redis_sentinel.replica.port) as replica:
        info = replica.info("replication")
    assert info["role"] == "slave" and info["master_port"] == redis_sentinel.master.port


@every_deployment
def test_each_kind_of_deployment_starts_empty_and_takes_writes(redis_url: str) -> None:
    client = raw_client(redis_url)
    try:
        for queue in ("default", "priority"):
            wait = Keys("sr").wait(queue)
            assert client.llen(wait) == 0
            client.lpush(wait, "x")
            assert client.llen(wait) == 1
    finally:
        client.close()
