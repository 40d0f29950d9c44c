"""What an online migration that copies documents needs from the server, checked at plan time
and again before apply changes anything.

* The target prefix: different from the source's, neither starting with the other (the
  copies would be source documents too, and change capture would see its own writes), covered
  by no other index (it would index the copies), holding no key (rvlm writes only keys of its
  own, which is what rollback deletes). The source index has no FILTER (change capture cannot
  tell which keys a filter admits).
* Memory: the copies and the target index must fit under ``maxmemory``
  (:mod:`rvlm.core.migrate.online.footprint`).
* Keyspace notifications (:mod:`rvlm.core.redis.notify`): turned on with CONFIG SET for the
  run, or, where CONFIG is refused, already configured (checked with a probe); otherwise the
  exact value to configure.
* A vector datatype change changes the bytes a KNN query must send: said in the plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs
import redis

from rvlm.core.migrate.online.footprint import copy_footprint
from rvlm.core.migrate.plan import Plan
from rvlm.core.redis import routing, wire
from rvlm.core.redis.docio.keys import escape_glob
from rvlm.core.redis.nodes import NodeClients, key_on
from rvlm.core.redis.notify import ConfigRefused, advice, missing, needed_flags, probe, read_setting
from rvlm.core.redis.resp import to_int, to_list, to_str
from rvlm.core.schema.model import IndexSchema, VectorAttrs

_SEPARATORS = ":_-/.|#"


def suggest_prefix(prefix: str) -> str:
    """A target prefix for ``prefix`` that neither starts with it nor is started by it:
    ``doc:`` -> ``doc_v2:``."""
    stem = prefix.rstrip(_SEPARATORS)
    sep = prefix[len(stem):] or ""
    return f"{stem or 'docs'}_v2{sep}"


def copies_documents(plan: Plan) -> bool:
    """Whether an online plan copies documents to a target prefix (it rewrites documents or
    moves keys), rather than building a second index over the same keys."""
    return bool(plan.operations)


def prefix_problems(source: IndexSchema, target: IndexSchema) -> list[str]:
    """Why the target prefix cannot hold the copies (static part: no server needed)."""
    src, dst = source.index.prefix, target.index.prefix
    hint = suggest_prefix(src[0]) if src else "docs_v2:"
    if source.index.filter:
        return [f"the source index has a FILTER ({source.index.filter}): change capture cannot "
                "tell which keys it admits; plan it with --mode drop_recreate"]
    if tuple(dst) == tuple(src):
        return ["online mode writes the rewritten documents as new keys next to the source's, "
                f"under a target prefix: add 'index: {{prefix: \"{hint}\"}}' to the patch's "
                f"changes, or pass --target-prefix {hint}"]
    for a in src:
        for b in dst:
            if a.startswith(b) or b.startswith(a):
                return [f"the target prefix {b!r} and the source prefix {a!r} overlap (one "
                        "starts with the other), so the copies would be source documents "
                        f"too; choose a prefix that neither starts with {a!r} nor begins it, "
                        f"e.g. --target-prefix {hint}"]
    return []


def online_problems(plan: Plan) -> list[str]:
    """Why ``plan`` cannot run online (empty when it can). The planner blocks these already;
    the executor checks again for plans built by hand."""
    problems = []
    if plan.operations:
        problems += prefix_problems(plan.source_schema, plan.target_schema)
    if plan.target_index == plan.source_index:
        problems.append(f"online mode needs a new index name (e.g. index: {{name: "
                        f"{plan.source_index}_v2}})")
    if not plan.aliases:
        problems.append("online mode needs an alias that clients query (--alias)")
    return problems


def target_prefix_problems(client: redis.Redis, plan: Plan,
                           others: Mapping[str, IndexSchema]) -> list[str]:
    """:func:`prefix_problems`, then: no other index covers the target prefix, and no key
    exists under it (one full SCAN, stopped at the first keys found)."""
    problems = prefix_problems(plan.source_schema, plan.target_schema)
    if problems:
        return problems
    target = plan.target_schema
    covering = sorted(name for name, o in others.items()
                      if name not in (plan.source_index, plan.target_index)
                      and any(a.startswith(b) or b.startswith(a)
                              for a in target.index.prefix for b in o.index.prefix))
    if covering:
        return [f"index {covering[0]!r} covers keys under the target prefix "
                f"{target.index.prefix[0]!r}: it would index the copies; choose another "
                "--target-prefix"]
    for prefix in target.index.prefix:
        found = first_keys(client, prefix)
        if found:
            shown = ", ".join(repr(to_str(k)) for k in found[:3])
            return [f"keys already exist under the target prefix {prefix!r} (e.g. {shown}): "
                    "online mode writes only keys of its own there (rollback deletes them); "
                    "choose another --target-prefix or remove those keys"]
    return []


def first_keys(client: redis.Redis, prefix: str, limit: int = 3) -> list[bytes]:
    """Up to ``limit`` keys under ``prefix`` (SCAN, on every primary of a cluster, until some
    are found or the end)."""
    match = escape_glob(prefix) + b"*"
    out: list[bytes] = []
    for _name, node in routing.primaries(client):
        cursor = 0
        while True:
            cursor, keys = to_list(wire.send(node, [(b"SCAN", cursor, b"MATCH", match,
                                                     b"COUNT", 1000)])[0])
            cursor = to_int(cursor)
            out += [bytes(k) for k in to_list(keys)]
            if len(out) >= limit:
                return out[:limit]
            if cursor == 0:
                break
    return out


@attrs.frozen
class NotifyStatus:
    """The server's notification setting as far as a run can tell: ``current`` (None where
    CONFIG is refused), the classes ``needed``, and the classes a probe found missing where
    CONFIG is refused (``lacking``). On a cluster, ``nodes`` names every node (the setting is
    per node; ``current`` is the value that lacks most)."""

    needed: str
    current: str | None
    lacking: str = ""
    nodes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether a run can capture changes (CONFIG works, or the probe found everything)."""
        return self.current is not None or not self.lacking

    def sentence(self) -> str:
        if self.current is not None:
            lack = missing(self.current, self.needed)
            now = repr(self.current) if self.current else "empty"
            if not lack:
                return (f"change capture: notify-keyspace-events is {now}, which delivers "
                        f"the events it needs ({self.needed!r})")
            where = (f" on every node of the cluster, replicas included "
                     f"({', '.join(self.nodes)})" if self.nodes else "")
            return (f"change capture: apply turns on the keyspace notification classes "
                    f"{lack!r}{where} (notify-keyspace-events is {now}) while it runs, and "
                    "puts the value back afterwards")
        if not self.lacking:
            return ("change capture: CONFIG is refused, and the server already delivers the "
                    f"keyspace events online mode needs ({self.needed!r})")
        nodes = (f"; on this cluster, on every node, replicas included (a promoted replica "
                 f"must go on notifying): {', '.join(self.nodes)}" if self.nodes else "")
        return "change capture: CONFIG is refused; " + advice(None, self.needed) + nodes


def notify_status(client: redis.Redis, storage_type: str) -> NotifyStatus:
    """Read the setting (CONFIG GET), or probe where CONFIG is refused."""
    needed = needed_flags(storage_type)
    if routing.is_cluster(client):
        return _cluster_notify_status(client, needed)
    try:
        return NotifyStatus(needed=needed, current=read_setting(client))
    except ConfigRefused:
        return NotifyStatus(needed=needed, current=None, lacking=probe(client, needed))


def _cluster_notify_status(client: redis.Redis, needed: str) -> NotifyStatus:
    nodes = NodeClients(client, name="rvlm-config")
    try:
        names = tuple(a for a, _c in nodes.every())
        try:
            values = [read_setting(c) for _a, c in nodes.every()]
        except ConfigRefused:
            lacking = set()
            for a, c in nodes.primaries():
                lacking |= set(probe(c, needed, key=key_on(nodes.node(a), "rvlm:probe:")))
            return NotifyStatus(needed=needed, current=None, nodes=names,
                                lacking="".join(x for x in needed if x in lacking))
        worst = max(values, key=lambda v: len(missing(v, needed)))
        return NotifyStatus(needed=needed, current=worst, nodes=names)
    finally:
        nodes.close()


def datatype_changes(plan: Plan) -> list[str]:
    """``field: float32 -> float16`` for every vector field whose datatype changes."""
    out = []
    renames = {c.field: c.new_field for c in plan.changes
               if c.type == "rename_field" and c.field and c.new_field}
    for f in plan.source_schema.fields:
        if not isinstance(f.attrs, VectorAttrs):
            continue
        g = plan.target_schema.field(renames.get(f.name, f.name))
        if g is not None and isinstance(g.attrs, VectorAttrs) \
                and g.attrs.datatype != f.attrs.datatype:
            out.append(f"{g.name}: {f.attrs.datatype} -> {g.attrs.datatype}")
    return out


def client_caveat(plan: Plan, aliases: Sequence[str]) -> str | None:
    """The warning a datatype change needs in an online plan (None without one)."""
    changed = datatype_changes(plan)
    if not changed:
        return None
    via = ", ".join(repr(a) for a in aliases) or "the alias"
    return (f"clients: the vector datatype changes ({'; '.join(changed)}); a KNN query must "
            f"send its vector in the index's datatype, so once {via} moves, a client still "
            "sending the old encoding gets an error: read the datatype behind the alias "
            "(FT.INFO) or retry with the other encoding (docs/online.md, 'Clients and a "
            "datatype change')")


def blue_green_findings(client: redis.Redis, plan: Plan, others: Mapping[str, IndexSchema],
                        sample: Sequence[bytes]) -> tuple[list[str], list[str]]:
    """(warnings, blocking reasons) of an online plan that copies documents."""
    blocked = target_prefix_problems(client, plan, others)
    warnings: list[str] = []
    fp = copy_footprint(client, plan, sample)
    warnings.append(fp.describe())
    if fp.problem():
        blocked.append(str(fp.problem()))
    status = notify_status(client, plan.source_schema.storage_type)
    warnings.append(status.sentence())
    caveat = client_caveat(plan, plan.aliases)
    if caveat:
        warnings.append(caveat)
    return warnings, blocked
