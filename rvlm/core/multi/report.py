"""What a multi-index run did: the ``batch report`` file (``<report-dir>/batch_report.yaml``).

Per index result, duration, documents and error, and the overall status: ``completed`` (every
applicable index succeeded), ``partial_failure`` (some did) or ``failed`` (none did).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from rvlm.core.migrate.report import now_iso
from rvlm.core.multi.state import BatchState
from rvlm.core.schema.yaml_format import dump_yaml
from rvlm.core.storage.files import atomic_write_text

BATCH_REPORT_VERSION = 1
REPORT_NAME = "batch_report.yaml"


@attrs.frozen(kw_only=True)
class BatchSummary:
    """The counts of a multi-index run (RedisVL's ``summary``: ``report.summary.successful``,
    ``report.summary.total_indexes``, ...)."""

    total_indexes: int = 0
    applicable: int = 0
    successful: int = 0
    failed: int = 0
    skipped: int = 0
    not_run: int = 0
    in_progress: int = 0
    documents: int = 0
    total_duration_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define(kw_only=True)
class BatchReport:
    """What a multi-index run did: per index result, duration, documents; the overall status."""

    batch_id: str
    status: str
    started_at: str
    completed_at: str
    indexes: list[dict[str, Any]]
    state_path: str = ""
    plan_path: str = ""
    backup_dir: str = ""
    report_path: str | None = None
    version: int = BATCH_REPORT_VERSION

    @property
    def succeeded(self) -> bool:
        """True when every applicable index succeeded."""
        return self.status == "completed"

    @property
    def summary(self) -> BatchSummary:
        """How many indexes succeeded, failed, were skipped or not run; documents; seconds."""
        by = [i["result"] for i in self.indexes]
        return BatchSummary(
            total_indexes=len(self.indexes),
            applicable=sum(1 for r in by if r != "skipped"),
            successful=by.count("succeeded"),
            failed=by.count("failed"),
            skipped=by.count("skipped"),
            not_run=by.count("not_run"),
            in_progress=by.count("in_progress"),
            documents=sum(int(i.get("documents") or 0) for i in self.indexes
                          if i["result"] == "succeeded"),
            total_duration_seconds=round(sum(float(i.get("duration_seconds") or 0)
                                             for i in self.indexes), 3),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "batch_id": self.batch_id,
            "status": self.status,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "summary": self.summary.to_dict(),
            "indexes": self.indexes,
            "state_path": self.state_path,
            "plan_path": self.plan_path,
            "backup_dir": self.backup_dir,
        }

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict())

    def write(self, path: str | Path) -> None:
        atomic_write_text(Path(path), self.to_yaml())

    @classmethod
    def from_state(cls, state: BatchState, state_path: str | Path = "") -> BatchReport:
        rows = []
        for i in state.indexes:
            result = {"pending": "not_run"}.get(i.status, i.status)
            rows.append({
                "name": i.name,
                "result": result,
                "status": result,
                "error": i.error if i.status != "skipped" else None,
                "skip_reason": i.skip_reason,
                "duration_seconds": round(i.duration_seconds, 3),
                "documents": i.documents,
                "documents_rewritten": i.documents_rewritten,
                "attempts": i.attempts,
                "resumed": i.resumed,
                "started_at": i.started_at,
                "finished_at": i.finished_at,
                "backup_dir": i.backup_dir,
                "report_path": i.report_path,
            })
        overall = state.overall()
        if overall == "running":  # unfinished (interrupted): never "completed"
            ok = any(i.status == "succeeded" for i in state.indexes)
            overall = "partial_failure" if ok else "failed"
        return cls(batch_id=state.batch_id, status=overall, started_at=state.started_at,
                   completed_at=state.finished_at or now_iso(), indexes=rows,
                   state_path=str(state_path), plan_path=state.plan_path,
                   backup_dir=state.backup_dir)


__all__ = ["REPORT_NAME", "BatchReport", "BatchSummary"]
