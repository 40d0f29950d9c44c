"""Ask the server whether it accepts the target schema, before anything is dropped.

The planner checks what it can know (datatypes, algorithms, names); the server may still refuse
an FT.CREATE (a field named like an FT.CREATE keyword, an option combination a version
rejects). Finding that out after the source index was dropped is the peer's failure mode, so
the executor creates the target once under a throw-away name, on a prefix no key can have,
with SKIPINITIALSCAN (no scan of the keyspace), and drops it again: an empty index costs
nothing and touches no document.
"""

from __future__ import annotations

import contextlib
import secrets

import redis

from rvlm.core.errors import RvlmError
from rvlm.core.schema.ftcreate import create_arguments, index_arguments
from rvlm.core.schema.model import IndexSchema


def check_target_accepted(client: redis.Redis, schema: IndexSchema) -> None:
    """Raise :class:`RvlmError` with the server's own words when it refuses ``schema``."""
    token = secrets.token_hex(6)
    name = f"rvlm-precheck-{token}"
    probe = schema.with_index(name=name, prefix=(f"rvlm-precheck-{token}:",), filter=None)
    args = create_arguments(probe)
    # SKIPINITIALSCAN: no key can match the probe's prefix, so the background scan of the
    # whole keyspace a new index starts would find nothing (and compete with the key pass)
    args.insert(2 + len(index_arguments(probe.index)), "SKIPINITIALSCAN")  # before SCHEMA
    try:
        client.execute_command(*args)
    except redis.ResponseError as exc:
        raise RvlmError(f"the server refuses the target schema of {schema.name!r} "
                        f"({exc}); nothing was changed") from None
    with contextlib.suppress(redis.ResponseError):
        client.execute_command("FT.DROPINDEX", name)
