"""The planner: from an index and a patch (or a target schema) to a plan a person can trust.

It reads the live index once (FT.INFO into the lossless model), merges the patch, lists the
differences, lets the plugins claim them as changes (``detect_changes``; a difference nobody
claims blocks the plan), and asks each change's plugin to ``classify_change``. It never writes
to Redis. The checks that concern the whole plan (other live indexes covering the same keys,
downtime, an index still building, indexing failures, values FT.INFO cannot report) live here;
the checks of one change live in its plugin.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import redis

from rvlm.core.errors import RvlmError
from rvlm.core.migrate.aliases import alias_index, lost_aliases_note, recorded_aliases
from rvlm.core.migrate.cluster_checks import incomplete, layout_problems, migration_warning
from rvlm.core.migrate.estimate import downtime_seconds
from rvlm.core.migrate.indexes import prefixes_overlap
from rvlm.core.migrate.online.checks import blue_green_findings, prefix_problems
from rvlm.core.migrate.plan import (
    DROP_RECREATE,
    MODES,
    ONLINE,
    Plan,
    PlannedChange,
    field_renames,
    recorded_schemes,
)
from rvlm.core.plugins.changes import Change, Classification
from rvlm.core.plugins.context import PlanContext
from rvlm.core.plugins.documents import Document, DocumentOperation, operation_problems
from rvlm.core.plugins.host import PluginHost, host_with, rvlm_version
from rvlm.core.quality.defaults import DEFAULT_K
from rvlm.core.quality.model import QualityOptions
from rvlm.core.quality.planning import below_floor, describe, plan_quality
from rvlm.core.redis.capabilities import Capabilities, detect
from rvlm.core.redis.connection import index_exists, list_indexes, other_indexes, read_index
from rvlm.core.redis.docio.sample import last_failed_key, read_documents, sample_keys
from rvlm.core.redis.resp import to_str
from rvlm.core.redis.routing import node_map
from rvlm.core.redis.topology import UNCOORDINATED, cluster_migrations, slot_of
from rvlm.core.schema.diff import LikelyRename, differences, likely_renames
from rvlm.core.schema.model import IndexSchema
from rvlm.core.schema.patch import (
    SchemaPatch,
    ignore_json_paths_on_hash,
    load_patch,
    merge,
    patch_from_dict,
    patch_from_target,
)
from rvlm.core.units import human_bytes, mib_to_bytes

KEY_SAMPLE_SIZE = 20
DEFAULT_SAMPLE_SIZE = 1000


def _names(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class PlanOptions:
    """``sample_size``: documents read to calibrate and measure quantization.
    ``allow_shared_keys``: go on although another live index covers the same keys (recorded
    in the plan as an override).
    ``mode``: ``drop_recreate`` (default) or ``online`` (build the target next to the source,
    then move ``alias`` to it in one command; index-side changes only).
    ``alias``: an alias clients query; apply points it at the target (creating it if new).
    ``keep_aliases``: aliases of the source to keep across the drop (FT.DROPINDEX removes
    them); those an earlier rvlm run recorded are kept without being named.
    ``drop_source``: online mode: drop the source once the alias moved (default True).
    ``min_recall``: block the plan when a vector field's estimated recall@``recall_k`` is
    under it (recorded in the plan; apply measures against it unless told another floor).
    ``key_sample_limit``: keys recorded in the plan's key sample (validation checks they still
    exist; RedisVL's ``key_sample_limit``). ``target_prefix``: the key prefix of the target
    index (the same as a patch's ``index.prefix``); online mode copies rewritten documents
    there. ``target_index``: the target index's name (the same as a patch's ``index.name``).
    Both may name the source as ``{index}`` (its name) and ``{prefix}`` (its prefix without a
    trailing separator), so that one value fits many indexes: ``--target-prefix '{prefix}_v2:'``."""

    sample_size: int = DEFAULT_SAMPLE_SIZE
    key_sample_limit: int = KEY_SAMPLE_SIZE
    allow_shared_keys: bool = False
    mode: str = DROP_RECREATE
    alias: str | None = None
    keep_aliases: tuple[str, ...] = attrs.field(default=(), converter=_names)
    drop_source: bool = True
    min_recall: float | None = None
    recall_k: int = DEFAULT_K
    target_prefix: str | None = None
    target_index: str | None = None


def expand(template: str, source: IndexSchema, option: str) -> str:
    """``template`` with ``{index}`` (the source's name) and ``{prefix}`` (its first prefix
    without a trailing separator) filled in; any other ``{...}`` is kept as written (a Redis
    Cluster hash tag, e.g. ``{t1}new:``)."""
    stem = (source.index.prefix[0] if source.index.prefix else "").rstrip(":_-/.|#")
    values = {"index": source.name, "prefix": stem}
    out = re.sub(r"\{(index|prefix)\}", lambda m: values[m.group(1)], template)
    if not out:
        raise RvlmError(f"{option} {template!r} is empty for index {source.name!r}")
    return out


def _per_shard_siblings(client: redis.Redis, source: IndexSchema) -> list[str]:
    """The other indexes over the same prefixes whose names live on other nodes: ``source``
    is then one of a per-shard set (one index per node) on an uncoordinated cluster."""
    nodes = node_map(client)
    if nodes is None:
        return []
    home = nodes.owner(slot_of(source.name))
    return [name for name, other in other_indexes(client, (source.name,)).items()
            if other.index.prefix == source.index.prefix
            and nodes.owner(slot_of(name)) != home]


#: What the server uses for a value FT.INFO cannot report when FT.CREATE leaves it out.
UNREPORTED_DEFAULTS = {
    "ef_runtime": "10 (server default)",
    "epsilon": "0.01 (server default)",
    "block_size": "1024 (server default)",
    "initial_cap": "the server default",
    "phonetic_matcher": "none (no phonetic matching)",
}


def make_plan(
    client: redis.Redis,
    index_name: str,
    *,
    patch: SchemaPatch | None = None,
    target: IndexSchema | None = None,
    options: PlanOptions | None = None,
    host: PluginHost | None = None,
    plugins: Sequence[Any] = (),
    capabilities: Capabilities | None = None,
) -> Plan:
    """Plan the migration of ``index_name`` by ``patch`` or to ``target`` (exactly one).

    Reads the server (never writes). ``capabilities`` overrides what :func:`detect` would
    report (for tests and for planning against a server you will upgrade first).
    Raises :class:`RvlmError` for bad input (unknown index, field, section; a patch that
    contradicts the live schema); a change that cannot run is a *blocked* change in the plan.
    """
    if (patch is None) == (target is None):
        raise RvlmError("give a schema patch or a target schema (exactly one)")
    options = options or PlanOptions()
    if options.mode not in MODES:
        raise RvlmError(f"unknown mode {options.mode!r} (known: {', '.join(MODES)})")
    if options.alias is not None and not options.alias.strip():
        raise RvlmError("--alias needs a name")
    # the same checks (and one-line messages) as apply's --min-recall and --recall-k
    QualityOptions(min_recall=options.min_recall, recall_k=options.recall_k)
    if options.target_prefix is not None and not options.target_prefix:
        raise RvlmError("--target-prefix needs a prefix")
    host = host or host_with(plugins)
    host.check()
    if patch is not None:
        owned = host.patch_sections()
        unknown = [s for s in patch.sections if s not in owned]
        if unknown:
            raise RvlmError(f"{patch.source}: changes.{unknown[0]}: no installed plugin owns "
                            f"this section{host.load_errors_note()}")
    caps = capabilities or detect(client)
    info = read_index(client, index_name)
    source = info.schema
    alias = index_name if source.name != index_name else None
    index_names = tuple(list_indexes(client))

    cache: dict[tuple[str, ...], list[Document]] = {}
    calib_keys: list[bytes] | None = None

    def sample(names: Sequence[str]) -> list[Document]:
        nonlocal calib_keys
        key = tuple(names)
        if key not in cache:
            if calib_keys is None:
                calib_keys = sample_keys(client, source.name, options.sample_size)
                # the documents the index could not index are not in a query's sample
                failed = (last_failed_key(client, source.name)
                          if info.stats.indexing_failures else None)
                if failed is not None and failed not in calib_keys:
                    calib_keys.append(failed)
            cache[key] = read_documents(client, source.storage_type, calib_keys, names)
        return cache[key]

    def keys_exist(keys: Sequence[bytes]) -> list[bool]:
        if not keys:
            return []
        pipe = client.pipeline(transaction=False)
        for k in keys:
            pipe.exists(k)
        return [bool(x) for x in pipe.execute()]

    def read_source(keys: Sequence[bytes], names: Sequence[str]) -> list[Document]:
        return read_documents(client, source.storage_type, keys, names)

    if options.key_sample_limit < 0:
        raise RvlmError(f"the key sample limit must be 0 or more, not {options.key_sample_limit}")
    key_sample = tuple(sample_keys(client, source.name, options.key_sample_limit))
    others = other_indexes(client, (source.name,))

    renames: dict[str, str] = {}
    sections: dict[str, Any] = {}
    explicit: set[tuple[str, str]] = set()
    suggestions: list[LikelyRename] = []
    if patch is not None:
        merged, ignored_paths = ignore_json_paths_on_hash(source, merge(source, patch))
        renames = patch.renames
        sections = dict(patch.sections)
        requested = patch.requested_changes()
        explicit = {(renames.get(u.name, u.name), k) for u in patch.update_fields
                    for k in u.attrs}
    else:
        assert target is not None
        merged, ignored_paths = ignore_json_paths_on_hash(source, target)
        requested = patch_from_target(source, merged).requested_changes()
        suggestions = likely_renames(source, merged, renames)
    if options.target_prefix is not None:
        asked = (expand(options.target_prefix, source, "--target-prefix"),)
        if merged.index.prefix not in (source.index.prefix, asked):
            raise RvlmError(f"the patch moves the keys to {list(merged.index.prefix)} and "
                            f"--target-prefix says {asked[0]!r}; give one of them")
        merged = merged.with_index(prefix=asked)
    if options.target_index is not None:
        name = expand(options.target_index, source, "--target-index")
        if merged.name not in (source.name, name):
            raise RvlmError(f"the patch renames the index to {merged.name!r} and "
                            f"--target-index says {name!r}; give one of them")
        merged = merged.with_index(name=name)

    def names_taken(tgt: IndexSchema) -> tuple[str, ...]:
        # An alias is no index (FT._LIST omits it), yet FT.CREATE accepts its name and
        # then two things answer to it: a rename onto an alias is refused like one onto an index.
        if (tgt.name != source.name and tgt.name not in index_names
                and index_exists(client, tgt.name)):
            return (*index_names, tgt.name)
        return index_names

    def context_for(tgt: IndexSchema) -> PlanContext:
        return PlanContext(source=source, target=tgt, stats=info.stats, capabilities=caps,
                           sample=sample, key_sample=key_sample, other_indexes=others,
                           index_names=names_taken(tgt), keys_exist=keys_exist,
                           options=attrs.asdict(options), reader=read_source)

    # which differences are which changes is plugin work; nobody's is refused, never ignored
    changes, unclaimed = host.detect(differences(source, merged, renames), source, merged)
    final = merged
    owners = host.change_types()
    section_owner = {ct.patch_section: name for name, (_p, ct) in owners.items()
                     if ct.patch_section}
    for section, value in sections.items():
        final = host.merge_patch_section(section, value, final, context_for(final))
        changes.append(Change(type=section_owner[section], details={"section": section,
                                                                    "value": value}))
    context = context_for(final)

    planned: list[PlannedChange] = []
    operations: list[DocumentOperation] = []
    for change in changes:
        verdict: Classification = host.classify(change, context)
        plugin = owners[change.type][0]
        planned.append(PlannedChange(
            type=change.type, plugin=plugin, plugin_version=host.version(plugin),
            field=change.field, new_field=change.new_field, supported=verdict.supported,
            blocked_reasons=verdict.blocked_reasons, warnings=verdict.warnings,
            lossy=verdict.lossy, summary=verdict.summary,
            details={**change.details, **verdict.details},
        ))
        operations.extend(verdict.operations)
    for d in unclaimed:
        planned.append(_blocked(
            "unhandled_difference",
            f"{d.label}: no installed plugin handles this difference{host.load_errors_note()}, "
            "and rvlm does not ignore one; leave it out of the target, or install a plugin "
            "that claims it"))
    # A whole-document replacement (converts_to) runs last, on the values the others left.
    operations.sort(key=lambda o: o.converts_to is not None)
    quality = _quality(source, final, planned, renames, sample, info.stats.num_docs, options)

    warnings: list[str] = list(ignored_paths)
    online = options.mode == ONLINE
    if alias is not None and online:
        warnings.append(
            f"{alias!r} is an alias of {source.name!r}: the plan migrates {source.name!r}; "
            f"apply moves the alias once {final.name!r} is built and validated "
            f"(FT.ALIASUPDATE {alias} {final.name})")
    elif alias is not None:
        warnings.append(
            f"{alias!r} is an alias of {source.name!r}: the plan migrates {source.name!r}, and "
            f"dropping it removes the alias; apply points it at the new index right after the "
            f"create (FT.ALIASUPDATE {alias} {final.name}) and rollback points it back")
    aliases = tuple(dict.fromkeys(a for a in (options.alias, alias) if a))
    if options.alias is not None and options.alias != alias:
        warnings += _alias_checks(client, options.alias, source, final, index_names, planned)
    keep = _kept_aliases(client, options.keep_aliases, source, aliases, planned)
    aliases = tuple(dict.fromkeys((*aliases, *keep)))
    drops_source = (not online or options.drop_source) and bool(changes or unclaimed)
    if drops_source:
        warnings.append(lost_aliases_note(source.name, aliases))
    if online:
        _online_checks(source, final, operations, aliases, planned)
    if caps.cluster:
        siblings = _per_shard_siblings(client, source) if (
            caps.search_layout == UNCOORDINATED and incomplete(source)) else []
        for reason in layout_problems(caps.search_layout, source, final, aliases, siblings):
            planned.append(_blocked("cluster_layout", reason))
        moving = migration_warning(cluster_migrations(client))
        if moving:
            warnings.append(moving)
    for s in suggestions:
        warnings.append(
            f"field {s.old_name!r} disappears and an identical field {s.new_name!r} appears: "
            f"if this is a rename, plan with a schema patch containing {s.patch_text()} "
            f"(as planned, {s.old_name!r} is removed and {s.new_name!r} added)")
    overrides: dict[str, Any] = {}
    if changes or unclaimed:
        warnings += _plan_checks(source, final, info, operations, others, options, overrides,
                                 planned, renames, explicit, aliases)
    else:
        warnings.append("the patch changes nothing: the target schema equals the source, so "
                        "apply does nothing (no drop, no backup)")

    plan = Plan(
        source_schema=source,
        source_stats=info.stats,
        key_sample=tuple(to_str(k) for k in key_sample),
        requested_changes=requested,
        target_schema=final,
        changes=tuple(planned),
        operations=tuple(operations),
        warnings=tuple(warnings),
        server=caps.to_dict(),
        overrides=overrides,
        source_alias=alias,
        mode=options.mode,
        alias=options.alias,
        keep_aliases=keep,
        drop_source=options.drop_source if online else True,
        quality=quality,
    )
    if online and operations and plan.supported:
        # the copy's needs from the server: target prefix free, memory, notifications
        found, blocked = blue_green_findings(client, plan, others, list(key_sample))
        extra = [_blocked("online_mode", reason) for reason in blocked]
        plan = attrs.evolve(plan, warnings=(*plan.warnings, *found),
                            changes=(*plan.changes, *extra))
    return plan


def _quality(source: IndexSchema, target: IndexSchema, planned: list[PlannedChange],
             renames: Mapping[str, str], sample: SampleFn, documents: int,
             options: PlanOptions) -> dict[str, dict[str, Any]]:
    """The plan's ``rvlm.quality`` section; a field estimated under ``--min-recall`` adds a
    blocked ``quality`` change naming the figure."""
    quality = plan_quality(source, target, renames={**renames, **field_renames(planned)},
                           schemes=recorded_schemes(planned), sample=sample,
                           documents=documents, k=options.recall_k,
                           min_recall=options.min_recall)
    for name, entry in quality.items():
        if below_floor(entry):
            planned.append(_blocked("quality", describe(name, entry) + "; keep a wider "
                                    "datatype, or plan with a lower --min-recall"))
    return quality


def _blocked(kind: str, reason: str) -> PlannedChange:
    return PlannedChange(type=kind, plugin="rvlm", plugin_version=rvlm_version(),
                         supported=False, blocked_reasons=(reason,))


def _kept_aliases(client: redis.Redis, named: Sequence[str], source: IndexSchema,
                  aliases: Sequence[str], planned: list[PlannedChange]) -> tuple[str, ...]:
    """The aliases to keep: each ``--keep-alias`` (it must point at the source: a blocked
    change otherwise), then those an earlier rvlm run recorded for the source."""
    keep: list[str] = []
    for name in named:
        if not name.strip():
            raise RvlmError("--keep-alias needs a name")
        points_at = alias_index(client, name)
        if name == source.name or name in list_indexes(client):
            planned.append(_blocked("alias", f"--keep-alias {name!r} is the name of an index, "
                                             "not an alias"))
            continue
        if points_at != source.name:
            where = "is no alias" if points_at is None else f"points at {points_at!r}"
            planned.append(_blocked("alias", f"--keep-alias {name!r}: it {where}, not an alias "
                                             f"of {source.name!r}; name an alias of the source"))
            continue
        keep.append(name)
    keep += recorded_aliases(client, source.name)
    return tuple(a for a in dict.fromkeys(keep) if a not in aliases)


def _alias_checks(client: redis.Redis, name: str, source: IndexSchema, target: IndexSchema,
                  index_names: Sequence[str], planned: list[PlannedChange]) -> list[str]:
    """The alias named with ``--alias``: free, or already an alias of the source."""
    if name in (source.name, target.name) or name in index_names:
        planned.append(_blocked("alias", f"{name!r} is the name of an index, not an alias; "
                                         "name an alias of its own"))
        return []
    if not index_exists(client, name):
        return [f"alias {name!r} does not exist: apply creates it and points it at "
                f"{target.name!r}"]
    real = read_index(client, name).schema.name
    if real != source.name:
        planned.append(_blocked(
            "alias", f"alias {name!r} points at index {real!r}, not at the source "
                     f"{source.name!r}: moving it would take it away from {real!r}'s clients; "
                     f"name another alias, or point it at {source.name!r} first "
                     f"(FT.ALIASUPDATE {name} {source.name})"))
    return []


def _downtime_length(stats: Any, rewrites: bool) -> str:
    """How long the rebuild takes, in words (indexing plus the document rewrite)."""
    docs = stats.num_docs + stats.indexing_failures
    indexing_s, rewrite_s = downtime_seconds(stats, rewrites)
    if not docs:
        return "the index is empty: only the drop and the create"
    if indexing_s is None:
        return "indexing time unknown: the source reports none"
    total = indexing_s + (rewrite_s or 0.0)
    length = "under a second" if total < 1 else f"about {_duration(total)}"
    if rewrite_s:
        length += (f": {_duration(indexing_s)} of indexing plus {_duration(rewrite_s)} "
                   "of document rewrite")
    return length


def _online_checks(source: IndexSchema, target: IndexSchema,
                   operations: list[DocumentOperation], aliases: tuple[str, ...],
                   planned: list[PlannedChange]) -> None:
    """What online mode needs: a new index name, an alias, and for a plan that rewrites
    documents a target prefix of its own (the copies are new keys there)."""
    if target.name == source.name:
        planned.append(_blocked(
            "online_mode", "online mode builds the new index next to the source, so it needs "
                           f"a name of its own: add 'index: {{name: {source.name}_v2}}' to the "
                           "patch's changes (clients keep querying the alias)"))
    if not aliases:
        planned.append(_blocked(
            "online_mode", "online mode moves an alias that clients query: pass --alias NAME "
                           "(created if it does not exist), or plan with --index naming an "
                           "alias of the index"))
    if operations:
        planned.extend(_blocked("online_mode", p) for p in prefix_problems(source, target))


def _unreported(source: IndexSchema, target: IndexSchema, renames: dict[str, str],
                explicit: set[tuple[str, str]]) -> list[str]:
    """``field.attr value`` for each value FT.INFO could not report that the rebuilt index
    will take from the server's default (the patch did not set it)."""
    out = []
    for f in source.fields:
        g = target.field(renames.get(f.name, f.name))
        if g is None or type(g.attrs) is not type(f.attrs):
            continue
        for k in f.unknown_attrs:
            if (g.name, k) in explicit:
                continue
            value = getattr(g.attrs, k, None)
            if value is None:
                out.append(f"{g.name}.{k} {UNREPORTED_DEFAULTS.get(k, 'the server default')}")
    return out


def _plan_checks(source: IndexSchema, target: IndexSchema, info: Any,
                 operations: list[DocumentOperation], others: dict[str, IndexSchema],
                 options: PlanOptions, overrides: dict[str, Any],
                 planned: list[PlannedChange], renames: dict[str, str],
                 explicit: set[tuple[str, str]], aliases: tuple[str, ...] = ()) -> list[str]:
    """Whole-plan checks; blocking ones are added to ``planned`` as a blocked change."""
    warnings: list[str] = []
    stats = info.stats
    online = options.mode == ONLINE
    if operations and not online:
        # a conversion (converts_to) leaves documents that indexes of the target type cover
        kinds = {source.storage_type, target.storage_type}
        shared = []
        for name, other in sorted(others.items()):
            pairs = prefixes_overlap(source.index.prefix, other.index.prefix)
            if pairs and other.storage_type in kinds:
                prefixes = ", ".join(repr(p) for p in sorted({p for pair in pairs for p in pair}))
                shared.append(f"{name} (prefix {prefixes})")
        if shared:
            text = (f"other live indexes cover the same keys: {'; '.join(shared)}; rewriting "
                    f"the documents of {source.name!r} changes them under those indexes too")
            if options.allow_shared_keys:
                overrides["allow_shared_keys"] = sorted(
                    n for n, o in others.items()
                    if o.storage_type in kinds
                    and prefixes_overlap(source.index.prefix, o.index.prefix))
                warnings.append(text + " (allowed by --allow-shared-keys)")
            else:
                planned.append(PlannedChange(
                    type="shared_keys", plugin="rvlm", plugin_version=rvlm_version(),
                    supported=False,
                    blocked_reasons=(text + "; pass --allow-shared-keys (to rvlm plan or rvlm "
                                     "batch plan; allow_shared_keys=True in Python) to accept "
                                     "it (recorded in the plan), then migrate those indexes "
                                     "too",)))
    if operations:
        problems = operation_problems(operations, source.storage_type, target.storage_type)
        if problems:
            planned.append(PlannedChange(
                type="document_operations", plugin="rvlm", plugin_version=rvlm_version(),
                supported=False, blocked_reasons=tuple(problems)))
    if stats.indexing or stats.percent_indexed < 1.0:
        warnings.append(f"the source index is still building ({stats.percent_indexed:.0%} "
                        "indexed): wait until it finishes, then plan again, so the document "
                        "count and the sample are final (apply refuses a building index)")
    if stats.indexing_failures:
        warnings.append(f"the source index has {stats.indexing_failures} indexing failures "
                        "(documents it could not index, e.g. a hash vector of the wrong byte "
                        "length): they are not searchable now and will not be after the "
                        "migration; fix or delete them if they should be")
    unknown = _unreported(source, target, renames, explicit)
    if unknown:
        warnings.append("FT.INFO cannot report some source values, so the rebuilt index uses: "
                        f"{', '.join(unknown)}; set them in update_fields if the source used "
                        "other values")
    docs = stats.num_docs + stats.indexing_failures
    if online and operations:
        via = ", ".join(repr(a) for a in aliases) or "the alias"
        keep = (f"then {source.name!r} is dropped" if options.drop_source
                else f"{source.name!r} is kept")
        warnings.append(
            f"downtime: none (online): clients querying {via} are served by {source.name!r} "
            f"while its {docs} documents are copied, through the plan's operations, to new "
            f"keys under {target.index.prefix[0]!r} (the source keys are only read), changes "
            f"made meanwhile are carried over, and {target.name!r} is built and validated; "
            f"FT.ALIASUPDATE then moves the alias in one command; {keep}; writes to source "
            "keys keep being carried over (apply --follow) until 'rvlm finalize' backs the "
            "source keys up and deletes them")
        return warnings
    if online:
        via = ", ".join(repr(a) for a in aliases) or "the alias"
        build = _downtime_length(stats, False)
        if not docs:
            build = "the index is empty"
        keep = (f"{source.name!r} is dropped after the alias moved" if options.drop_source
                else f"{source.name!r} is kept (drop it when you no longer need it: "
                     f"FT.DROPINDEX {source.name})")
        warnings.append(
            f"memory: both indexes exist while {target.name!r} is built; expect about "
            f"{human_bytes(mib_to_bytes(stats.total_index_memory_sz_mb))} of extra index "
            f"memory (the size of "
            f"{source.name!r}'s index)" + (" until the source is dropped"
                                            if options.drop_source else ""))
        warnings.append(
            f"downtime: none (online): clients querying {via} are served by {source.name!r} "
            f"while {target.name!r} builds ({build}) and is validated; FT.ALIASUPDATE then "
            f"moves the alias in one command; {keep}")
        return warnings
    length = _downtime_length(stats, bool(operations))
    warnings.append(f"downtime: queries on {source.name!r} fail from the drop until "
                    f"{target.name!r} has indexed {docs} documents ({length})")
    return warnings


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def resolve_inputs(
    host: PluginHost,
    *,
    schema_patch: str | Path | Mapping[str, Any] | SchemaPatch | None = None,
    target_schema: str | Path | Mapping[str, Any] | IndexSchema | None = None,
) -> tuple[SchemaPatch | None, IndexSchema | None]:
    """Turn a patch or a target (a path, a mapping, or a parsed object) into objects.

    Exactly one must be given; files are read and validated here, before any server is
    contacted (the patch's plugin sections against ``host``).
    """
    from rvlm.core.schema.yaml_format import load_schema, schema_from_dict

    if (schema_patch is None) == (target_schema is None):
        raise RvlmError("give schema_patch_path/schema_patch or target_schema_path/"
                        "target_schema (exactly one)")
    sections = tuple(host.patch_sections())
    patch: SchemaPatch | None = None
    target: IndexSchema | None = None
    if isinstance(schema_patch, SchemaPatch):
        patch = schema_patch
    elif isinstance(schema_patch, Mapping):
        patch = patch_from_dict(schema_patch, "schema_patch", sections)
    elif schema_patch is not None:
        patch = load_patch(schema_patch, sections)
    if isinstance(target_schema, IndexSchema):
        target = target_schema
    elif isinstance(target_schema, Mapping):
        target = schema_from_dict(target_schema, "target_schema")
    elif target_schema is not None:
        target = load_schema(target_schema)
    return patch, target


@attrs.frozen
class PlanInputs:
    """What a plan is made from, read and checked before any server is contacted: a patch
    or a target schema, the options, and the plugin host. :meth:`plan` makes the plan of one
    index (call it once per index to plan many with the same inputs)."""

    patch: SchemaPatch | None
    target: IndexSchema | None
    options: PlanOptions
    host: PluginHost

    def plan(self, client: redis.Redis, index_name: str) -> Plan:
        """Plan the migration of ``index_name`` (reads the server, never writes)."""
        return make_plan(client, index_name, patch=self.patch, target=self.target,
                         options=self.options, host=self.host)


def plan_inputs(
    *,
    schema_patch: str | Path | Mapping[str, Any] | SchemaPatch | None = None,
    target_schema: str | Path | Mapping[str, Any] | IndexSchema | None = None,
    options: PlanOptions | None = None,
    plugins: Sequence[Any] = (),
    host: PluginHost | None = None,
) -> PlanInputs:
    """The one way to plan, shared by the CLI, the Python and async APIs and multi-index
    runs: ``plan_inputs(schema_patch=...).plan(client, index)``.

    Give exactly one of ``schema_patch`` and ``target_schema`` (a path, a mapping, or a parsed
    object). ``host`` defaults to the process's plugins plus ``plugins``. Raises
    :class:`RvlmError` for bad input before anything touches a server.
    """
    host = host or host_with(plugins)
    host.check()
    patch, target = resolve_inputs(host, schema_patch=schema_patch, target_schema=target_schema)
    return PlanInputs(patch=patch, target=target, options=options or PlanOptions(), host=host)


def match_indexes(names: Sequence[str], pattern: str) -> list[str]:
    """Index names matching a glob pattern."""
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


SampleFn = Callable[[Sequence[str]], list[Document]]
