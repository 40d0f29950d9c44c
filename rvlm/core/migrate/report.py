"""The migration report: what ``apply``, ``validate`` and ``rollback`` hand back and write.

The YAML keeps RedisVL's keys (``version``, ``mode``, ``source_index``, ``target_index``,
``result``, ``started_at``, ``finished_at``, ``timings``, ``validation``, ``benchmark_summary``,
``backup``, ``warnings``, ``manual_actions``) and adds rvlm's: ``quality`` (per vector field
whose KNN answers can change, the measured recall@k, its 5th percentile and how many queries lost
their first neighbour) and, under ``rvlm``, documents per second, documents and bytes
rewritten, batches, workers, whether the run resumed or rolled itself back.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs

from rvlm.core.plugins.checks import CheckResult
from rvlm.core.schema.yaml_format import dump_yaml

REPORT_VERSION = 1


def now_iso() -> str:
    """The current UTC time, ISO 8601 with a Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@attrs.define(kw_only=True)
class ValidationResult:
    """The outcome of post-migration validation (RedisVL's ``validation`` keys + checks)."""

    schema_match: bool = False
    doc_count_match: bool = False
    key_sample_exists: bool = False
    indexing_failures_delta: int = 0
    query_checks: list[dict[str, Any]] = attrs.field(factory=list)
    errors: list[str] = attrs.field(factory=list)
    checks: list[CheckResult] = attrs.field(factory=list)
    #: per vector field, the measured recall (:mod:`rvlm.core.quality.recall`); the report's
    #: top-level ``quality``
    quality: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    #: FT.INFO's ``total_index_memory_sz_mb`` of the source (at plan time) and of the target
    #: (when validated), for the report's ``benchmark_summary``
    index_sizes_mb: tuple[float, float] | None = None

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return all(c.passed for c in self.checks) and not self.errors

    def add(self, check: CheckResult) -> None:
        """Record a check; a failed one adds its detail to ``errors``."""
        self.checks.append(check)
        if not check.passed:
            self.errors.append(f"{check.name}: {check.details}" if check.details else check.name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_match": self.schema_match,
            "doc_count_match": self.doc_count_match,
            "key_sample_exists": self.key_sample_exists,
            "indexing_failures_delta": self.indexing_failures_delta,
            "query_checks": self.query_checks,
            "errors": list(self.errors),
            "checks": [c.to_dict() for c in self.checks],
        }


#: How a failed run's report says to go on (a manual action); the CLI shows the exact commands
#: instead.
RESUME_HINT = "re-run the same command to resume"


@attrs.frozen(kw_only=True)
class BenchmarkSummary:
    """``report.benchmark_summary``: RedisVL's attributes (``documents_indexed_per_second``,
    the index sizes in MB and their delta; None when unknown) and rvlm's throughput."""

    documents_indexed_per_second: float | None = None
    source_index_size_mb: float | None = None
    target_index_size_mb: float | None = None
    index_size_delta_mb: float | None = None
    documents: int = 0
    documents_rewritten: int = 0
    bytes_rewritten: int = 0
    documents_per_second: float = 0.0
    total_seconds: float = 0.0
    downtime_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class BackupInfo:
    """``report.backup``: RedisVL's ``backup_dir`` and ``backup_paths``."""

    backup_dir: str | None
    backup_paths: list[str]


class Timer:
    """Step timings (the report's ``timings``): ``with timer.step("transform"): ...`` adds
    seconds to that step. A step is a timed stretch of work (``checks``, ``keys``, ``drop``,
    ``transform``, ``create``, ``indexing``, ``validation``...); a *phase* is what the journal
    records a run reached (:mod:`rvlm.core.storage.journal`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.down_start: float | None = None
        self.down_end: float | None = None

    def step(self, name: str) -> _StepTimer:
        return _StepTimer(self, name)


class _StepTimer:
    def __init__(self, timer: Timer, name: str) -> None:
        self.timer, self.name, self.t0 = timer, name, 0.0

    def __enter__(self) -> None:
        self.t0 = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        self.timer.seconds[self.name] = (self.timer.seconds.get(self.name, 0.0)
                                         + time.monotonic() - self.t0)


#: The operation kinds whose document work RedisVL times under each of its names.
_WORK = {"quantize_duration_seconds": ("convert_vector",),
         "field_rename_duration_seconds": ("rename_hash_field", "move_json_path"),
         "key_rename_duration_seconds": ("rename_keys",)}
#: RedisVL's other timing names and the rvlm phase each is.
_PHASES = {"drop_duration_seconds": "drop", "recreate_duration_seconds": "create",
           "initial_indexing_duration_seconds": "indexing",
           "validation_duration_seconds": "validation"}
#: Every name of RedisVL's ``MigrationTimings``, in its order.
REDISVL_TIMINGS = ("total_migration_duration_seconds", "drop_duration_seconds",
                   "quantize_duration_seconds", "field_rename_duration_seconds",
                   "key_rename_duration_seconds", "recreate_duration_seconds",
                   "initial_indexing_duration_seconds", "validation_duration_seconds",
                   "downtime_duration_seconds")


class Timings(dict[str, float]):
    """Seconds per phase, keyed by rvlm's phase names (``checks``, ``keys``, ``drop``,
    ``transform``, ``create``, ``indexing``, ``validation``; online ``build``, ``alias``,
    ``drop_source``), with RedisVL's ``MigrationTimings`` attributes on top, so
    ``report.timings.quantize_duration_seconds`` works as it does there.

    rvlm rewrites documents in one pass (``transform``), so ``quantize_duration_seconds``,
    ``field_rename_duration_seconds`` and ``key_rename_duration_seconds`` are that pass's
    seconds when the plan has that kind of work, else None (as in RedisVL).
    """

    def __init__(self, seconds: Any = (), *, kinds: tuple[str, ...] = (),
                 downtime: float | None = None) -> None:
        super().__init__(seconds)
        self.kinds = kinds
        self.downtime = downtime

    def _phase(self, name: str) -> float | None:
        return round(self[name], 3) if name in self else None

    def _work(self, attr: str) -> float | None:
        return self._phase("transform") if set(_WORK[attr]) & set(self.kinds) else None

    @property
    def total_migration_duration_seconds(self) -> float | None:
        return round(sum(self.values()), 3) if self else None

    @property
    def quantize_duration_seconds(self) -> float | None:
        return self._work("quantize_duration_seconds")

    @property
    def field_rename_duration_seconds(self) -> float | None:
        return self._work("field_rename_duration_seconds")

    @property
    def key_rename_duration_seconds(self) -> float | None:
        return self._work("key_rename_duration_seconds")

    @property
    def drop_duration_seconds(self) -> float | None:
        return self._phase("drop")

    @property
    def recreate_duration_seconds(self) -> float | None:
        return self._phase("create")

    @property
    def initial_indexing_duration_seconds(self) -> float | None:
        return self._phase("indexing")

    @property
    def validation_duration_seconds(self) -> float | None:
        return self._phase("validation")

    @property
    def downtime_duration_seconds(self) -> float | None:
        return None if self.downtime is None else round(self.downtime, 3)

    def redisvl(self) -> dict[str, float | None]:
        """RedisVL's ``MigrationTimings`` mapping (every name, None where it does not apply)."""
        return {name: getattr(self, name) for name in REDISVL_TIMINGS}


def _timings(report: MigrationReport, _attribute: Any, value: Any) -> Timings:
    return Timings(value, kinds=report.operation_kinds,
                   downtime=report.downtime_duration_seconds)


def _downtime(report: MigrationReport, _attribute: Any, value: Any) -> Any:
    report.timings.downtime = value
    return value


@attrs.define(kw_only=True)
class MigrationReport:
    """One run of apply / validate / rollback. ``result`` is ``succeeded`` or ``failed``."""

    mode: str = "drop_recreate"
    source_index: str = ""
    target_index: str = ""
    result: str = "failed"
    started_at: str = attrs.field(factory=now_iso)
    finished_at: str = ""
    #: seconds per phase, with RedisVL's timing attributes (see :class:`Timings`)
    timings: Timings = attrs.field(factory=Timings, on_setattr=_timings)
    downtime_duration_seconds: float | None = attrs.field(default=None, on_setattr=_downtime)
    validation: ValidationResult = attrs.field(factory=ValidationResult)
    backup_dir: str | None = None
    backup_paths: list[str] = attrs.field(factory=list)
    warnings: list[str] = attrs.field(factory=list)
    manual_actions: list[str] = attrs.field(factory=list)
    error: str | None = None
    documents: int = 0
    documents_rewritten: int = 0
    bytes_rewritten: int = 0
    batches: int = 0
    batches_resumed: int = 0
    workers: int = 1
    resumed: bool = False
    #: the journal's last phase when this run started (a resumed run's starting point)
    resumed_from: str = ""
    #: batches, and the documents in them, that an earlier interrupted run had finished
    batches_done_before: int = 0
    documents_done_before: int = 0
    key_enumeration: str = ""
    plan_fingerprint: str = ""
    restored_records: int = 0
    #: records not restored because both their key and new key exist with different contents
    #: (named in ``manual_actions``)
    restore_conflicts: int = 0
    #: the apply rolled itself back (``--rollback-below-recall``); ``result`` stays failed
    rolled_back: bool = False
    #: online copies: the lag from a source write to its target write (count, p50, p99, max
    #: in ms); None when nothing was carried over or the mode does not copy
    forward_lag_ms: dict[str, Any] | None = None
    #: online copies: what the copy did (target prefix, documents copied, changes carried
    #: over, keys deleted, forwarding, finalize)
    online: dict[str, Any] = attrs.field(factory=dict)
    #: the kinds of the plan's document operations (which RedisVL timings apply)
    operation_kinds: tuple[str, ...] = ()
    version: int = REPORT_VERSION

    def __attrs_post_init__(self) -> None:
        self.timings = self.timings  # a Timings that knows the kinds and the downtime

    @property
    def succeeded(self) -> bool:
        return self.result == "succeeded"

    @property
    def documents_per_second(self) -> float:
        t = self.timings.get("transform", self.timings.get("copy", 0.0))
        return round(self.documents_rewritten / t, 1) if t > 0 else 0.0

    def finish(self, succeeded: bool) -> MigrationReport:
        """Set ``result`` and ``finished_at``; returns self."""
        self.result = "succeeded" if succeeded else "failed"
        self.finished_at = now_iso()
        return self

    @property
    def benchmark_summary(self) -> BenchmarkSummary:
        """Throughput and index sizes (RedisVL's ``report.benchmark_summary``)."""
        indexing = self.timings.get("indexing", 0.0)
        sizes = self.validation.index_sizes_mb
        return BenchmarkSummary(
            documents_indexed_per_second=(round(self.documents / indexing, 1)
                                          if indexing > 0 and self.documents else None),
            source_index_size_mb=sizes[0] if sizes else None,
            target_index_size_mb=sizes[1] if sizes else None,
            index_size_delta_mb=round(sizes[1] - sizes[0], 6) if sizes else None,
            documents=self.documents,
            documents_rewritten=self.documents_rewritten,
            bytes_rewritten=self.bytes_rewritten,
            documents_per_second=self.documents_per_second,
            total_seconds=round(sum(self.timings.values()), 3),
            downtime_seconds=self.downtime_duration_seconds,
        )

    @property
    def backup(self) -> BackupInfo:
        """The backup dir and its files (RedisVL's ``report.backup``)."""
        return BackupInfo(self.backup_dir, list(self.backup_paths))

    def to_dict(self) -> dict[str, Any]:
        timings: dict[str, float | None] = {k: round(v, 3) for k, v in self.timings.items()}
        # RedisVL's names too (those that apply), so its readers find them
        timings.update({k: v for k, v in self.timings.redisvl().items() if v is not None})
        timings["downtime_duration_seconds"] = self.timings.downtime_duration_seconds
        out: dict[str, Any] = {
            "version": self.version,
            "mode": self.mode,
            "source_index": self.source_index,
            "target_index": self.target_index,
            "result": self.result,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "timings": timings,
            "validation": self.validation.to_dict(),
            **({"quality": self.validation.quality} if self.validation.quality else {}),
            "benchmark_summary": self.benchmark_summary.to_dict(),
            "backup": {"backup_dir": self.backup_dir, "backup_paths": list(self.backup_paths)},
            "warnings": list(self.warnings),
            "manual_actions": list(self.manual_actions),
            "rvlm": {
                "error": self.error,
                "plan_fingerprint": self.plan_fingerprint,
                "documents": self.documents,
                "documents_rewritten": self.documents_rewritten,
                "bytes_rewritten": self.bytes_rewritten,
                "documents_per_second": self.documents_per_second,
                "batches": self.batches,
                "batches_resumed": self.batches_resumed,
                "workers": self.workers,
                "resumed": self.resumed,
                "resumed_from": self.resumed_from,
                "batches_done_before": self.batches_done_before,
                "documents_done_before": self.documents_done_before,
                "key_enumeration": self.key_enumeration,
                "restored_records": self.restored_records,
                "restore_conflicts": self.restore_conflicts,
                **({"rolled_back": True} if self.rolled_back else {}),
            },
        }
        if self.forward_lag_ms is not None:
            out["rvlm"]["forward_lag_ms"] = dict(self.forward_lag_ms)
        if self.online:
            out["rvlm"]["online"] = dict(self.online)
        return out

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict())

    def write(self, path: str | Path) -> None:
        """Write the YAML report to ``path``."""
        Path(path).write_text(self.to_yaml(), encoding="utf-8")

    def write_benchmark(self, path: str | Path) -> None:
        """Write only ``benchmark_summary`` and timings (``--benchmark-out``)."""
        d = self.to_dict()
        Path(path).write_text(
            dump_yaml({"benchmark_summary": d["benchmark_summary"], "timings": d["timings"],
                       "rvlm": d["rvlm"]}), encoding="utf-8")
