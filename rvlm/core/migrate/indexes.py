"""Create or drop one index by hand (``rvlm index create`` / ``rvlm index drop``, RedisVL's
``rvl index create`` / ``delete`` / ``destroy``).

Both hold the index's migration lock while they run (:mod:`rvlm.core.redis.lock`), so neither
can cut into an apply or rollback of the same index, and both check everything before they
send their one command:

* :func:`create_index` refuses a name an index or alias already answers to, and a schema the
  server refuses is one line with the server's words (nothing created);
* :func:`drop_index` refuses an alias (``FT.DROPINDEX`` on an alias drops the index behind it)
  and, with ``delete_documents``, documents another live index also covers.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import redis

from rvlm.core.errors import RvlmError
from rvlm.core.redis.connection import index_exists, list_indexes, read_index
from rvlm.core.redis.lock import hold_locks, lock_owner
from rvlm.core.schema.ftcreate import create_arguments
from rvlm.core.schema.model import IndexSchema


@attrs.frozen
class Dropped:
    """What :func:`drop_index` dropped: the index, its document count, and whether the
    documents were deleted with it."""

    name: str
    documents: int
    deleted_documents: bool


def prefixes_overlap(a: Sequence[str], b: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs of prefixes where one is a string prefix of the other (or equal)."""
    return [(x, y) for x in a for y in b if x.startswith(y) or y.startswith(x)]


def create_index(client: redis.Redis, schema: IndexSchema) -> None:
    """``FT.CREATE`` the index ``schema`` describes. Raises :class:`RvlmError` (nothing
    created) when the name is taken by an index or alias, when a migration holds the name's
    lock, or when the server refuses the schema."""
    name = schema.name
    with hold_locks(client, [name], lock_owner("index create")):
        if index_exists(client, name):
            raise RvlmError(f"an index or alias named {name!r} already exists; drop it first "
                            f"(rvlm index drop -i {name}) or name the index otherwise")
        try:
            client.execute_command(*create_arguments(schema))
        except redis.ResponseError as exc:
            raise RvlmError(f"the server refuses the schema of {name!r} ({exc}); nothing was "
                            "created") from None


def drop_index(client: redis.Redis, name: str, *, delete_documents: bool = False) -> Dropped:
    """``FT.DROPINDEX`` ``name`` (with ``DD`` when ``delete_documents``). Raises
    :class:`RvlmError` (nothing dropped) for an unknown index, an alias, a migration holding
    the index's lock, or (``delete_documents``) documents another live index also covers."""
    with hold_locks(client, [name], lock_owner("index drop")):
        info = read_index(client, name)
        real = info.schema.name
        if real != name:
            raise RvlmError(f"{name!r} is an alias of index {real!r}: drop the index by its own "
                            f"name (rvlm index drop -i {real}), or remove only the alias "
                            f"(FT.ALIASDEL {name})")
        if delete_documents:
            prefixes = info.schema.index.prefix
            shared = []
            for other in list_indexes(client):
                if other == name:
                    continue
                try:
                    theirs = read_index(client, other).schema
                except RvlmError:
                    continue
                if (theirs.storage_type == info.schema.storage_type
                        and prefixes_overlap(prefixes, theirs.index.prefix)):
                    shared.append(other)
            if shared:
                raise RvlmError(
                    f"index {', '.join(repr(s) for s in shared)} also covers the documents of "
                    f"{name!r}: deleting them would take them from it too; drop {name!r} "
                    "without --delete-documents, or delete the documents yourself")
        args = ["FT.DROPINDEX", name] + (["DD"] if delete_documents else [])
        client.execute_command(*args)
    return Dropped(name=name, documents=info.stats.num_docs, deleted_documents=delete_documents)


__all__ = ["Dropped", "create_index", "drop_index"]
