"""Plan-time checks of a migration on a Redis Cluster.

On a cluster whose search module has no coordinator (``uncoordinated``, as on the embedded
stack), an index lives on the node owning its name's slot and covers that node's keys only. An
index is complete only when its name and every prefix share one hash tag (``{t1}idx`` over
``{t1}doc:``), so that every document is in the index's slot; aliases must be in that slot
too (``FT.ALIASADD`` refuses an alias in another slot with ``CROSSSLOT``).
:func:`layout_problems` names every way a plan breaks that: each is a blocked reason.

A coordinated cluster (one index name answers for every shard) and a single server have no
such constraint. On any cluster, a slot migration in progress leaves an index behind on the
old owner (an index does not move with its slot): :func:`migration_warning` says so at plan
time, and apply refuses to start until the migration ends.
"""

from __future__ import annotations

from collections.abc import Sequence

from rvlm.core.redis.topology import UNCOORDINATED, SlotMigration, prefix_slot, slot_of
from rvlm.core.schema.model import IndexSchema


def _tag_hint(name: str) -> str:
    return (f"keep the index name, its prefixes and its aliases in one hash tag, e.g. index "
            f"'{{t1}}{name}' over prefix '{{t1}}doc:'")


def incomplete(source: IndexSchema) -> bool:
    """True when some prefix of ``source`` is not in the slot of its name (on an
    uncoordinated cluster the index misses the documents of other nodes)."""
    home = slot_of(source.name)
    return any(prefix_slot(p) != home for p in source.index.prefix)


def layout_problems(layout: str, source: IndexSchema, target: IndexSchema,
                    aliases: Sequence[str] = (), siblings: Sequence[str] = ()) -> list[str]:
    """Blocked reasons for migrating ``source`` to ``target`` with ``aliases`` (the source's
    aliases and any alias apply will point at the target) on a cluster of ``layout``; [] when
    the plan can run. Only an uncoordinated cluster has reasons. ``siblings``: the other
    indexes over the same prefixes (a per-shard layout: one index per node)."""
    if layout != UNCOORDINATED:
        return []
    problems: list[str] = []
    home = slot_of(source.name)
    why = ("this cluster's search module has no coordinator: an index covers only the keys of "
           "the node that owns its name's slot")
    if siblings and incomplete(source):
        others = ", ".join(repr(s) for s in siblings)
        return [f"source index {source.name!r} is one of a per-shard set (one index per node "
                f"over the same prefixes; here also {others}): each covers only its node's "
                f"keys, and rvlm migrates one complete index at a time, so migrating it would "
                f"rewrite documents that the other indexes of the set serve; {why}; rvlm does "
                f"not migrate a per-shard set; {_tag_hint(source.name)}"]
    for prefix in source.index.prefix:
        slot = prefix_slot(prefix)
        if slot != home:
            where = ("has no hash tag, so its keys spread over every node" if slot is None
                     else f"hashes to slot {slot}, the index name to slot {home}")
            problems.append(f"source index {source.name!r} is not complete on this cluster: "
                            f"prefix {prefix!r} {where}; {why}; {_tag_hint(source.name)}")
    if problems:
        return problems  # the target's checks would only repeat the same cause
    target_home = slot_of(target.name)
    if target.name != source.name and target_home != home:
        problems.append(f"the new index name {target.name!r} hashes to slot {target_home}, not "
                        f"to the slot of {source.name!r} and its documents ({home}): the new "
                        f"index would be created on a node that does not hold them; {why}; "
                        f"give it the same hash tag")
    for prefix in target.index.prefix:
        if prefix in source.index.prefix:
            continue
        slot = prefix_slot(prefix)
        if slot != home:
            where = ("has no hash tag" if slot is None else f"hashes to slot {slot}")
            problems.append(f"the prefix change to {prefix!r} would move documents out of the "
                            f"index's slot ({home}): the new prefix {where}; {why}; keep the "
                            f"hash tag of {source.index.prefix[0]!r} in the new prefix")
    for alias in aliases:
        slot = slot_of(alias)
        if slot != target_home:
            problems.append(f"alias {alias!r} hashes to slot {slot}, the index "
                            f"{target.name!r} to slot {target_home}: the cluster refuses an "
                            f"alias in another slot (CROSSSLOT); give the alias the index's "
                            f"hash tag")
    return problems


def migration_warning(migrations: Sequence[SlotMigration], limit: int = 5) -> str | None:
    """The plan warning for slot migrations in progress, or None."""
    if not migrations:
        return None
    shown = ", ".join(m.describe() for m in migrations[:limit])
    more = f" (and {len(migrations) - limit} more)" if len(migrations) > limit else ""
    return (f"a slot migration is in progress ({shown}{more}): an index does not move with "
            "its slot, so apply refuses to start until the resharding has finished")


__all__ = ["incomplete", "layout_problems", "migration_warning"]
