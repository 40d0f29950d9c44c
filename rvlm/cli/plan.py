"""``rvlm plan`` and ``rvlm estimate``: make a plan a person can review, and size it."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from rvlm.cli.common import (
    ClusterOption,
    IndexOption,
    JsonOption,
    KeySampleOption,
    MinRecallOption,
    RecallKOption,
    UrlOption,
    echo_json,
    handle_errors,
    output_file,
)


class Mode(str, Enum):
    """``--mode``: offered as a choice list (the same names as ``rvlm.core.migrate.plan.MODES``)."""

    drop_recreate = "drop_recreate"
    online = "online"

PatchOption = Annotated[
    Path | None,
    typer.Option("--schema-patch", help="Schema patch YAML (RedisVL format + plugin "
                                              "sections)."),
]
TargetOption = Annotated[
    Path | None,
    typer.Option("--target-schema", "-t", help="Complete target schema YAML (RedisVL "
                                               "IndexSchema); the patch is derived."),
]


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
    app.command("estimate")(estimate)


@handle_errors
def plan(
    index: IndexOption,
    schema_patch: PatchOption = None,
    target_schema: TargetOption = None,
    url: UrlOption = None,
    cluster: ClusterOption = False,
    plan_out: Annotated[Path, typer.Option("--plan-out", "-o", help="Where to write the plan "
                                                                     "YAML.")] = Path(
        "migration_plan.yaml"),
    allow_shared_keys: Annotated[bool, typer.Option(
        "--allow-shared-keys", help="Rewrite documents that another live index also covers "
                                    "(recorded in the plan).")] = False,
    sample_size: Annotated[int, typer.Option(
        "--sample-size", min=1, help="Documents read to calibrate and measure quantization.")
    ] = 1000,
    key_sample_limit: KeySampleOption = 20,
    mode_choice: Annotated[Mode, typer.Option(
        "--mode", help="drop_recreate: drop the index, rewrite documents, create the new one "
                       "(queries fail meanwhile). online: build the new index (under a new "
                       "name) next to the source, then move --alias to it in one command: no "
                       "downtime; documents a change rewrites are copied to new keys under "
                       "--target-prefix while the source keeps serving.")
    ] = Mode.drop_recreate,
    alias: Annotated[str | None, typer.Option(
        "--alias", help="An alias clients query: apply points it at the new index (creating "
                        "it if it does not exist) and rollback points it back. Required by "
                        "--mode online unless --index names an alias.")] = None,
    keep_alias: Annotated[list[str] | None, typer.Option(
        "--keep-alias", help="An alias of the index to keep: dropping the index removes its "
                             "aliases (the server cannot list them), apply points this one at "
                             "the new index. Repeat for several.")] = None,
    drop_source: Annotated[bool, typer.Option(
        "--drop-source/--keep-source", help="Online mode: drop the source index once the "
                                            "alias moved, or keep it.")] = True,
    target_prefix: Annotated[str | None, typer.Option(
        "--target-prefix", help="The new index's key prefix (the same as the patch's "
                                "index.prefix; {prefix} and {index} are filled in). Online "
                                "mode copies the documents a change rewrites to new keys "
                                "under it.")] = None,
    json_out: JsonOption = False,
    min_recall: MinRecallOption = None,
    recall_k: RecallKOption = 10,
) -> None:
    """Plan a schema change of one index and write the plan for review (never writes to Redis).

    Exit code 0 when every change is supported, 1 when some change is blocked (the plan is
    written anyway, with the reasons), 2 for bad input.
    """
    from rvlm.api import MigrationPlanner
    from rvlm.core.errors import RvlmError
    from rvlm.core.migrate.plan import MODES

    mode = mode_choice.value
    output_file(plan_out, "--plan-out")
    if (schema_patch is None) == (target_schema is None):
        raise RvlmError("give --schema-patch or --target-schema (exactly one)")
    if mode not in MODES:
        raise RvlmError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    planner = MigrationPlanner(sample_size=sample_size, allow_shared_keys=allow_shared_keys,
                               mode=mode, alias=alias, drop_source=drop_source,
                               min_recall=min_recall, recall_k=recall_k,
                               key_sample_limit=key_sample_limit,
                               target_prefix=target_prefix, keep_aliases=keep_alias or ())
    # the files are validated before the server is contacted
    result = planner.create_plan(index, redis_url=url, schema_patch_path=schema_patch,
                                 target_schema_path=target_schema)
    plan_out.write_text(result.to_yaml(), encoding="utf-8")
    if json_out:
        data = result.to_dict()
        data["rvlm"]["plan_path"] = str(plan_out)
        echo_json(data)
    else:
        from rvlm.cli.render import print_plan

        print_plan(result, plan_out)
    if not result.supported:
        raise typer.Exit(1)


@handle_errors
def estimate(
    plan: Annotated[Path, typer.Option("--plan", help="Plan YAML made by 'rvlm plan'.")],
    url: UrlOption = None,
    cluster: ClusterOption = False,
    json_out: JsonOption = False,
    aof_enabled: Annotated[bool | None, typer.Option(
        "--aof-enabled/--aof-disabled", show_default=False,
        help="Whether the server appends to an AOF (default: ask the server given with "
             "--url).")] = None,
) -> None:
    """Backup disk, Redis memory before and after, bytes to rewrite, RDB snapshot and AOF
    growth, and expected downtime."""
    from rvlm.core.migrate.estimate import estimate_plan
    from rvlm.core.migrate.plan import Plan

    loaded = Plan.load(plan)
    client = None
    if url:
        from rvlm.core.redis.connection import connect

        client = connect(url)
    result = estimate_plan(loaded, client, aof_enabled=aof_enabled)
    if json_out:
        echo_json(result)
        return
    from rvlm.cli.render import print_estimate

    print_estimate(result)
