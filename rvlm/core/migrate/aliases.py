"""Index aliases a migration keeps: checked before, moved after the create, moved back on rollback.

FT.DROPINDEX removes the dropped index's aliases, so a ``drop_recreate`` apply points every
alias of the plan (:attr:`Plan.aliases`: the one ``--alias`` named, the one ``--index``
named, and the kept ones: ``--keep-alias`` and those recorded by an earlier run) at the target
right after the create; an ``online`` apply moves them once the target is
built and validated. ``FT.ALIASUPDATE`` moves (or creates) an alias in one command and is
idempotent, so a resumed apply simply sends it again. Where each alias pointed before the apply
is journaled with the ``checked`` phase (``aliases: {name: index or null}``); rollback points
each one back at the source, or deletes one the migration created.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence

import redis

from rvlm.core.errors import MigrationFailed, RvlmError
from rvlm.core.migrate.plan import Plan
from rvlm.core.redis.connection import index_exists, list_indexes, read_index
from rvlm.core.redis.resp import to_str


def alias_index(client: redis.Redis, name: str) -> str | None:
    """The index ``name`` resolves to (FT.INFO on an alias names the real index), or None."""
    if not index_exists(client, name):
        return None
    return read_index(client, name).schema.name


def check_aliases(client: redis.Redis, plan: Plan, *,
                  allowed: Iterable[str] = ()) -> dict[str, str | None]:
    """Where each alias of the plan points now (None: it does not exist yet).

    Raises :class:`RvlmError` when one is the name of an index, or is an alias of an index
    other than the source (or one of ``allowed``): moving it would take it from that index's
    clients.
    """
    if not plan.aliases:
        return {}
    indexes = set(list_indexes(client))
    ok = {plan.source_index, *allowed}
    out: dict[str, str | None] = {}
    for name in plan.aliases:
        if name in indexes or name in (plan.source_index, plan.target_index):
            raise RvlmError(f"{name!r} is the name of an index, not an alias; nothing was "
                            "changed")
        real = alias_index(client, name)
        if real is not None and real not in ok:
            raise RvlmError(f"alias {name!r} points at index {real!r}, not at the source "
                            f"{plan.source_index!r}; point it back (FT.ALIASUPDATE {name} "
                            f"{plan.source_index}) or make a new plan; nothing was changed")
        out[name] = real
    return out


#: A set per index of the aliases rvlm pointed at it (RediSearch 2.10 cannot list an index's
#: aliases): the planner keeps them across a drop without being told again.
REGISTRY_PREFIX = "rvlm:aliases:"


def registry_key(index: str) -> str:
    """The Redis set of the aliases rvlm pointed at ``index``."""
    return f"{REGISTRY_PREFIX}{index}"


def recorded_aliases(client: redis.Redis, index: str) -> list[str]:
    """The aliases an earlier rvlm run pointed at ``index`` that still point at it."""
    try:
        names = sorted(to_str(n) for n in client.smembers(registry_key(index)))
    except redis.ResponseError:  # not a set: someone else's key
        return []
    return [n for n in names if alias_index(client, n) == index]


def lost_aliases_note(index: str, kept: Sequence[str]) -> str:
    """What a plan that drops ``index`` says about its aliases: FT.DROPINDEX removes every
    alias pointing at it, RediSearch 2.10 cannot list them, so only ``kept`` ones survive."""
    named = (f"apply points {', '.join(repr(a) for a in kept)} at the new index; "
             if kept else "")
    return (f"dropping {index!r} removes every alias that points at it, and the server cannot "
            f"list them: {named}any other alias of {index!r} is lost; name each with "
            "--keep-alias NAME to keep it")


def record_aliases(client: redis.Redis, names: Iterable[str], index: str,
                   previous: str | None = None) -> None:
    """Remember that ``names`` point at ``index`` now (and no longer at ``previous``)."""
    names = list(names)
    if not names:
        return
    with contextlib.suppress(redis.ResponseError):
        client.sadd(registry_key(index), *names)
        if previous is not None and previous != index:
            client.srem(registry_key(previous), *names)


def point_aliases(client: redis.Redis, names: Iterable[str], index: str,
                  previous: str | None = None) -> None:
    """``FT.ALIASUPDATE name index`` for each name (creates a missing alias; idempotent), and
    remember them for ``index`` (:func:`recorded_aliases`)."""
    names = list(names)
    for name in names:
        client.execute_command("FT.ALIASUPDATE", name, index)
    record_aliases(client, names, index, previous)


def restore_aliases(client: redis.Redis, plan: Plan,
                    before: Mapping[str, str | None] | None) -> list[str]:
    """Rollback: point each alias of the plan back at the source, or delete one the migration
    created (``before`` says where each pointed when the apply began; an alias not recorded
    is pointed at the source). Returns what was done, one line each."""
    done = []
    before = before or {}
    for name in plan.aliases:
        was = before.get(name, plan.source_index)
        if was is None:
            if alias_index(client, name) == plan.target_index:
                with contextlib.suppress(redis.ResponseError):
                    client.execute_command("FT.ALIASDEL", name)
                done.append(f"alias {name!r} deleted (the migration created it)")
            continue
        client.execute_command("FT.ALIASUPDATE", name, plan.source_index)
        record_aliases(client, [name], plan.source_index, plan.target_index)
        done.append(f"alias {name!r} points at {plan.source_index!r}")
    return done


def move_aliases(client: redis.Redis, names: Iterable[str], index: str) -> None:
    """Point every alias of ``names`` at ``index`` in one step (``MULTI``/``EXEC`` of
    ``FT.ALIASUPDATE``): a query through any of them is answered by the old index or the new
    one, and all of them move at the same moment. Check them first (:func:`check_aliases`):
    Redis runs the rest of a transaction after one command fails."""
    names = list(names)
    if not names:
        return
    pipe = client.pipeline(transaction=True)
    for name in names:
        pipe.execute_command("FT.ALIASUPDATE", name, index)
    replies = pipe.execute(raise_on_error=False)
    bad = [f"{n}: {r}" for n, r in zip(names, replies, strict=True) if isinstance(r, Exception)]
    if bad:
        raise MigrationFailed(f"moving the aliases to {index!r} failed ({'; '.join(bad)})")
