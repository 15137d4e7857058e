"""The URL forms of a Redis Cluster and of a Sentinel-watched master: how they are read,
refused with one line naming where the URL came from, and shown without passwords."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandboxrunner.config import load_config, redact_url
from sandboxrunner.deployment import parse_deployment
from sandboxrunner.errors import ConfigError


def test_a_cluster_url_names_some_nodes_and_each_node_gets_its_credentials_and_tls() -> None:
    d = parse_deployment("rediss+cluster://app:s%40cret@10.0.0.1:7000,[::1]:7001/"
                         "?ssl_cert_reqs=required")
    assert (d.kind, d.tls, d.addresses) == ("cluster", True, (("10.0.0.1", 7000), ("::1", 7001)))
    assert d.node_url("::1", 7001) == \
        "rediss://app:s%40cret@[::1]:7001/0?ssl_cert_reqs=required"
    assert parse_deployment("redis+cluster://h:1").node_url("h", 1) == "redis://h:1/0"


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    d = parse_deployment("redis+sentinel://:pw@s1:26379,s2:26380/mymaster/2"
                         "?sentinel_password=spw&socket_timeout=3")
    assert (d.kind, d.service, d.db) == ("sentinel", "mymaster", 2)
    assert d.addresses == (("s1", 26379), ("s2", 26380))
    assert d.sentinel_auth == {"password": "spw"}
    assert d.node_url("m", 6379) == "redis://:pw@m:6379/2?socket_timeout=3"
    assert parse_deployment("redis+sentinel://s1:26379/mymaster").db == 0


def test_one_server_urls_are_left_to_redis_py() -> None:
    for url in ("redis://h:1/0", "rediss://:pw@h", "unix:///tmp/redis.sock"):
        assert parse_deployment(url).kind == "single"


@pytest.mark.parametrize("url, problem", [
    ("redis+cluster://h:7000/3", "a Redis Cluster has database 0 only"),
    ("redis+cluster://:secret@h:7000,h/", "every node is HOST:PORT"),
    ("redis+cluster:///", "every node is HOST:PORT"),
    ("redis+sentinel://:secret@h:26379", "the path of a redis+sentinel:// URL is /SERVICE"),
    ("redis+sentinel://h:26379/mymaster/x", "the database in a redis+sentinel:// URL is a"),
    ("redis+cluster://h:1/?sentinel_password=secret", "go with redis+sentinel://"),
])
def test_a_malformed_cluster_or_sentinel_url_is_refused_naming_where_it_came_from(
        tmp_path: Path, url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({}, project_dir=tmp_path, env={"REDIS_URL": url})
    message = str(info.value)
    assert message.startswith("environment REDIS_URL: ") and problem in message
    assert "secret" not in message and "\n" not in message


def test_cluster_and_sentinel_urls_are_accepted_as_configuration(tmp_path: Path) -> None:
    for url in ("redis+cluster://h:7000,h:7001/", "rediss+sentinel://s:26379/m/0"):
        assert load_config({"redis_url": url}, project_dir=tmp_path, env={}).redis_url == url


def test_passwords_of_the_nodes_and_of_the_sentinels_are_never_shown() -> None:
    shown = redact_url("redis+sentinel://u:pw1@s1:1,s2:2/m/0?sentinel_password=pw2&db=1")
    assert shown == "redis+sentinel://u:***@s1:1,s2:2/m/0?sentinel_password=***&db=1"
    assert redact_url("redis+cluster://:pw@h:1,h:2/") == "redis+cluster://:***@h:1,h:2/"
