"""Which kind of Redis deployment a URL names, read from the URL alone (no connection).

  redis://[[USER]:PASSWORD@]HOST:PORT[/DB]           one server (also rediss:// for TLS,
  unix://[[USER]:PASSWORD@]/PATH[?db=DB]              and a unix socket), as redis-py reads it
  redis+cluster://[[USER]:PASSWORD@]HOST:PORT,HOST:PORT/
                                                     a Redis Cluster: some of its nodes to
                                                     learn the others from; database 0 only
  redis+sentinel://[[USER]:PASSWORD@]HOST:PORT,HOST:PORT/SERVICE[/DB]
                                                     the master Sentinels watch as SERVICE;
                                                     the password is the master's (and its
                                                     replicas'); ?sentinel_username= and
                                                     ?sentinel_password= are the Sentinels'

``rediss+cluster://`` and ``rediss+sentinel://`` speak TLS to every node (and Sentinel).
Other query arguments (``ssl_ca_certs``, ``ssl_cert_reqs``, ``socket_timeout``, ...) apply
to each node's connections, as redis-py reads them in a one-server URL. A host may be an
IPv6 address in brackets. `parse_deployment` raises ValueError saying what is wrong with
a URL (config_keys.py turns it into a ConfigError naming where the URL came from).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlencode

Kind = Literal["single", "cluster", "sentinel"]
SINGLE_SCHEMES = ("redis", "rediss", "unix")
MANY_NODE_SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis+cluster": ("cluster", False), "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False), "rediss+sentinel": ("sentinel", True)}
SCHEMES = (*SINGLE_SCHEMES, *MANY_NODE_SCHEMES)
SENTINEL_QUERY_KEYS = ("sentinel_username", "sentinel_password")


@dataclass(frozen=True)
class Deployment:
    """A URL read as a deployment. For one server, only `kind` and `url` matter (redis-py
    reads the URL itself); for the others, the parts below."""

    kind: Kind
    url: str
    tls: bool = False
    addresses: tuple[tuple[str, int], ...] = ()  # the cluster nodes, or the Sentinels
    service: str = ""  # the master's name with the Sentinels
    db: int = 0
    userinfo: str = ""  # "USER:PASSWORD@" as written (percent-encoded), or ""
    query: str = ""  # the query arguments for each node's connections
    sentinel_auth: dict[str, str] = field(default_factory=dict)  # username, password

    def node_url(self, host: str, port: int) -> str:
        """A one-server URL for the node at HOST:PORT, with this URL's credentials, TLS,
        database and query: redis-py reads each node's connection settings from it."""
        scheme = "rediss" if self.tls else "redis"
        shown_host = f"[{host}]" if ":" in host else host
        query = f"?{self.query}" if self.query else ""
        return f"{scheme}://{self.userinfo}{shown_host}:{port}/{self.db}{query}"


def parse_deployment(url: str) -> Deployment:
    """The deployment URL names; ValueError (one line, the URL shown without password)
    when it is malformed."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ValueError(f"a URL starting with {', '.join(s + '://' for s in SCHEMES)}")
    if scheme.lower() in SINGLE_SCHEMES:
        return Deployment("single", url)
    kind: Kind
    kind, tls = MANY_NODE_SCHEMES[scheme.lower()]
    rest, _, query = rest.partition("?")
    authority, _, path = rest.partition("/")
    userinfo, _, hosts = authority.rpartition("@")
    addresses = tuple(_address(h) for h in hosts.split(","))
    parts = [p for p in path.split("/") if p]
    node_query, sentinel_auth = _split_query(query)
    if sentinel_auth and kind != "sentinel":
        raise ValueError("sentinel_username and sentinel_password go with redis+sentinel://")
    if kind == "cluster":
        if parts not in ([], ["0"]):
            raise ValueError(f"a Redis Cluster has database 0 only, so the URL's path is / "
                             f"(or /0), not /{path}")
        return Deployment(kind, url, tls, addresses, userinfo=userinfo + "@" * bool(userinfo),
                          query=node_query)
    if not parts or len(parts) > 2:
        raise ValueError("the path of a redis+sentinel:// URL is /SERVICE or /SERVICE/DB: "
                         "the name the Sentinels know the master by, and the database")
    db = parts[1] if len(parts) == 2 else "0"
    if not db.isdigit():
        raise ValueError(f"the database in a redis+sentinel:// URL is a number, not {db!r}")
    return Deployment(kind, url, tls, addresses, unquote(parts[0]), int(db),
                      userinfo + "@" * bool(userinfo), node_query, sentinel_auth)


def _address(text: str) -> tuple[str, int]:
    """HOST:PORT (or [IPV6]:PORT) as a pair; ValueError if it is not one."""
    host, colon, port = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"every node is HOST:PORT, separated by commas; got {text!r}")
    return host, int(port)


def _split_query(query: str) -> tuple[str, dict[str, str]]:
    """QUERY without the Sentinels' credentials, and those credentials."""
    node_args, sentinel_auth = [], {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in SENTINEL_QUERY_KEYS:
            sentinel_auth[key.removeprefix("sentinel_")] = value
        else:
            node_args.append((key, value))
    return urlencode(node_args), sentinel_auth
