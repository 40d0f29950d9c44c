"""Which HNSW/FLAT parameter values does this server accept, refuse, or crash on?

Each probe runs on a throw-away embedded server (a crash takes the server down, so a new one is
started after it): FT.CREATE with the value, FT.INFO, a few documents, a KNN query, FT.INFO
again, FT.DROPINDEX. The answer is ``refused`` (the server said no: rvlm's check of the exact
target before the drop catches it), ``ok``, or ``CRASH at <step>``. The bounds in
``rvlm.core.schema.model.VECTOR_BOUNDS`` come from this script; re-run it for a new server
version::

    python bench/probe_vector_bounds.py            # the default probe list
    python bench/probe_vector_bounds.py --port 7801

Not run by pytest (a crashing server is slow to detect and to replace).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import redis

from rvlm.embedded.server import EmbeddedServer, free_port

#: (algorithm, extra parameters, documents to add)
PROBES: list[tuple[str, list[str], int]] = [
    ("HNSW", ["M", "0"], 50),
    ("HNSW", ["M", "1"], 50),
    ("HNSW", ["M", "2"], 50),
    ("HNSW", ["M", "32767"], 50),
    ("HNSW", ["M", "32768"], 50),
    ("HNSW", ["M", "99999999999"], 50),
    ("HNSW", ["EF_CONSTRUCTION", "0"], 50),
    ("HNSW", ["EF_CONSTRUCTION", "1"], 50),
    ("HNSW", ["EF_CONSTRUCTION", "4294967295"], 3000),
    ("HNSW", ["EF_RUNTIME", "0"], 50),
    ("HNSW", ["EF_RUNTIME", "4294967295"], 3000),
    ("HNSW", ["EPSILON", "-1"], 50),
    ("HNSW", ["EPSILON", "0"], 50),
    ("HNSW", ["INITIAL_CAP", "0"], 50),
    ("HNSW", ["INITIAL_CAP", "99999999999"], 50),
    ("HNSW", ["BLOCK_SIZE", "64"], 50),
    ("FLAT", ["BLOCK_SIZE", "0"], 50),
    ("FLAT", ["BLOCK_SIZE", "1"], 50),
    ("FLAT", ["BLOCK_SIZE", "4294967296"], 50),
    ("FLAT", ["M", "16"], 50),
    ("FLAT", ["EF_RUNTIME", "10"], 50),
]
DIM = 4


class Probe:
    """One embedded server at a time, replaced after a crash."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.work = Path(tempfile.mkdtemp(prefix="rvlm-probe-"))
        self.server: EmbeddedServer | None = None

    def client(self) -> redis.Redis:
        if self.server is None or not self.server.running():
            shutil.rmtree(self.work / "server", ignore_errors=True)
            self.server = EmbeddedServer(port=self.port, directory=self.work / "server")
            self.server.start()
        return redis.Redis(port=self.port, socket_timeout=30)

    def run(self, algorithm: str, params: list[str], docs: int) -> str:
        c = self.client()
        c.flushall()
        for name in c.execute_command("FT._LIST"):
            c.execute_command("FT.DROPINDEX", name)
        args = ["TYPE", "FLOAT32", "DIM", str(DIM), "DISTANCE_METRIC", "L2", *params]
        try:
            c.execute_command("FT.CREATE", "p", "ON", "HASH", "PREFIX", "1", "p:", "SCHEMA",
                              "v", "VECTOR", algorithm, str(len(args)), *args)
        except redis.ResponseError as exc:
            return f"refused ({exc})"
        step = "FT.INFO"
        rng = np.random.default_rng(0)
        try:
            c.execute_command("FT.INFO", "p")
            step = "insert"
            pipe = c.pipeline(transaction=False)
            for i in range(docs):
                pipe.hset(f"p:{i}", "v", rng.random(DIM, dtype=np.float32).tobytes())
            pipe.execute()
            step = "KNN query"
            c.execute_command("FT.SEARCH", "p", "*=>[KNN 5 @v $q]", "PARAMS", "2", "q",
                              np.full(DIM, 0.5, dtype=np.float32).tobytes(), "DIALECT", "2")
            step = "FT.INFO after"
            c.execute_command("FT.INFO", "p")
            step = "FT.DROPINDEX"
            c.execute_command("FT.DROPINDEX", "p")
        except redis.ResponseError as exc:
            return f"accepted, then error at {step} ({exc})"
        except (redis.ConnectionError, redis.TimeoutError):
            time.sleep(0.5)
            return f"CRASH at {step}"
        return "ok"

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        shutil.rmtree(self.work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port for the throw-away servers")
    args = parser.parse_args()
    probe = Probe(args.port or free_port())
    try:
        for algorithm, params, docs in PROBES:
            print(f"{algorithm:5} {' '.join(params):28} {docs:5} docs: "
                  f"{probe.run(algorithm, params, docs)}", flush=True)
    finally:
        probe.close()


if __name__ == "__main__":
    main()
