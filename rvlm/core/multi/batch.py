"""Batch migrations: one shared schema patch, many indexes, one resumable run.

Three files a person can read:

* The **batch plan** (``rvlm batch plan``): which indexes were selected, which are applicable
  (each with its own full plan written next to the batch plan, ``<dir>/<batch_id>/<index>.yaml``)
  and which are skipped, with the reason. It is refused (``conflicts`` lists every pair) when
  two applicable indexes cover overlapping key prefixes and the patch rewrites documents, or
  when a shared index rename or prefix change would make two indexes collide.
* The **batch state** (``--state``): per index ``pending``, ``in_progress``, ``succeeded``,
  ``failed`` or ``skipped``, with the error, times, documents and its backup dir
  (``<backup-dir>/<index>/``). It is rewritten atomically (temp file, fsync, rename) after
  every step, so a crash at any instant leaves a state that ``rvlm batch resume`` continues.
  An index that crashed mid-way is resumed from its own journal by the single-index executor
  (same plan file, same backup dir): it is never re-planned from a dropped index.
* The **batch report** (``<report-dir>/batch_report.yaml``): per index result, duration,
  documents and error, and the overall status: ``completed`` (every applicable index
  succeeded), ``partial_failure`` (some did) or ``failed`` (none did).

The Python API keeps RedisVL's names::

    plan = BatchMigrationPlanner().create_batch_plan(
        redis_url=url, pattern="*_idx", schema_patch_path="patch.yaml")
    plan.write("batch_plan.yaml")
    report = BatchMigrationExecutor().apply(
        plan, redis_url=url, state_path="batch_state.yaml", report_dir="reports",
        backup_dir="backups", progress_callback=lambda name, pos, total, status: ...)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, TypeVar

import attrs
import redis
import yaml

from rvlm.core.errors import MigrationFailed, RvlmError
from rvlm.core.migrate.plan import Plan
from rvlm.core.migrate.planner import PlanOptions, match_indexes, plan_inputs, prefixes_overlap
from rvlm.core.migrate.report import now_iso
from rvlm.core.redis.connection import connect, list_indexes, redact, resolve_url
from rvlm.core.schema.yaml_format import dump_yaml, load_yaml
from rvlm.core.storage.backup import fsync_directory

BATCH_PLAN_VERSION = 1
BATCH_STATE_VERSION = 1
BATCH_REPORT_VERSION = 1
BATCH_MODE = "batch_drop_recreate"
FAILURE_POLICIES = ("fail_fast", "continue_on_error")
INDEX_STATUSES = ("pending", "in_progress", "succeeded", "failed", "skipped")
REPORT_NAME = "batch_report.yaml"

#: RedisVL's callback: ``progress_callback(index_name, position, total, status)`` where
#: status is ``starting``, ``succeeded`` or ``failed``.
ProgressCallback = Callable[[str, int, int, str], None]
#: The single-index executor (``rvlm.core.migrate.executor.apply_plan`` by default).
ApplyFunction = Callable[..., Any]

_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


def safe_name(index_name: str) -> str:
    """A file-system-safe name for an index: itself when it is plain, otherwise the plain
    characters plus a short hash (so two different names never share a file)."""
    if _SAFE.match(index_name):
        return index_name
    plain = re.sub(r"[^A-Za-z0-9_.-]", "_", index_name).lstrip(".")[:80] or "index"
    digest = hashlib.sha256(index_name.encode()).hexdigest()[:8]
    return f"{plain}-{digest}"


def _str_tuple(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value or ())


_Entry = TypeVar("_Entry", bound=attrs.AttrsInstance)


def _entry_from_dict(cls: type[_Entry], data: dict[str, Any], where: str, what: str) -> _Entry:
    """``cls`` built from the keys of ``data`` it has fields for (other keys are ignored);
    a bad value raises RvlmError naming ``where`` and ``what``."""
    known = {a.name for a in attrs.fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in known})
    except (TypeError, ValueError) as exc:
        raise RvlmError(f"{where}: malformed {what} ({exc})") from None


def _keyspace(prefixes: Sequence[str]) -> tuple[str, ...]:
    """Prefixes as FT.CREATE sees them: no prefix means every key (the empty prefix)."""
    return tuple(prefixes) or ("",)


# ============================================================================ the batch plan


@attrs.define(kw_only=True)
class BatchIndex:
    """One selected index in a batch plan: applicable (with its plan file) or skipped."""

    name: str
    applicable: bool
    skip_reason: str | None = None
    plan_path: str | None = None
    source_index: str | None = None
    target_index: str | None = None
    storage_type: str | None = None
    source_prefixes: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    target_prefixes: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    rewrites_documents: bool = False
    lossy: bool = False
    documents: int = 0
    fingerprint: str | None = None

    @property
    def keyspace(self) -> tuple[str, ...]:
        """Every prefix the migration reads or writes (source and target)."""
        return tuple(dict.fromkeys(_keyspace(self.source_prefixes)
                                   + _keyspace(self.target_prefixes)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "applicable": self.applicable,
            "skip_reason": self.skip_reason,
            "plan_path": self.plan_path,
            "source_index": self.source_index,
            "target_index": self.target_index,
            "storage_type": self.storage_type,
            "source_prefixes": list(self.source_prefixes),
            "target_prefixes": list(self.target_prefixes),
            "rewrites_documents": self.rewrites_documents,
            "lossy": self.lossy,
            "documents": self.documents,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> BatchIndex:
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise RvlmError(f"{where}: each index needs a name")
        return _entry_from_dict(cls, data, where, "index entry")


@attrs.frozen(kw_only=True)
class BatchConflict:
    """Why a batch is refused: ``kind`` is ``shared_keys``, ``index_name`` or ``prefix``."""

    kind: str
    indexes: tuple[str, str]
    prefixes: tuple[str, ...] = ()
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "indexes": list(self.indexes),
                "prefixes": list(self.prefixes), "message": self.message}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchConflict:
        pair = (str(data["indexes"][0]), str(data["indexes"][1]))
        return cls(kind=str(data["kind"]), indexes=pair,
                   prefixes=tuple(data.get("prefixes") or ()), message=str(data.get("message", "")))


@attrs.define(kw_only=True)
class BatchPlan:
    """A reviewed batch: the shared patch, the selection, and one entry per index.

    ``plans`` holds the per-index :class:`Plan` objects in memory (after planning, or loaded
    lazily from ``plan_path`` relative to the batch plan file by :meth:`plan_for`).
    """

    batch_id: str
    schema_patch_path: str
    schema_patch_content: Any
    selection: dict[str, Any]
    failure_policy: str = "fail_fast"
    indexes: list[BatchIndex] = attrs.field(factory=list)
    conflicts: list[BatchConflict] = attrs.field(factory=list)
    warnings: list[str] = attrs.field(factory=list)
    version: int = BATCH_PLAN_VERSION
    mode: str = BATCH_MODE
    path: Path | None = attrs.field(default=None, eq=False)
    plans: dict[str, Plan] = attrs.field(factory=dict, eq=False, repr=False)

    # -- views ---------------------------------------------------------------------------
    @property
    def refused(self) -> bool:
        """True when the batch must not run (see ``conflicts``)."""
        return bool(self.conflicts)

    @property
    def applicable(self) -> list[BatchIndex]:
        return [i for i in self.indexes if i.applicable]

    @property
    def skipped(self) -> list[BatchIndex]:
        return [i for i in self.indexes if not i.applicable]

    def entry(self, name: str) -> BatchIndex:
        for i in self.indexes:
            if i.name == name:
                return i
        raise RvlmError(f"index {name!r} is not in batch {self.batch_id}")

    def conflict_message(self) -> str:
        """One line naming every conflicting pair and prefix."""
        return (f"batch {self.batch_id} refused: "
                + "; ".join(c.message for c in self.conflicts))

    @property
    def fingerprint(self) -> str:
        """sha256 over the batch plan's canonical JSON (binds a state file to this plan)."""
        body = self.to_dict()
        text = json.dumps(body, sort_keys=True, default=str, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    # -- per-index plans -----------------------------------------------------------------
    def plan_for(self, name: str) -> Plan:
        """The plan of an applicable index (loaded from its file and checked)."""
        entry = self.entry(name)
        if not entry.applicable:
            raise RvlmError(f"index {name!r} is not applicable: {entry.skip_reason}")
        plan = self.plans.get(name)
        if plan is None:
            if not entry.plan_path:
                raise RvlmError(f"batch plan: index {name!r} has no plan_path")
            base = self.path.parent if self.path is not None else Path.cwd()
            plan = Plan.load(base / entry.plan_path)
            self.plans[name] = plan
        if entry.fingerprint and plan.fingerprint != entry.fingerprint:
            raise RvlmError(f"the plan of index {name!r} ({entry.plan_path}) is not the one this "
                            "batch plan was made with (fingerprint mismatch); make a new batch "
                            "plan with 'rvlm batch plan'")
        return plan

    # -- YAML ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "batch_id": self.batch_id,
            "mode": self.mode,
            "schema_patch": {"path": self.schema_patch_path,
                             "content": self.schema_patch_content},
            "selection": dict(self.selection),
            "failure_policy": self.failure_policy,
            "indexes": [i.to_dict() for i in self.indexes],
            "conflicts": [c.to_dict() for c in self.conflicts],
            "warnings": list(self.warnings),
        }

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict())

    def write(self, path: str | Path) -> Path:
        """Write the batch plan to ``path`` and every per-index plan next to it
        (``<dir>/<batch_id>/<index>.yaml``). Returns the absolute path written."""
        target = Path(path).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        plan_dir = target.parent / self.batch_id
        for entry in self.indexes:
            plan = self.plans.get(entry.name)
            if plan is None:
                if entry.applicable and entry.plan_path and self.path is not None:
                    plan = self.plan_for(entry.name)
                else:
                    continue
            plan_dir.mkdir(parents=True, exist_ok=True)
            file = plan_dir / f"{safe_name(entry.name)}.yaml"
            plan.write(file)
            entry.plan_path = str(file.relative_to(target.parent))
        atomic_write_text(target, self.to_yaml())
        self.path = target
        return target

    @classmethod
    def from_dict(cls, data: Any, source: str = "batch plan") -> BatchPlan:
        if not isinstance(data, dict):
            raise RvlmError(f"{source}: a batch plan must be a mapping")
        if data.get("version") != BATCH_PLAN_VERSION:
            raise RvlmError(f"{source}: unsupported batch plan version {data.get('version')!r}")
        if not isinstance(data.get("batch_id"), str) or not isinstance(data.get("indexes"),
                                                                        list):
            raise RvlmError(f"{source}: not a batch plan (needs batch_id and indexes); make "
                            "one with 'rvlm batch plan'")
        policy = data.get("failure_policy", "fail_fast")
        if policy not in FAILURE_POLICIES:
            raise RvlmError(f"{source}: failure_policy must be one of "
                            f"{', '.join(FAILURE_POLICIES)}, not {policy!r}")
        patch = data.get("schema_patch") or {}
        try:
            conflicts = [BatchConflict.from_dict(c) for c in data.get("conflicts") or []]
        except (KeyError, TypeError) as exc:
            raise RvlmError(f"{source}: malformed conflicts ({exc})") from None
        return cls(
            version=data["version"],
            batch_id=data["batch_id"],
            mode=str(data.get("mode", BATCH_MODE)),
            schema_patch_path=str(patch.get("path", "")) if isinstance(patch, dict) else "",
            schema_patch_content=patch.get("content") if isinstance(patch, dict) else None,
            selection=dict(data.get("selection") or {}),
            failure_policy=policy,
            indexes=[BatchIndex.from_dict(d, f"{source}: indexes[{n}]")
                     for n, d in enumerate(data["indexes"])],
            conflicts=conflicts,
            warnings=list(data.get("warnings") or []),
        )

    @classmethod
    def load(cls, path: str | Path) -> BatchPlan:
        """Read a batch plan file (per-index plans are loaded when needed)."""
        p = Path(path).resolve()
        plan = cls.from_dict(load_yaml(p), str(path))
        plan.path = p
        return plan


# ============================================================================ planning


def _read_indexes_file(path: str | Path) -> list[str]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RvlmError(f"{p}: no such file") from None
    except OSError as exc:
        raise RvlmError(f"{p}: cannot read ({exc.strerror})") from None
    names = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    if not names:
        raise RvlmError(f"{p}: lists no index names (one per line)")
    return names


def _split_names(indexes: str | Sequence[str]) -> list[str]:
    items = indexes.split(",") if isinstance(indexes, str) else list(indexes)
    names = [str(n).strip() for n in items if str(n).strip()]
    if not names:
        raise RvlmError("--indexes lists no index names")
    return names


def batch_id_for(patch_content: Any, selection: dict[str, Any], names: Sequence[str],
                 failure_policy: str) -> str:
    """A deterministic id from the inputs: the patch, the selection and the policy."""
    text = json.dumps({"patch": patch_content, "selection": selection, "names": list(names),
                       "failure_policy": failure_policy}, sort_keys=True, default=str)
    return "batch-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def find_conflicts(entries: Sequence[BatchIndex]) -> list[BatchConflict]:
    """Every pair of (otherwise applicable) indexes that must not be migrated together."""
    out: list[BatchConflict] = []
    for n, a in enumerate(entries):
        for b in entries[n + 1:]:
            pair = (a.name, b.name)
            if a.rewrites_documents or b.rewrites_documents:
                shared = prefixes_overlap(_keyspace(a.source_prefixes),
                                          _keyspace(b.source_prefixes))
                if shared:
                    prefixes = tuple(dict.fromkeys(p for s in shared for p in s))
                    out.append(BatchConflict(
                        kind="shared_keys", indexes=pair, prefixes=prefixes,
                        message=f"{a.name} and {b.name} cover overlapping prefixes "
                                f"{_fmt(prefixes)} and the patch rewrites documents "
                                "(they would be rewritten twice)"))
            if a.target_index and a.target_index == b.target_index:
                out.append(BatchConflict(
                    kind="index_name", indexes=pair,
                    message=f"{a.name} and {b.name} would both be renamed to "
                            f"{a.target_index!r}"))
            else:
                for x, y in ((a, b), (b, a)):
                    if x.target_index != x.source_index and x.target_index == y.source_index:
                        out.append(BatchConflict(
                            kind="index_name", indexes=(x.name, y.name),
                            message=f"{x.name} would be renamed to {y.source_index!r}, the "
                                    f"name of {y.name}"))
            a_moves = _keyspace(a.target_prefixes) != _keyspace(a.source_prefixes)
            b_moves = _keyspace(b.target_prefixes) != _keyspace(b.source_prefixes)
            if a_moves or b_moves:
                hits: list[tuple[str, str]] = []
                hits += prefixes_overlap(_keyspace(a.target_prefixes),
                                         _keyspace(b.target_prefixes))
                if a_moves:
                    hits += prefixes_overlap(_keyspace(a.target_prefixes),
                                             _keyspace(b.source_prefixes))
                if b_moves:
                    hits += prefixes_overlap(_keyspace(a.source_prefixes),
                                             _keyspace(b.target_prefixes))
                if hits:
                    prefixes = tuple(dict.fromkeys(p for s in hits for p in s))
                    out.append(BatchConflict(
                        kind="prefix", indexes=pair, prefixes=prefixes,
                        message=f"the prefix change makes {a.name} and {b.name} collide on "
                                f"{_fmt(prefixes)}"))
    return out


def _fmt(prefixes: Sequence[str]) -> str:
    return ", ".join(repr(p) for p in prefixes)


class BatchMigrationPlanner:
    """RedisVL-style entry point: ``create_batch_plan(...)`` tests one patch on many indexes.

    It never writes to Redis. ``plugins`` are extra plugin objects (as for ``make_plan``);
    ``sample_size`` is the planner's calibration sample per index.
    """

    def __init__(self, *, plugins: Sequence[Any] = (), sample_size: int | None = None) -> None:
        self.plugins = tuple(plugins)
        self.sample_size = sample_size

    def create_batch_plan(
        self,
        *,
        redis_url: str | None = None,
        schema_patch_path: str | Path,
        pattern: str | None = None,
        indexes: str | Sequence[str] | None = None,
        indexes_file: str | Path | None = None,
        failure_policy: str = "fail_fast",
        redis_client: redis.Redis | None = None,
    ) -> BatchPlan:
        """Plan ``schema_patch_path`` for every index selected by exactly one of ``pattern``
        (a glob over FT._LIST), ``indexes`` (names, or a comma-separated string) or
        ``indexes_file`` (one name a line, ``#`` comments).

        Returns a :class:`BatchPlan` (write it with :meth:`BatchPlan.write`). When it is
        refused, ``conflicts`` names every pair and the executor will not run it. Raises
        :class:`RvlmError` for bad input (before touching the server when it can).
        """
        from rvlm.core.plugins.host import get_host, host_with

        chosen = [s for s in (pattern, indexes, indexes_file) if s is not None]
        if len(chosen) != 1:
            raise RvlmError("select indexes with exactly one of --pattern, --indexes or "
                            "--indexes-file")
        if failure_policy not in FAILURE_POLICIES:
            raise RvlmError(f"--failure-policy must be one of {', '.join(FAILURE_POLICIES)}, "
                            f"not {failure_policy!r}")
        host = host_with(self.plugins) if self.plugins else get_host()
        patch_path = Path(schema_patch_path).resolve()
        options = PlanOptions(sample_size=self.sample_size) if self.sample_size else PlanOptions()
        inputs = plan_inputs(schema_patch=patch_path, options=options, host=host)
        assert inputs.patch is not None
        source = inputs.patch.source
        content = load_yaml(patch_path)
        selection: dict[str, Any]
        if indexes_file is not None:
            names = _read_indexes_file(indexes_file)
            selection = {"indexes_file": str(Path(indexes_file).resolve())}
        elif indexes is not None:
            names = _split_names(indexes)
            selection = {"indexes": list(names)}
        else:
            assert pattern is not None
            selection = {"pattern": pattern}
            names = []
        names = list(dict.fromkeys(names))
        client = redis_client if redis_client is not None else connect(redis_url)
        live = list_indexes(client)
        if pattern is not None:
            names = match_indexes(live, pattern)
            if not names:
                raise RvlmError(f"no index matches the pattern {pattern!r} (indexes: "
                                f"{', '.join(live) or 'none'})")

        entries: list[BatchIndex] = []
        plans: dict[str, Plan] = {}
        seen_sources: dict[str, str] = {}
        only_shared: set[str] = set()
        for name in names:
            try:
                plan = inputs.plan(client, name)
            except RvlmError as exc:
                reason = str(exc)
                if reason.startswith(f"{source}: "):  # the patch is named once, above
                    reason = reason[len(source) + 2:]
                entries.append(BatchIndex(name=name, applicable=False, skip_reason=reason))
                continue
            except redis.ConnectionError:
                raise
            except Exception as exc:  # a plugin bug must not hide the other indexes
                entries.append(BatchIndex(name=name, applicable=False,
                                          skip_reason=f"planning failed: "
                                                      f"{type(exc).__name__}: {exc}"))
                continue
            entry = BatchIndex(
                name=name, applicable=plan.supported,
                skip_reason=None if plan.supported else "; ".join(plan.blocked_reasons),
                source_index=plan.source_index, target_index=plan.target_index,
                storage_type=plan.source_schema.storage_type,
                source_prefixes=plan.source_schema.index.prefix,
                target_prefixes=plan.target_schema.index.prefix,
                rewrites_documents=plan.rewrites_documents, lossy=plan.lossy,
                documents=plan.source_stats.num_docs + plan.source_stats.indexing_failures,
                fingerprint=plan.fingerprint)
            if plan.source_index in seen_sources:
                entry.applicable = False
                entry.skip_reason = (f"{name!r} is the same index as "
                                     f"{seen_sources[plan.source_index]!r} (an alias)")
            else:
                seen_sources[plan.source_index] = name
                blocking = {c.type for c in plan.changes if not c.supported}
                if blocking == {"shared_keys"}:
                    only_shared.add(name)
            plans[name] = plan
            entries.append(entry)

        # Pairs among indexes that are applicable, or blocked only because they share keys
        # with each other (the batch names the pair instead of skipping both).
        candidates = [e for e in entries if e.applicable or e.name in only_shared]
        conflicts = find_conflicts(candidates)
        # Plans are written for every planned index (also skipped ones), for review.
        batch = BatchPlan(
            batch_id=batch_id_for(content, selection, names, failure_policy),
            schema_patch_path=str(patch_path), schema_patch_content=content,
            selection=selection, failure_policy=failure_policy, indexes=entries,
            conflicts=conflicts, plans=plans)
        if not batch.applicable and not conflicts:
            batch.warnings.append("no selected index is applicable: the batch has nothing to do")
        return batch


# ============================================================================ state


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so a crash leaves the old file or the new one, never a mix:
    a temp file in the same directory, fsync, ``os.replace``, fsync of the directory."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    data = text.encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_directory(path.parent)


@attrs.define(kw_only=True)
class IndexState:
    """Where one index of a batch stands."""

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
        return _entry_from_dict(cls, data, where, "index state")


@attrs.define(kw_only=True)
class BatchState:
    """The checkpoint of a batch run (see the module docstring).

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


# ============================================================================ the report


@attrs.define(kw_only=True)
class BatchReport:
    """What a batch run did: per index result, duration, documents; the overall status."""

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

    def summary(self) -> dict[str, Any]:
        by = [i["result"] for i in self.indexes]
        return {
            "total_indexes": len(self.indexes),
            "applicable": sum(1 for r in by if r != "skipped"),
            "successful": by.count("succeeded"),
            "failed": by.count("failed"),
            "skipped": by.count("skipped"),
            "not_run": by.count("not_run"),
            "in_progress": by.count("in_progress"),
            "documents": sum(int(i.get("documents") or 0) for i in self.indexes
                             if i["result"] == "succeeded"),
            "total_duration_seconds": round(sum(float(i.get("duration_seconds") or 0)
                                                for i in self.indexes), 3),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "batch_id": self.batch_id,
            "status": self.status,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "summary": self.summary(),
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


# ============================================================================ the executor


class BatchMigrationExecutor:
    """Runs a batch plan index by index (or K at a time on disjoint keyspaces), with a
    checkpointed state file; ``resume`` continues a batch that stopped (see module doc).

    ``apply_function`` replaces the single-index executor (tests; defaults to
    :func:`rvlm.core.migrate.executor.apply_plan`).
    """

    def __init__(self, *, apply_function: ApplyFunction | None = None,
                 plugins: Sequence[Any] = (), batch_size: int = 500, workers: int = 1,
                 index_timeout: float = 600.0) -> None:
        self._apply_function = apply_function
        self.plugins = tuple(plugins)
        self.batch_size = batch_size
        self.workers = workers
        self.index_timeout = index_timeout

    # -- public API ----------------------------------------------------------------------
    def apply(
        self,
        batch_plan: BatchPlan | str | Path,
        *,
        redis_url: str | None = None,
        state_path: str | Path = "batch_state.yaml",
        report_dir: str | Path | None = None,
        backup_dir: str | Path | None = None,
        progress_callback: ProgressCallback | None = None,
        accept_data_loss: bool = False,
        parallel: int = 1,
    ) -> BatchReport:
        """Run every applicable index of ``batch_plan`` (an object or a file path).

        A state file that already holds this batch is continued (like ``resume``); one for
        another batch is refused. Raises :class:`RvlmError` for refused input (nothing run):
        a refused batch plan, no backup dir, a lossy plan without ``accept_data_loss``.
        Index failures do not raise: the returned report says what happened.
        """
        plan = batch_plan if isinstance(batch_plan, BatchPlan) else BatchPlan.load(batch_plan)
        if plan.refused:
            raise RvlmError(plan.conflict_message())
        if backup_dir is None or str(backup_dir) == "":
            raise RvlmError("a backup dir is required (--backup-dir): each index keeps its "
                            "originals and journal in <backup-dir>/<index>/")
        if parallel < 1:
            raise RvlmError(f"--parallel must be at least 1, not {parallel}")
        state_file = Path(state_path).resolve()
        backup = Path(backup_dir).resolve()
        if backup.exists() and not backup.is_dir():
            raise RvlmError(f"backup dir {backup} is a file")
        state_file.parent.mkdir(parents=True, exist_ok=True)
        with state_lock(state_file):
            if state_file.exists():
                state = BatchState.load(state_file)
                if state.batch_id != plan.batch_id:
                    raise RvlmError(
                        f"{state_file} belongs to batch {state.batch_id}, not {plan.batch_id}; "
                        "use another --state file")
                self._check_backup_dir(state, backup, state_file)
                return self._run(state, state_file, redis_url, progress_callback,
                                 accept_data_loss or state.accept_data_loss, parallel,
                                 retry_failed=False)
            for entry in plan.applicable:  # load and check every plan before anything runs
                plan.plan_for(entry.name)
            lossy = [e.name for e in plan.applicable if plan.plans[e.name].lossy]
            if lossy and not accept_data_loss:
                raise RvlmError(f"the plans of {', '.join(lossy)} are lossy (some values "
                                "cannot be restored exactly); pass --accept-data-loss "
                                "(accept_data_loss=True) to apply them")
            if plan.path is None:
                plan.write(state_file.with_name(f"{plan.batch_id}_plan.yaml"))
            assert plan.path is not None
            reports = Path(report_dir).resolve() if report_dir else state_file.parent / "reports"
            state = BatchState(
                batch_id=plan.batch_id, plan_path=str(plan.path),
                plan_fingerprint=plan.fingerprint, backup_dir=str(backup),
                report_dir=str(reports), failure_policy=plan.failure_policy,
                redis_url=redact(resolve_url(redis_url)), accept_data_loss=accept_data_loss,
                indexes=[IndexState(
                    name=e.name,
                    status="pending" if e.applicable else "skipped",
                    skip_reason=e.skip_reason,
                    plan_path=str(plan.path.parent / e.plan_path) if e.plan_path else None,
                    backup_dir=str(backup / safe_name(e.name)) if e.applicable else None,
                ) for e in plan.indexes])
            state.save(state_file)
            return self._run(state, state_file, redis_url, progress_callback,
                             accept_data_loss, parallel, retry_failed=False, plan=plan)

    def resume(
        self,
        state_path: str | Path,
        *,
        redis_url: str | None = None,
        retry_failed: bool = False,
        backup_dir: str | Path | None = None,
        report_dir: str | Path | None = None,
        progress_callback: ProgressCallback | None = None,
        accept_data_loss: bool = False,
        parallel: int = 1,
    ) -> BatchReport:
        """Continue the batch in ``state_path``: an index that was in progress resumes from
        its own journal, pending ones run, failed ones only with ``retry_failed``. A
        ``backup_dir`` other than the state's is refused."""
        if parallel < 1:
            raise RvlmError(f"--parallel must be at least 1, not {parallel}")
        state_file = Path(state_path).resolve()
        with state_lock(state_file):
            state = BatchState.load(state_file)
            if backup_dir is not None:
                self._check_backup_dir(state, Path(backup_dir).resolve(), state_file)
            if report_dir is not None:
                state.report_dir = str(Path(report_dir).resolve())
            return self._run(state, state_file, redis_url, progress_callback,
                             accept_data_loss or state.accept_data_loss, parallel,
                             retry_failed=retry_failed)

    @staticmethod
    def status(state_path: str | Path) -> BatchState:
        """The batch state as last checkpointed (read-only). A state left ``running`` by a
        process that is gone (killed, crashed) reads as ``interrupted``."""
        state = BatchState.load(Path(state_path))
        if state.status == "running" and not state_in_use(state_path):
            state.status = "interrupted"
        return state

    # -- internals -----------------------------------------------------------------------
    @staticmethod
    def _check_backup_dir(state: BatchState, backup: Path, state_file: Path) -> None:
        if Path(state.backup_dir) != backup:
            raise RvlmError(f"{state_file} was started with backup dir {state.backup_dir}, not "
                            f"{backup}; resume with the same backup dir")

    def _apply_fn(self) -> ApplyFunction:
        if self._apply_function is not None:
            return self._apply_function
        from rvlm.core.migrate.executor import apply_plan

        return apply_plan

    def _run(self, state: BatchState, state_file: Path, redis_url: str | None,
             progress: ProgressCallback | None, accept_data_loss: bool, parallel: int, *,
             retry_failed: bool, plan: BatchPlan | None = None) -> BatchReport:
        if plan is None:
            plan = BatchPlan.load(state.plan_path)
            if plan.batch_id != state.batch_id or (state.plan_fingerprint
                                                    and plan.fingerprint != state.plan_fingerprint):
                raise RvlmError(f"{state.plan_path} is not the batch plan {state_file} was "
                                "started with (it was changed); restore it or start a new batch")
        if redis_url is None and state.redis_url and "***" not in state.redis_url:
            redis_url = state.redis_url
        url = resolve_url(redis_url)
        if retry_failed:
            for i in state.indexes:
                if i.status == "failed":
                    i.status = "pending"
                    i.error = None
                    i.refused = False
        # Crashed indexes first (they hold a dropped index), then the rest in plan order.
        order = [i for i in state.indexes if i.status == "in_progress"]
        order += [i for i in state.indexes if i.status == "pending"]
        for i in order:  # load every plan before running anything
            plan.plan_for(i.name)
        lossy = [i.name for i in order if plan.plans[i.name].lossy]
        if lossy and not accept_data_loss:
            raise RvlmError(f"the plans of {', '.join(lossy)} are lossy; pass "
                            "--accept-data-loss to apply them")
        Path(state.report_dir).mkdir(parents=True, exist_ok=True)
        Path(state.backup_dir).mkdir(parents=True, exist_ok=True)
        state.status = "running"
        state.finished_at = None
        state.save(state_file)
        runner = _Runner(self, plan, state, state_file, url, progress, accept_data_loss)
        try:
            runner.run([i.name for i in order], parallel)
        finally:
            # Also on Ctrl-C: the state and the report say where the batch stopped.
            state.status = state.overall()
            if state.status == "running":
                state.status = "interrupted"
            else:
                state.finished_at = now_iso()
            state.save(state_file)
            report = BatchReport.from_state(state, state_file)
            out = Path(state.report_dir) / REPORT_NAME
            report.report_path = str(out)
            report.write(out)
        return report


class _Runner:
    """Schedules indexes (1 or K at a time) and checkpoints after every step."""

    def __init__(self, owner: BatchMigrationExecutor, plan: BatchPlan, state: BatchState,
                 state_file: Path, url: str, progress: ProgressCallback | None,
                 accept_data_loss: bool) -> None:
        self.owner = owner
        self.plan = plan
        self.state = state
        self.state_file = state_file
        self.url = url
        self.progress = progress
        self.accept_data_loss = accept_data_loss
        self.lock = threading.Lock()
        self.stopped = False
        self.total = sum(1 for i in state.indexes if i.status != "skipped")
        self.position = sum(1 for i in state.indexes if i.status in ("succeeded", "failed"))

    def _notify(self, name: str, status: str) -> None:
        if self.progress is not None:
            with contextlib.suppress(Exception):
                self.progress(name, self.position, self.total, status)

    def run(self, names: list[str], parallel: int) -> None:
        if parallel <= 1:
            for name in names:
                if self.stopped:
                    break
                self._one(name)
            return
        todo = list(names)
        running: dict[Future[None], str] = {}
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="rvlm-batch") as pool:
            interrupted: BaseException | None = None
            while todo or running:
                if not self.stopped and interrupted is None:
                    for name in list(todo):
                        if len(running) >= parallel:
                            break
                        if self._disjoint(name, running.values()):
                            todo.remove(name)
                            running[pool.submit(self._one, name)] = name
                if not running:
                    break
                try:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                except KeyboardInterrupt as exc:  # let running indexes checkpoint, then stop
                    interrupted = exc
                    self.stopped = True
                    continue
                for fut in done:
                    running.pop(fut)
                    fut.result()
            if interrupted is not None:
                raise interrupted

    def _disjoint(self, name: str, running: Any) -> bool:
        mine = self.plan.entry(name).keyspace
        return not any(prefixes_overlap(mine, self.plan.entry(other).keyspace)
                       for other in running)

    def _checkpoint(self) -> None:
        self.state.save(self.state_file)

    def _one(self, name: str) -> None:
        """Run (or resume) one index; never raises for an index failure."""
        with self.lock:
            ist = self.state.index(name)
            if ist.status == "in_progress" or ist.attempts:
                ist.resumed = True
            ist.status = "in_progress"
            ist.attempts += 1
            ist.error = None
            ist.started_at = ist.started_at or now_iso()
            ist.finished_at = None
            self._checkpoint()
            self.position += 1
            self._notify(name, "starting")
        plan = self.plan.plan_for(name)
        backup = Path(ist.backup_dir or Path(self.state.backup_dir) / safe_name(name))
        t0 = time.monotonic()
        report: Any = None
        error: str | None = None
        refused = False
        try:
            report = self.owner._apply_fn()(
                self.url, plan, backup_dir=backup, batch_size=self.owner.batch_size,
                workers=self.owner.workers, accept_data_loss=self.accept_data_loss,
                plugins=self.owner.plugins, index_timeout=self.owner.index_timeout)
        except MigrationFailed as exc:
            error = str(exc)
        except RvlmError as exc:
            error, refused = str(exc), True
        except redis.RedisError as exc:
            error = f"Redis error: {exc}"
        except KeyboardInterrupt:
            with self.lock:
                ist.duration_seconds += time.monotonic() - t0
                self._checkpoint()
            self.stopped = True
            raise
        except Exception as exc:  # one index's bug must not lose the others' state
            error = f"unexpected {type(exc).__name__}: {exc}"
        elapsed = time.monotonic() - t0
        with self.lock:
            ist.duration_seconds += elapsed
            ist.finished_at = now_iso()
            ist.refused = refused
            if report is not None:
                ok = getattr(report, "result", "failed") == "succeeded"
                if isinstance(getattr(report, "resumed", None), bool):
                    ist.resumed = report.resumed  # the executor knows if its journal had work
                ist.documents = int(getattr(report, "documents", 0) or 0)
                ist.documents_rewritten = int(getattr(report, "documents_rewritten", 0) or 0)
                if not ok:
                    errors = list(getattr(getattr(report, "validation", None), "errors", []) or [])
                    error = getattr(report, "error", None) or "; ".join(errors) \
                        or "the migration failed"
                ist.report_path = self._write_index_report(name, report)
            ist.status = "succeeded" if report is not None and error is None else "failed"
            ist.error = error
            self._checkpoint()
            if ist.status == "failed" and self.state.failure_policy == "fail_fast":
                self.stopped = True
            self._notify(name, ist.status)

    def _write_index_report(self, name: str, report: Any) -> str | None:
        path = Path(self.state.report_dir) / f"{safe_name(name)}_report.yaml"
        try:
            text = report.to_yaml() if hasattr(report, "to_yaml") else yaml.safe_dump(
                report.to_dict(), sort_keys=False)
            atomic_write_text(path, text)
        except Exception:  # a report we cannot write must not fail the index
            return None
        return str(path)


__all__ = [
    "FAILURE_POLICIES",
    "BatchConflict",
    "BatchIndex",
    "BatchMigrationExecutor",
    "BatchMigrationPlanner",
    "BatchPlan",
    "BatchReport",
    "BatchState",
    "IndexState",
    "atomic_write_text",
    "find_conflicts",
    "safe_name",
    "state_in_use",
]
