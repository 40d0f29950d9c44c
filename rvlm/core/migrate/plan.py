"""The plan: the whole contract between ``rvlm plan`` and ``rvlm apply``.

Apply does what the plan says and nothing it does not. The YAML keeps the keys RedisVL users
know (``version``, ``mode``, ``source``, ``requested_changes``, ``merged_target_schema``,
``diff_classification``, ``rename_operations``, ``warnings``) and adds rvlm's: the server seen,
each change with the plugin (and version) that classified it, the ordered document
``operations``, whether it is lossy, overrides the user asked for, the estimated ``quality``
of every vector field whose KNN answers may change (:mod:`rvlm.core.quality.planning`), and a
``fingerprint`` that binds backups and journals to this exact plan (it covers all of the
above). Plans are deterministic: no timestamps.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from rvlm.core.convert import strings
from rvlm.core.errors import RvlmError
from rvlm.core.plugins.documents import DocumentOperation
from rvlm.core.schema.ftinfo import IndexStats
from rvlm.core.schema.model import IndexSchema
from rvlm.core.schema.yaml_format import dump_yaml, load_yaml, schema_from_dict, schema_to_dict

if TYPE_CHECKING:  # numpy is imported only by plans that convert vectors
    from rvlm.core.vectors import QuantizationScheme

PLAN_VERSION = 1
#: ``drop_recreate`` (the default): drop the source, rewrite documents, create the target.
DROP_RECREATE = "drop_recreate"
#: ``online``: build the target next to the source and move an alias (no document operations).
ONLINE = "online"
MODES = (DROP_RECREATE, ONLINE)


@attrs.frozen(kw_only=True)
class PlannedChange:
    """One change as planned: its type, the plugin that classified it, and the verdict."""

    type: str
    plugin: str
    plugin_version: str
    field: str | None = None
    new_field: str | None = None
    supported: bool = True
    blocked_reasons: tuple[str, ...] = attrs.field(default=(), converter=strings)
    warnings: tuple[str, ...] = attrs.field(default=(), converter=strings)
    lossy: bool = False
    summary: str = ""
    details: dict[str, Any] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "plugin": self.plugin,
                               "plugin_version": self.plugin_version}
        if self.field is not None:
            out["field"] = self.field
        if self.new_field is not None:
            out["new_field"] = self.new_field
        out["supported"] = self.supported
        if self.blocked_reasons:
            out["blocked_reasons"] = list(self.blocked_reasons)
        if self.warnings:
            out["warnings"] = list(self.warnings)
        if self.lossy:
            out["lossy"] = True
        if self.summary:
            out["summary"] = self.summary
        if self.details:
            out["details"] = self.details
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlannedChange:
        return cls(**d)


def field_renames(changes: Iterable[PlannedChange]) -> dict[str, str]:
    """Source field name -> target field name, for every change that renames a field."""
    return {c.field: c.new_field for c in changes
            if c.field and c.new_field and c.field != c.new_field}


def recorded_schemes(changes: Iterable[PlannedChange]) -> dict[str, QuantizationScheme]:
    """Target field name -> the vector conversion a supported change recorded for it (its
    ``details.scheme``, as a :class:`~rvlm.core.vectors.QuantizationScheme`)."""
    recorded = [c for c in changes
                if c.supported and isinstance(c.details.get("scheme"), dict)]
    if not recorded:
        return {}
    from rvlm.core.vectors import QuantizationScheme

    return {c.new_field or c.field or "": QuantizationScheme.from_dict(c.details["scheme"])
            for c in recorded}


@attrs.frozen(kw_only=True)
class Plan:
    """A reviewed migration of one index (see the module docstring)."""

    source_schema: IndexSchema
    source_stats: IndexStats
    key_sample: tuple[str, ...]
    requested_changes: dict[str, Any]
    target_schema: IndexSchema
    changes: tuple[PlannedChange, ...]
    operations: tuple[DocumentOperation, ...]
    warnings: tuple[str, ...] = ()
    server: dict[str, Any] = attrs.field(factory=dict)
    overrides: dict[str, Any] = attrs.field(factory=dict)
    #: The alias the user named the index by (``--index ALIAS``), if any: FT.DROPINDEX removes
    #: it with the index, so it must be pointed at the target again after the create.
    source_alias: str | None = None
    version: int = PLAN_VERSION
    mode: str = DROP_RECREATE
    #: An alias the user named (``--alias``): apply points it at the target (creating it if it
    #: does not exist); rollback points it back at the source (or deletes it if it was new).
    alias: str | None = None
    #: Aliases of the source to keep (``--keep-alias``, and those an earlier rvlm run
    #: recorded): FT.DROPINDEX removes them with the index, apply points them at the target.
    keep_aliases: tuple[str, ...] = attrs.field(default=(), converter=strings)
    #: Online mode only: drop the source index once the alias moved to the target.
    drop_source: bool = True
    #: Per vector field whose KNN answers may change: the recall estimate (or why there is
    #: none) and the floor asked for with ``--min-recall`` (:mod:`rvlm.core.quality.planning`).
    quality: dict[str, dict[str, Any]] = attrs.field(factory=dict)

    # -- derived views -------------------------------------------------------------------
    @property
    def source_index(self) -> str:
        return self.source_schema.index.name

    @property
    def target_index(self) -> str:
        return self.target_schema.index.name

    @property
    def supported(self) -> bool:
        return all(c.supported for c in self.changes)

    @property
    def blocked_reasons(self) -> list[str]:
        out: list[str] = []
        for c in self.changes:
            name = c.field or c.new_field
            label = f"{c.type} {name}" if name else c.type
            out.extend(f"{label}: {r}" for r in c.blocked_reasons)
        return out

    @property
    def lossy(self) -> bool:
        return any(c.lossy for c in self.changes) or any(o.lossy for o in self.operations)

    @property
    def changes_nothing(self) -> bool:
        """No change, no document operation, no alias to point, and a target equal to the
        source: apply does nothing at all (no drop, no backup)."""
        return (not self.changes and not self.operations and self.alias is None
                and self.target_schema.without_unknowns()
                == self.source_schema.without_unknowns())

    @property
    def rewrites_documents(self) -> bool:
        return bool(self.operations)

    @property
    def online(self) -> bool:
        return self.mode == ONLINE

    @property
    def aliases(self) -> tuple[str, ...]:
        """Every alias apply points at the target: the one named with ``--alias``, the one
        ``--index`` named (``source_alias``), then the kept ones, without repeats."""
        return tuple(dict.fromkeys(a for a in (self.alias, self.source_alias,
                                               *self.keep_aliases) if a))

    def field_renames(self) -> dict[str, str]:
        """Source field name -> target field name (see :func:`field_renames`)."""
        return field_renames(self.changes)

    def recorded_schemes(self) -> dict[str, QuantizationScheme]:
        """Target field name -> its vector conversion (see :func:`recorded_schemes`)."""
        return recorded_schemes(self.changes)

    @property
    def min_recall(self) -> float | None:
        """The floor ``rvlm plan --min-recall`` recorded (apply uses it unless given another)."""
        floors = [e["min_recall"] for e in self.quality.values()
                  if e.get("min_recall") is not None]
        return min(floors) if floors else None

    def map_key(self, key: bytes) -> bytes:
        """Where ``key`` lives after the plan's prefix renames (each operation's
        ``rename_prefix``, in order)."""
        for op in self.operations:
            if op.rename_prefix is not None:
                old, new = op.rename_prefix[0].encode(), op.rename_prefix[1].encode()
                if key.startswith(old):
                    key = new + key[len(old):]
        return key

    def key_sample_after(self) -> list[bytes]:
        """The sampled keys (as bytes, the inverse of :func:`~rvlm.core.redis.resp.to_str`) where
        they live after the migration: see :meth:`map_key`."""
        return [self.map_key(k.encode("utf-8", "surrogateescape")) for k in self.key_sample]

    def rename_operations(self) -> dict[str, Any]:
        rename_index = self.target_index if self.target_index != self.source_index else None
        change_prefix = None
        if self.target_schema.index.prefix != self.source_schema.index.prefix:
            p = self.target_schema.index.prefix
            change_prefix = p[0] if len(p) == 1 else list(p)
        renames = [{"old_name": c.field, "new_name": c.new_field}
                   for c in self.changes if c.type == "rename_field"]
        return {"rename_index": rename_index, "change_prefix": change_prefix,
                "rename_fields": renames}

    def change_warnings(self) -> list[str]:
        return [w for c in self.changes for w in c.warnings]

    def all_warnings(self) -> list[str]:
        """Every warning: the plan's own (``warnings``), then each change's, in order. This is
        the top-level ``warnings`` list of the YAML; each change also keeps its own."""
        return [*self.warnings, *self.change_warnings()]

    # -- YAML ----------------------------------------------------------------------------
    def body(self) -> dict[str, Any]:
        """Everything but the fingerprint, in file order."""
        return {
            "version": self.version,
            "mode": self.mode,
            "source": {
                "index_name": self.source_index,
                "schema_snapshot": schema_to_dict(self.source_schema),
                "stats_snapshot": attrs.asdict(self.source_stats),
                "keyspace": {
                    "storage_type": self.source_schema.index.storage_type,
                    "prefixes": list(self.source_schema.index.prefix),
                    "key_separator": self.source_schema.index.key_separator,
                    "key_sample": list(self.key_sample),
                },
            },
            "requested_changes": self.requested_changes,
            "merged_target_schema": schema_to_dict(self.target_schema),
            "diff_classification": {"supported": self.supported,
                                    "blocked_reasons": self.blocked_reasons},
            "rename_operations": self.rename_operations(),
            "warnings": self.all_warnings(),
            "rvlm": {
                "server": self.server,
                "lossy": self.lossy,
                "overrides": self.overrides,
                **({"source_alias": self.source_alias} if self.source_alias else {}),
                **({"alias": self.alias} if self.alias else {}),
                **({"keep_aliases": list(self.keep_aliases)} if self.keep_aliases else {}),
                **({"drop_source": self.drop_source} if self.online else {}),
                "changes": [c.to_dict() for c in self.changes],
                "operations": [o.to_dict() for o in self.operations],
                **({"quality": self.quality} if self.quality else {}),
            },
        }

    @property
    def fingerprint(self) -> str:
        """sha256 over the plan's canonical JSON: binds backups and journals to this plan."""
        return hashlib.sha256(_canonical(self.body()).encode()).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        body = self.body()
        body["rvlm"]["fingerprint"] = self.fingerprint
        return body

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict())

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml(), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: Any, source: str = "plan") -> Plan:
        if not isinstance(data, dict):
            raise RvlmError(f"{source}: a plan must be a mapping")
        try:
            if data.get("version") != PLAN_VERSION:
                raise RvlmError(f"{source}: unsupported plan version {data.get('version')!r}")
            src = data["source"]
            extra = data.get("rvlm") or {}
            if not extra:
                from rvlm.core.storage.redisvl import is_redisvl_plan, redisvl_plan_advice

                if is_redisvl_plan(data):
                    raise RvlmError(redisvl_plan_advice(data, source))
                raise RvlmError(f"{source}: not an rvlm plan (no 'rvlm' section); "
                                "make one with 'rvlm plan'")
            changes = tuple(PlannedChange.from_dict(c) for c in extra.get("changes", ()))
            mode = data.get("mode", DROP_RECREATE)
            if mode not in MODES:
                raise RvlmError(f"{source}: unknown mode {mode!r} (known: {', '.join(MODES)})")
            drop_source = extra.get("drop_source", True)
            if not isinstance(drop_source, bool):
                raise RvlmError(f"{source}: rvlm.drop_source must be true or false")
            plan = cls(
                version=data["version"],
                mode=mode,
                alias=extra.get("alias"),
                keep_aliases=tuple(str(a) for a in extra.get("keep_aliases") or ()),
                drop_source=drop_source,
                source_schema=schema_from_dict(src["schema_snapshot"], f"{source}: source"),
                source_stats=IndexStats(**src.get("stats_snapshot", {})),
                key_sample=tuple(src.get("keyspace", {}).get("key_sample", ())),
                requested_changes=data.get("requested_changes") or {},
                target_schema=schema_from_dict(data["merged_target_schema"],
                                               f"{source}: merged_target_schema"),
                changes=changes,
                operations=tuple(DocumentOperation.from_dict(o)
                                 for o in extra.get("operations", ())),
                warnings=_plan_warnings(data.get("warnings") or [], changes),
                server=extra.get("server") or {},
                overrides=extra.get("overrides") or {},
                source_alias=extra.get("source_alias"),
                quality=_quality(extra.get("quality"), source),
            )
        except RvlmError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise RvlmError(f"{source}: malformed plan ({type(exc).__name__}: {exc})") from None
        recorded = extra.get("fingerprint")
        if not isinstance(recorded, str) or not recorded:
            raise RvlmError(f"{source}: the plan has no fingerprint (rvlm.fingerprint), so "
                            "nothing shows it is the plan 'rvlm plan' wrote; make a new plan")
        # Every key a user can see counts: the file as loaded (less its fingerprint) must be
        # exactly the plan it describes, derived keys (source.index_name,
        # diff_classification, rename_operations, warnings) and unknown keys included.
        written = {**data, "rvlm": {k: v for k, v in extra.items() if k != "fingerprint"}}
        edited = _first_difference(json.loads(_canonical(written)),
                                   json.loads(_canonical(plan.body())))
        if edited is not None or recorded != plan.fingerprint:
            where = f" ({edited} differs)" if edited else ""
            raise RvlmError(f"{source}: the plan was edited after it was made{where}; "
                            "make a new plan with 'rvlm plan'")
        return plan

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        return cls.from_dict(load_yaml(path), str(path))


def _quality(value: Any, source: str) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) for k, v in value.items()):
        raise RvlmError(f"{source}: rvlm.quality must map field names to their figures")
    return value


def _canonical(data: Any) -> str:
    """The JSON text a fingerprint is taken over (sorted keys, no spaces)."""
    return json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))


def _first_difference(got: Any, want: Any, path: str = "") -> str | None:
    """The dotted path of the first place two JSON values differ, or None when equal."""
    if isinstance(got, dict) and isinstance(want, dict):
        for key in sorted(set(got) | set(want), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in got or key not in want:
                return where
            found = _first_difference(got[key], want[key], where)
            if found is not None:
                return found
        return None
    if isinstance(got, list) and isinstance(want, list):
        if len(got) != len(want):
            return path or "the plan"
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            found = _first_difference(a, b, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    return None if got == want and type(got) is type(want) else (path or "the plan")


def _plan_warnings(top: list[Any], changes: tuple[PlannedChange, ...]) -> tuple[str, ...]:
    """The plan's own warnings: the top-level list without the changes' (which end it)."""
    own = [str(w) for w in top]
    tail = [w for c in changes for w in c.warnings]
    if tail and own[len(own) - len(tail):] == tail:
        own = own[:len(own) - len(tail)]
    return tuple(own)
