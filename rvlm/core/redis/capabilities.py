"""What the server can do: the version gates a plan is checked against before anything runs.

FLOAT16/BFLOAT16 need RediSearch 2.10; INT8/UINT8 need the Redis 8.0 query engine; SVS-VAMANA
needs Redis 8.2's engine. The module version reported by a bundled search module decides, not
the server version alone (the embedded stack is Redis 8.2.3 with RediSearch 2.10).
"""

from __future__ import annotations

import contextlib
from typing import Any

import attrs
import redis

from rvlm.core.redis import routing
from rvlm.core.redis.resp import to_int, to_list, to_map, to_str
from rvlm.core.redis.topology import STANDALONE, detect_layout


def _version_text(v: int) -> str:
    return f"{v // 10000}.{(v // 100) % 100}.{v % 100}" if v else "absent"


@attrs.frozen(kw_only=True)
class Capabilities:
    """Server facts a plan records and the planner checks."""

    redis_version: str
    search_version: int  # e.g. 21005 for 2.10.5, 80200 for 8.2.0; 0 when absent
    json_version: int
    cluster: bool = False
    #: ``standalone``, ``coordinated`` or ``uncoordinated`` (:mod:`rvlm.core.redis.topology`)
    search_layout: str = "standalone"

    @property
    def search(self) -> bool:
        return self.search_version > 0

    @property
    def json(self) -> bool:
        return self.json_version > 0

    @property
    def float16(self) -> bool:
        """FLOAT16 and BFLOAT16 vectors (RediSearch 2.10+)."""
        return self.search_version >= 21000

    @property
    def int8(self) -> bool:
        """INT8 and UINT8 vectors (the Redis 8.0 query engine)."""
        return self.search_version >= 80000

    @property
    def svs_vamana(self) -> bool:
        """The SVS-VAMANA algorithm (Redis 8.2's engine)."""
        return self.search_version >= 80200

    @property
    def aliases(self) -> bool:
        return self.search

    @property
    def datatypes(self) -> tuple[str, ...]:
        """Vector datatypes this server indexes."""
        out = ["float32", "float64"]
        if self.float16:
            out += ["float16", "bfloat16"]
        if self.int8:
            out += ["int8", "uint8"]
        return tuple(out)

    @property
    def algorithms(self) -> tuple[str, ...]:
        return ("flat", "hnsw", "svs-vamana") if self.svs_vamana else ("flat", "hnsw")

    def to_dict(self) -> dict[str, Any]:
        """The plan's ``server`` section."""
        return {
            "redis_version": self.redis_version,
            "search_version": _version_text(self.search_version),
            "json_version": _version_text(self.json_version),
            "cluster": self.cluster,
            "search_layout": self.search_layout,
            "datatypes": list(self.datatypes),
            "algorithms": list(self.algorithms),
        }


def detect(client: redis.Redis) -> Capabilities:
    """Ask the server (INFO server, MODULE LIST, INFO cluster; on a cluster, one primary, and
    whether its search module has a coordinator)."""
    cluster_client = client
    client = routing.primaries(client)[0][1]  # a node: these commands have no key
    server = to_map(client.info("server"))
    version = to_str(server.get("redis_version", ""))
    search = 0
    json = 0
    try:
        modules = to_list(client.execute_command("MODULE", "LIST"))
    except redis.ResponseError:
        modules = []
    for raw in modules:
        m = to_map(raw)
        name = to_str(m.get("name", "")).lower()
        ver = to_int(m.get("ver"))
        if name in ("search", "ft", "searchlight"):
            search = ver
        elif name in ("rejson", "json"):
            json = ver
    if not search and version.split(".")[0].isdigit() and int(version.split(".")[0]) >= 8:
        # Redis 8 ships the query engine built in; it may not be listed as a module.
        with contextlib.suppress(redis.ResponseError):
            client.execute_command("FT._LIST")
            major, minor, *_ = [*version.split("."), "0", "0"]
            search = int(major) * 10000 + int(minor) * 100
    cluster = False
    with contextlib.suppress(redis.RedisError):
        cluster = bool(to_int(to_map(client.info("cluster")).get("cluster_enabled", 0)))
    layout = detect_layout(cluster_client, cluster) if search else STANDALONE
    return Capabilities(redis_version=version, search_version=search, json_version=json,
                        cluster=cluster, search_layout=layout)
