"""Ask the server whether it accepts the target schema, before anything is dropped.

The planner checks what it can know (datatypes, algorithms, names); the server may still refuse
an FT.CREATE (a field named like an FT.CREATE keyword, an option combination a version
rejects). Finding that out after the source index was dropped is the peer's failure mode, so
the executor creates the target once under a throw-away name, on prefixes no key can have,
with SKIPINITIALSCAN (no scan of the keyspace), and drops it again: an empty index costs
nothing and touches no document.

The probe is the exact target: every index option (FILTER, LANGUAGE, SCORE, STOPWORDS, ...)
and every field option, only the name and the prefixes differ (as many prefixes as the target
has). The server's own reading of it (FT.INFO) must then be the target, so an option the server
silently reads differently is also found before the drop, not by validation after it.
"""

from __future__ import annotations

import contextlib
import secrets

import redis

from rvlm.core.errors import RvlmError
from rvlm.core.migrate.validate import comparable, schema_diff
from rvlm.core.redis.connection import read_index
from rvlm.core.schema.ftcreate import create_arguments, index_arguments
from rvlm.core.schema.model import IndexSchema


def check_target_accepted(client: redis.Redis, schema: IndexSchema) -> None:
    """Raise :class:`RvlmError` with the server's own words when it refuses ``schema``, or
    naming the difference when it would build another index than ``schema``."""
    token = secrets.token_hex(6)
    name = f"rvlm-precheck-{token}"
    prefixes = tuple(f"rvlm-precheck-{token}:{i}:" for i in range(len(schema.index.prefix)))
    probe = schema.with_index(name=name, prefix=prefixes)
    args = create_arguments(probe)
    # SKIPINITIALSCAN: no key can match the probe's prefix, so the background scan of the
    # whole keyspace a new index starts would find nothing (and compete with the key pass)
    args.insert(2 + len(index_arguments(probe.index)), "SKIPINITIALSCAN")  # before SCHEMA
    try:
        client.execute_command(*args)
    except redis.ResponseError as exc:
        raise RvlmError(f"the server refuses the target schema of {schema.name!r} "
                        f"({exc}); nothing was changed") from None
    try:
        seen = read_index(client, name).schema
    finally:
        with contextlib.suppress(redis.ResponseError):
            client.execute_command("FT.DROPINDEX", name)
    got = comparable(seen, probe)
    if got != probe.without_unknowns():
        raise RvlmError(f"the server would not build the plan's target {schema.name!r} as "
                        f"planned ({schema_diff(got, probe.without_unknowns())}); "
                        "nothing was changed")
