"""Planning a multi-index run: one schema patch tested on every selected index.

:class:`BatchMigrationPlanner` (RedisVL's name) selects indexes by a glob, a list or a file,
plans each one the way ``rvlm plan`` does (:func:`rvlm.core.migrate.planner.plan_inputs`), and
finds the pairs that must not run together (:func:`find_conflicts`). It never writes to Redis.

    plan = BatchMigrationPlanner().create_batch_plan(
        redis_url=url, pattern="*_idx", schema_patch_path="patch.yaml")
    plan.write("batch_plan.yaml")
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import redis

from rvlm.core.errors import RvlmError
from rvlm.core.migrate.indexes import prefixes_overlap
from rvlm.core.migrate.plan import Plan
from rvlm.core.migrate.planner import PlanOptions, match_indexes, plan_inputs
from rvlm.core.migrate.report import now_iso
from rvlm.core.multi.plan import (
    FAILURE_POLICIES,
    BatchConflict,
    BatchIndex,
    BatchPlan,
    keyspace,
)
from rvlm.core.redis.connection import connect, list_indexes
from rvlm.core.schema.yaml_format import load_yaml


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
                shared = prefixes_overlap(keyspace(a.source_prefixes),
                                          keyspace(b.source_prefixes))
                if shared:
                    prefixes = tuple(dict.fromkeys(p for s in shared for p in s))
                    out.append(BatchConflict(
                        kind="shared_keys", indexes=pair, prefixes=prefixes,
                        message=f"{a.name} and {b.name} cover overlapping prefixes "
                                f"{_fmt(prefixes)} and the patch rewrites documents "
                                "(they would be rewritten twice); plan them in two batches, "
                                "the second after the first ran, with --allow-shared-keys"))
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
            a_moves = keyspace(a.target_prefixes) != keyspace(a.source_prefixes)
            b_moves = keyspace(b.target_prefixes) != keyspace(b.source_prefixes)
            if a_moves or b_moves:
                hits: list[tuple[str, str]] = []
                hits += prefixes_overlap(keyspace(a.target_prefixes),
                                         keyspace(b.target_prefixes))
                if a_moves:
                    hits += prefixes_overlap(keyspace(a.target_prefixes),
                                             keyspace(b.source_prefixes))
                if b_moves:
                    hits += prefixes_overlap(keyspace(a.source_prefixes),
                                             keyspace(b.target_prefixes))
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
    ``sample_size`` is the planner's calibration sample per index; ``allow_shared_keys``
    lets an index's plan rewrite documents a live index outside the batch also covers
    (recorded in its plan; two selected indexes over the same keys are still refused).
    """

    def __init__(self, *, plugins: Sequence[Any] = (), sample_size: int | None = None,
                 mode: str = "drop_recreate", alias: str | None = None,
                 target_index: str | None = None, target_prefix: str | None = None,
                 drop_source: bool = True, allow_shared_keys: bool = False) -> None:
        self.plugins = tuple(plugins)
        self.sample_size = sample_size
        self.allow_shared_keys = allow_shared_keys
        #: online mode: each of ``alias``, ``target_index`` and ``target_prefix`` names the
        #: index's own as a template (``{index}``, and ``{prefix}`` for the prefix), e.g.
        #: ``alias="{index}_live"``, ``target_prefix="{prefix}_v2:"``
        self.mode = mode
        self.alias = alias
        self.target_index = target_index
        self.target_prefix = target_prefix
        self.drop_source = drop_source

    def options_for(self, name: str) -> PlanOptions:
        """The plan options of index ``name`` (the templates filled in)."""
        kwargs: dict[str, Any] = {"mode": self.mode, "drop_source": self.drop_source,
                                  "target_prefix": self.target_prefix,
                                  "allow_shared_keys": self.allow_shared_keys}
        if self.sample_size:
            kwargs["sample_size"] = self.sample_size
        if self.alias is not None:
            try:
                kwargs["alias"] = self.alias.format(index=name)
            except (KeyError, IndexError, ValueError) as exc:
                raise RvlmError(f"--alias {self.alias!r}: only {{index}} can be filled in "
                                f"({exc})") from None
        if self.target_index is not None:
            kwargs["target_index"] = self.target_index
        elif self.mode == "online":
            kwargs["target_index"] = "{index}_v2"
        return PlanOptions(**kwargs)

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
        options = PlanOptions(allow_shared_keys=self.allow_shared_keys)
        if self.sample_size:
            options = PlanOptions(sample_size=self.sample_size,
                                  allow_shared_keys=self.allow_shared_keys)
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
                plan = attrs.evolve(inputs, options=self.options_for(name)).plan(client, name)
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
        # with each other (the run's plan names the pair instead of skipping both).
        candidates = [e for e in entries if e.applicable or e.name in only_shared]
        conflicts = find_conflicts(candidates)
        # Plans are written for every planned index (also skipped ones), for review.
        quantizes = any(op.kind == "convert_vector" for e in entries if e.applicable
                        for op in plans[e.name].operations)
        run_plan = BatchPlan(
            batch_id=batch_id_for(content, selection, names, failure_policy),
            schema_patch_path=str(patch_path), schema_patch_content=content,
            selection=selection, failure_policy=failure_policy, indexes=entries,
            conflicts=conflicts, plans=plans, requires_quantization=quantizes,
            created_at=now_iso())
        if not run_plan.applicable and not conflicts:
            run_plan.warnings.append("no selected index is applicable: the batch has nothing to "
                                     "do")
        return run_plan

    @staticmethod
    def write_batch_plan(batch_plan: BatchPlan, path: str | Path) -> Path:
        """Write ``batch_plan`` and its per-index plans (what ``rvlm batch plan --plan-out``
        writes; RedisVL's call); returns the path written."""
        return batch_plan.write(path)


__all__ = ["BatchMigrationPlanner", "batch_id_for", "find_conflicts"]
