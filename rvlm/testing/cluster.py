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

:class:`CommandRecorder` records which node received which command (``MONITOR``), for
contract tests of where commands go.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import tempfile
import threading
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


_ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b",
            b"\\": b"\\", b'"': b'"'}


def _unescape(text: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i:i + 1]
        if c != b"\\":
            out += c
            i += 1
            continue
        nxt = text[i + 1:i + 2]
        if nxt == b"x":
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        else:
            out += _ESCAPES.get(nxt, nxt)
            i += 2
    return bytes(out)


def parse_monitor_line(line: bytes) -> list[bytes] | None:
    """The arguments of one ``MONITOR`` line (``+<time> [<db> <addr>] "ARG" ...``), or None
    for a line that is not a command."""
    if not line.startswith(b"+") or b"]" not in line:
        return None
    return [_unescape(m.group(1)) for m in _ARG.finditer(line, line.index(b"]"))]


class CommandRecorder:
    """Records which node of a cluster received which command (``MONITOR`` on every node),
    for tests that check a contract about *where* rvlm sends commands::

        with CommandRecorder(cluster) as rec:
            ...
        rec.sent("FT.CREATE")  # {port: [[b"FT.CREATE", b"idx", ...], ...]}

    ``commands`` maps each node's port to the argument lists it received, in order (the
    recorder's own markers left out).
    """

    def __init__(self, cluster: EmbeddedCluster) -> None:
        self.cluster = cluster
        self.commands: dict[int, list[list[bytes]]] = {}
        self._marker = f"rvlm-recorder-{secrets.token_hex(4)}".encode()
        self._socks: dict[int, socket.socket] = {}
        self._threads: list[threading.Thread] = []
        self._seen: dict[int, threading.Event] = {}

    def __enter__(self) -> CommandRecorder:
        for node in self.cluster.nodes:
            if not node.running():
                continue
            sock = socket.create_connection(("127.0.0.1", node.port), timeout=10)
            sock.sendall(b"MONITOR\r\n")
            reader = sock.makefile("rb")
            if reader.readline().strip() != b"+OK":
                raise RuntimeError(f"MONITOR refused by node {node.port}")
            self._socks[node.port] = sock
            self.commands[node.port] = []
            self._seen[node.port] = threading.Event()
            t = threading.Thread(target=self._read, args=(node.port, reader), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _read(self, port: int, reader: Any) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in reader:
                args = parse_monitor_line(line.rstrip(b"\r\n"))
                if not args:
                    continue
                if args == [b"ECHO", self._marker]:
                    self._seen[port].set()
                    continue
                self.commands[port].append(args)

    def __exit__(self, *exc: object) -> None:
        # a marker sent after everything else: once each node's marker is read, every
        # earlier command of that node has been recorded
        for port in self._socks:
            c = self.cluster.node(port).client()
            try:
                c.execute_command("ECHO", self._marker)
            finally:
                c.close()
        for seen in self._seen.values():
            seen.wait(10)
        for sock in self._socks.values():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for t in self._threads:
            t.join(5)

    def sent(self, name: str) -> dict[int, list[list[bytes]]]:
        """The ``name`` commands (case-insensitive) each node received; nodes that received
        none are left out."""
        want = name.upper().encode()
        out = {port: [a for a in cmds if a[0].upper() == want]
               for port, cmds in self.commands.items()}
        return {port: cmds for port, cmds in out.items() if cmds}
