"""pytest fixtures for a real Redis Cluster (loaded by :mod:`rvlm.testing.pytest_plugin`).

Each cluster starts when the first test asks for it (about 2.5 s) and stops at the end of the
session; a test that does not use one never starts one.

* ``redis_cluster`` (session): an :class:`~rvlm.embedded.cluster.EmbeddedCluster` of 3
  primaries (Search and JSON on every node).
* ``redis_cluster_replicas`` (session): 3 primaries with one replica each, for failover tests.
  A test may fail a primary over; the next test sees the promoted node as a primary (ask the
  cluster with ``primary_servers()``, never assume the first three ports).
* ``cluster_client``: a bytes ``RedisCluster`` on ``redis_cluster``, every primary flushed and
  every index dropped before the test; RESP2 or RESP3 per ``RVLM_PROTOCOL``.
* ``cluster_replicas_client``: the same on ``redis_cluster_replicas``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from rvlm.embedded.cluster import EmbeddedCluster


def _cluster(replicas: int) -> Iterator[EmbeddedCluster]:
    from rvlm.embedded.cluster import EmbeddedCluster

    directory = Path(tempfile.mkdtemp(prefix="rvlm-test-cluster-"))
    cluster = EmbeddedCluster(primaries=3, replicas=replicas, directory=directory)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.wipe()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[EmbeddedCluster]:
    """A real cluster of 3 primaries with the Search and JSON modules, for this session."""
    yield from _cluster(replicas=0)


@pytest.fixture(scope="session")
def redis_cluster_replicas() -> Iterator[EmbeddedCluster]:
    """A real cluster of 3 primaries and 3 replicas (one each), for this session."""
    yield from _cluster(replicas=1)


def _clean_client(cluster: EmbeddedCluster) -> Iterator[Any]:
    kwargs: dict[str, Any] = {}
    if os.environ.get("RVLM_PROTOCOL"):
        kwargs["protocol"] = int(os.environ["RVLM_PROTOCOL"])
    cluster.wait_ok()
    cluster.flush()
    client = cluster.client(**kwargs)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def cluster_client(redis_cluster: EmbeddedCluster) -> Iterator[Any]:
    """A bytes ``redis.cluster.RedisCluster`` on a clean ``redis_cluster``."""
    yield from _clean_client(redis_cluster)


@pytest.fixture
def cluster_replicas_client(redis_cluster_replicas: EmbeddedCluster) -> Iterator[Any]:
    """A bytes ``redis.cluster.RedisCluster`` on a clean ``redis_cluster_replicas``."""
    yield from _clean_client(redis_cluster_replicas)
