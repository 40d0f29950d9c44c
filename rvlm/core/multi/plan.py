"""The plan of a multi-index run: one schema patch, many indexes (the ``batch plan`` file).

A multi-index run (``rvlm batch``, RedisVL's "batch migration") applies one shared schema
patch to many indexes in one resumable run; "batch" in rvlm's code means a batch of
documents, so the package is :mod:`rvlm.core.multi`, while the files and the public classes
keep the names RedisVL users know (``batch_plan.yaml``, :class:`BatchPlan`,
``BatchMigrationPlanner``, ...).

The plan (:class:`BatchPlan`, made by :mod:`~rvlm.core.multi.planner`) says which indexes were
selected, which are applicable (each with its own full plan written next to it,
``<dir>/<batch_id>/<index>.yaml``) and which are skipped, with the reason. It is refused
(``conflicts`` lists every pair) when two applicable indexes cover overlapping key prefixes
and the patch rewrites documents, or when a shared index rename or prefix change would make
two indexes collide. Its progress is :mod:`~rvlm.core.multi.state`, its outcome
:mod:`~rvlm.core.multi.report`, and :mod:`~rvlm.core.multi.executor` runs it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs

from rvlm.core.errors import RvlmError
from rvlm.core.migrate.plan import Plan
from rvlm.core.schema.yaml_format import dump_yaml, load_yaml
from rvlm.core.storage.files import atomic_write_text
from rvlm.core.storage.redisvl import is_redisvl_batch_plan, redisvl_batch_plan_advice

BATCH_PLAN_VERSION = 1
BATCH_MODE = "batch_drop_recreate"
FAILURE_POLICIES = ("fail_fast", "continue_on_error")

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


Entry = TypeVar("Entry", bound=attrs.AttrsInstance)


def entry_from_dict(cls: type[Entry], data: dict[str, Any], where: str, what: str) -> Entry:
    """``cls`` built from the keys of ``data`` it has fields for (other keys are ignored);
    a bad value raises RvlmError naming ``where`` and ``what``."""
    known = {a.name for a in attrs.fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in known})
    except (TypeError, ValueError) as exc:
        raise RvlmError(f"{where}: malformed {what} ({exc})") from None


def keyspace(prefixes: Sequence[str]) -> tuple[str, ...]:
    """Prefixes as FT.CREATE sees them: no prefix means every key (the empty prefix)."""
    return tuple(prefixes) or ("",)


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
        return tuple(dict.fromkeys(keyspace(self.source_prefixes)
                                   + keyspace(self.target_prefixes)))

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
        return entry_from_dict(cls, data, where, "index entry")


@attrs.frozen(kw_only=True)
class BatchConflict:
    """Why a multi-index run is refused: ``kind`` is ``shared_keys``, ``index_name`` or
    ``prefix``."""

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
    """A reviewed multi-index run: the shared patch, the selection, and one entry per index.

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
    requires_quantization: bool = False
    created_at: str = ""
    version: int = BATCH_PLAN_VERSION
    mode: str = BATCH_MODE
    path: Path | None = attrs.field(default=None, eq=False)
    plans: dict[str, Plan] = attrs.field(factory=dict, eq=False, repr=False)

    # -- views ---------------------------------------------------------------------------
    @property
    def refused(self) -> bool:
        """True when the run must not start (see ``conflicts``)."""
        return bool(self.conflicts)

    @property
    def applicable(self) -> list[BatchIndex]:
        return [i for i in self.indexes if i.applicable]

    @property
    def skipped(self) -> list[BatchIndex]:
        return [i for i in self.indexes if not i.applicable]

    @property
    def applicable_count(self) -> int:
        """How many indexes the run migrates (RedisVL's name)."""
        return len(self.applicable)

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
            "failure_policy": self.failure_policy,
            "requires_quantization": self.requires_quantization,
            "shared_patch": self.schema_patch_content,
            "schema_patch_path": self.schema_patch_path,
            "selection": dict(self.selection),
            "indexes": [i.to_dict() for i in self.indexes],
            "conflicts": [c.to_dict() for c in self.conflicts],
            "warnings": list(self.warnings),
            "created_at": self.created_at,
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
        if is_redisvl_batch_plan(data):
            raise RvlmError(redisvl_batch_plan_advice(data, source))
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
        # the patch: RedisVL's key (shared_patch) and its file; older rvlm files nest both
        patch = data.get("schema_patch") or {}
        if not isinstance(patch, dict):
            patch = {}
        patch = {"path": data.get("schema_patch_path", patch.get("path", "")),
                 "content": data.get("shared_patch", patch.get("content"))}
        try:
            conflicts = [BatchConflict.from_dict(c) for c in data.get("conflicts") or []]
        except (KeyError, TypeError) as exc:
            raise RvlmError(f"{source}: malformed conflicts ({exc})") from None
        return cls(
            version=data["version"],
            batch_id=data["batch_id"],
            mode=str(data.get("mode", BATCH_MODE)),
            schema_patch_path=str(patch["path"] or ""),
            schema_patch_content=patch["content"],
            selection=dict(data.get("selection") or {}),
            failure_policy=policy,
            indexes=[BatchIndex.from_dict(d, f"{source}: indexes[{n}]")
                     for n, d in enumerate(data["indexes"])],
            conflicts=conflicts,
            warnings=list(data.get("warnings") or []),
            requires_quantization=bool(data.get("requires_quantization", False)),
            created_at=str(data.get("created_at") or ""),
        )

    @classmethod
    def load(cls, path: str | Path) -> BatchPlan:
        """Read a batch plan file (per-index plans are loaded when needed)."""
        p = Path(path).resolve()
        plan = cls.from_dict(load_yaml(p), str(path))
        plan.path = p
        return plan


__all__ = ["BATCH_MODE", "FAILURE_POLICIES", "BatchConflict", "BatchIndex", "BatchPlan",
           "entry_from_dict", "keyspace", "safe_name"]
