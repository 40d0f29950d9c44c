"""Where a multi-index run stands: the ``batch state`` file, checkpointed after every step.

Per index ``pending``, ``in_progress``, ``succeeded``, ``failed`` or ``skipped``, with the
error, times, documents and its backup dir (``<backup-dir>/<index>/``). It is rewritten
atomically (temp file, fsync, rename) after every step, so a crash at any instant leaves a
state that ``rvlm batch resume`` continues. One process at a time uses a state file
(:func:`state_lock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from rvlm.core.errors import RvlmError
from rvlm.core.migrate.report import now_iso
from rvlm.core.multi.plan import entry_from_dict
from rvlm.core.schema.yaml_format import dump_yaml, load_yaml
from rvlm.core.storage.files import atomic_write_text
from rvlm.core.storage.redisvl import is_redisvl_batch_state, redisvl_batch_state_advice

BATCH_STATE_VERSION = 1
INDEX_STATUSES = ("pending", "in_progress", "succeeded", "failed", "skipped")


@attrs.define(kw_only=True)
class IndexState:
    """Where one index of a multi-index run stands."""

    name: str
    status: str = "pending"
    plan_path: str | None = None
    backup_dir: str | None = None
    error: str | None = None
    refused: bool = False
    skip_reason: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_seconds: float = 0.0
    documents: int = 0
    documents_rewritten: int = 0
    report_path: str | None = None
    attempts: int = 0
    resumed: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = attrs.asdict(self)
        out["duration_seconds"] = round(self.duration_seconds, 3)
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str) -> IndexState:
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise RvlmError(f"{where}: each index needs a name")
        if data.get("status") not in INDEX_STATUSES:
            raise RvlmError(f"{where}: unknown status {data.get('status')!r}")
        return entry_from_dict(cls, data, where, "index state")


@attrs.define(kw_only=True)
class BatchState:
    """The checkpoint of a multi-index run (see the module docstring).

    Besides rvlm's ``indexes`` it writes RedisVL's keys (``plan_path``, ``remaining``,
    ``completed``, ``current_index``) as derived views, so existing tooling can read it.
    """

    batch_id: str
    plan_path: str
    plan_fingerprint: str
    backup_dir: str
    report_dir: str
    failure_policy: str
    redis_url: str = ""
    accept_data_loss: bool = False
    started_at: str = attrs.field(factory=now_iso)
    updated_at: str = attrs.field(factory=now_iso)
    finished_at: str | None = None
    status: str = "running"
    indexes: list[IndexState] = attrs.field(factory=list)
    version: int = BATCH_STATE_VERSION

    def index(self, name: str) -> IndexState:
        for i in self.indexes:
            if i.name == name:
                return i
        raise KeyError(name)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(INDEX_STATUSES, 0)
        for i in self.indexes:
            out[i.status] += 1
        return out

    def overall(self) -> str:
        """``completed``, ``partial_failure``, ``failed`` (when finished) or ``running``."""
        applicable = [i for i in self.indexes if i.status != "skipped"]
        ok = sum(1 for i in applicable if i.status == "succeeded")
        if ok == len(applicable):
            return "completed"
        if any(i.status in ("pending", "in_progress") for i in applicable) and \
                not any(i.status == "failed" for i in applicable):
            return "running"
        return "partial_failure" if ok else "failed"

    def to_dict(self) -> dict[str, Any]:
        current = [i.name for i in self.indexes if i.status == "in_progress"]
        return {
            "version": self.version,
            "batch_id": self.batch_id,
            "plan_path": self.plan_path,
            "plan_fingerprint": self.plan_fingerprint,
            "backup_dir": self.backup_dir,
            "report_dir": self.report_dir,
            "failure_policy": self.failure_policy,
            "redis_url": self.redis_url,
            "accept_data_loss": self.accept_data_loss,
            "status": self.status,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "current_index": current[0] if current else None,
            "remaining": [i.name for i in self.indexes
                          if i.status in ("pending", "in_progress")],
            "completed": [{"name": i.name, "status": i.status, "completed_at": i.finished_at,
                           "report_path": i.report_path, "error": i.error or i.skip_reason}
                          for i in self.indexes if i.status in ("succeeded", "failed",
                                                                 "skipped")],
            "indexes": [i.to_dict() for i in self.indexes],
        }

    def save(self, path: str | Path) -> None:
        """Checkpoint atomically (temp + fsync + rename)."""
        self.updated_at = now_iso()
        atomic_write_text(Path(path), dump_yaml(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> BatchState:
        p = Path(path)
        if not p.exists():
            raise RvlmError(f"{p}: no such batch state file")
        data = load_yaml(p)
        if is_redisvl_batch_state(data):
            raise RvlmError(redisvl_batch_state_advice(data, str(p)))
        if not isinstance(data, dict) or data.get("version") != BATCH_STATE_VERSION \
                or not isinstance(data.get("indexes"), list):
            raise RvlmError(f"{p}: not an rvlm batch state file (made by 'rvlm batch apply')")
        try:
            return cls(
                version=data["version"],
                batch_id=str(data["batch_id"]),
                plan_path=str(data["plan_path"]),
                plan_fingerprint=str(data.get("plan_fingerprint", "")),
                backup_dir=str(data["backup_dir"]),
                report_dir=str(data["report_dir"]),
                failure_policy=str(data.get("failure_policy", "fail_fast")),
                redis_url=str(data.get("redis_url") or ""),
                accept_data_loss=bool(data.get("accept_data_loss", False)),
                started_at=str(data.get("started_at") or now_iso()),
                updated_at=str(data.get("updated_at") or now_iso()),
                finished_at=data.get("finished_at"),
                status=str(data.get("status", "running")),
                indexes=[IndexState.from_dict(d, f"{p}: indexes[{n}]")
                         for n, d in enumerate(data["indexes"])],
            )
        except KeyError as exc:
            raise RvlmError(f"{p}: malformed batch state (missing {exc.args[0]!r})") from None


def state_in_use(state_path: str | Path) -> bool:
    """True when a live ``rvlm batch`` process holds the state file's lock."""
    lock_path = Path(state_path).with_name(Path(state_path).name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextlib.contextmanager
def state_lock(state_path: Path) -> Iterator[None]:
    """One run per state file: an exclusive ``flock`` on ``<state>.lock`` (released by the
    kernel if the process dies)."""
    lock_path = state_path.with_name(state_path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise RvlmError(f"another 'rvlm batch' run (pid {holder}) is using {state_path}"
                            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


__all__ = ["INDEX_STATUSES", "BatchState", "IndexState", "state_in_use", "state_lock"]
