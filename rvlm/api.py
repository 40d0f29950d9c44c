"""The public Python API: what the CLI does, composable from a program.

RedisVL users' call shapes work unchanged::

    from rvlm import MigrationPlanner, MigrationExecutor

    plan = MigrationPlanner().create_plan("myindex", redis_url=url,
                                          schema_patch_path="patch.yaml")
    report = MigrationExecutor().apply(plan, redis_url=url, backup_dir="backup",
                                       batch_size=500, num_workers=4)
    assert report.result == "succeeded"

Everything here is a thin layer over :mod:`rvlm.core`, and the CLI's commands call it: a plan
made here is byte-for-byte the plan ``rvlm plan`` writes (both go through
:func:`rvlm.core.migrate.planner.plan_inputs`), and a report is the report ``rvlm apply``
writes (both go through :func:`rvlm.core.migrate.executor.apply_plan`). Extra plugin objects
can be passed for one run (``plugins=[MyPlugin()]``) without packaging them. The async
classes (:mod:`rvlm.aio`) are built on this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rvlm.core.errors import RvlmError

if TYPE_CHECKING:
    import redis

    from rvlm.core.migrate.online.options import OnlineOptions
    from rvlm.core.migrate.plan import Plan
    from rvlm.core.migrate.planner import PlanInputs, PlanOptions, resolve_inputs
    from rvlm.core.migrate.report import MigrationReport
    from rvlm.core.multi.executor import BatchMigrationExecutor
    from rvlm.core.multi.planner import BatchMigrationPlanner
    from rvlm.core.quality.model import QualityOptions
    from rvlm.core.schema.model import IndexSchema
    from rvlm.core.schema.patch import SchemaPatch


class MigrationPlanner:
    """Make a plan for one index (RedisVL's ``MigrationPlanner``).

    ``sample_size`` documents are read to calibrate quantization; ``allow_shared_keys`` lets a
    plan rewrite documents another live index also covers (recorded in the plan). ``mode``
    ``"online"`` plans a zero-downtime apply that moves ``alias`` to the new index
    (``drop_source``: drop the old one afterwards); ``alias`` also works with the default
    ``"drop_recreate"``. ``keep_aliases``: aliases of the source that the drop would remove,
    pointed at the new index by apply (those an earlier rvlm run recorded are kept anyway).
    Every vector field whose KNN answers may change gets a recall@``recall_k``
    estimate in ``plan.quality``; with ``min_recall`` a field estimated under it blocks the plan
    (and apply measures against that floor unless given another). ``key_sample_limit`` keys
    go into the plan's key sample, which validation checks still exist. ``target_prefix``: the
    target index's key prefix (like the patch's ``index.prefix``); an online plan that rewrites
    documents copies them there.
    """

    def __init__(self, *, sample_size: int = 1000, allow_shared_keys: bool = False,
                 mode: str = "drop_recreate", alias: str | None = None,
                 drop_source: bool = True, min_recall: float | None = None,
                 recall_k: int = 10, key_sample_limit: int = 20,
                 target_prefix: str | None = None, keep_aliases: Sequence[str] = ()) -> None:
        self.sample_size = sample_size
        self.key_sample_limit = key_sample_limit
        self.allow_shared_keys = allow_shared_keys
        self.mode = mode
        self.alias = alias
        self.keep_aliases = tuple(keep_aliases)
        self.drop_source = drop_source
        self.min_recall = min_recall
        self.recall_k = recall_k
        self.target_prefix = target_prefix

    def create_plan(
        self,
        index_name: str,
        *,
        redis_url: str | None = None,
        schema_patch_path: str | Path | None = None,
        target_schema_path: str | Path | None = None,
        schema_patch: Mapping[str, Any] | SchemaPatch | None = None,
        target_schema: Mapping[str, Any] | IndexSchema | None = None,
        redis_client: redis.Redis | None = None,
        plugins: Sequence[Any] = (),
    ) -> Plan:
        """Plan the migration of ``index_name`` by a patch or to a target schema.

        Give exactly one of ``schema_patch_path`` / ``schema_patch`` (a mapping in the patch
        format, or a :class:`~rvlm.core.schema.patch.SchemaPatch`) and ``target_schema_path`` /
        ``target_schema``. Connects to ``redis_url`` (else ``REDIS_URL``, else localhost)
        unless ``redis_client`` is given. Never writes to Redis. Raises
        :class:`~rvlm.RvlmError` for bad input; a blocked change is not an error: check
        ``plan.supported`` and ``plan.blocked_reasons``.
        """
        from rvlm.core.redis.connection import connect

        inputs = self.inputs(schema_patch_path=schema_patch_path,
                             target_schema_path=target_schema_path, schema_patch=schema_patch,
                             target_schema=target_schema, plugins=plugins)
        client = redis_client if redis_client is not None else connect(redis_url)
        try:
            return inputs.plan(client, index_name)
        finally:
            if redis_client is None:
                client.close()

    def inputs(
        self,
        *,
        schema_patch_path: str | Path | None = None,
        target_schema_path: str | Path | None = None,
        schema_patch: Mapping[str, Any] | SchemaPatch | None = None,
        target_schema: Mapping[str, Any] | IndexSchema | None = None,
        plugins: Sequence[Any] = (),
    ) -> PlanInputs:
        """What :meth:`create_plan` plans from (same arguments), read and validated without
        contacting a server: ``planner.inputs(...).plan(client, index_name)``."""
        from rvlm.core.migrate.planner import plan_inputs

        return plan_inputs(
            schema_patch=_one(schema_patch_path, schema_patch, "schema_patch"),
            target_schema=_one(target_schema_path, target_schema, "target_schema"),
            options=self.options(), plugins=plugins)

    def options(self) -> PlanOptions:
        """The :class:`~rvlm.core.migrate.planner.PlanOptions` this planner uses."""
        from rvlm.core.migrate.planner import PlanOptions

        return PlanOptions(sample_size=self.sample_size, allow_shared_keys=self.allow_shared_keys,
                           mode=self.mode, alias=self.alias, drop_source=self.drop_source,
                           min_recall=self.min_recall, recall_k=self.recall_k,
                           key_sample_limit=self.key_sample_limit,
                           target_prefix=self.target_prefix, keep_aliases=self.keep_aliases)

    @staticmethod
    def write_plan(plan: Plan, path: str | Path) -> Path:
        """Write ``plan`` as YAML (what ``rvlm plan --plan-out`` writes); returns the path."""
        p = Path(path)
        plan.write(p)
        return p

    @staticmethod
    def load_plan(path: str | Path) -> Plan:
        """Read a plan file (refused if edited after it was made)."""
        from rvlm.core.migrate.plan import Plan

        return Plan.load(path)


def _one(path: str | Path | None, value: Any, name: str) -> Any:
    if path is not None and value is not None:
        raise RvlmError(f"give {name}_path or {name}, not both")
    return path if path is not None else value


def progress_adapter(
        callback: Callable[..., Any] | None) -> Callable[[str, int, int], None] | None:
    """rvlm reports progress as ``callback(phase, done, total)``; a RedisVL callback takes
    ``(step, detail)`` and gets ``(phase, "done/total")``, so it works unchanged."""
    if callback is None:
        return None
    import inspect

    try:
        params = list(inspect.signature(callback).parameters.values())
    except (TypeError, ValueError):
        return callback
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind is p.VAR_POSITIONAL for p in params) or len(positional) != 2:
        return callback
    two = callback
    return lambda phase, done, total: two(phase, f"{done}/{total}")


class MigrationExecutor:
    """Apply a plan (RedisVL's ``MigrationExecutor``): ``MigrationExecutor().apply(plan, ...)``.

    Like RedisVL's, the library applies the plan it is handed: a lossy plan was reviewed when
    it was made, so ``accept_data_loss`` defaults to True here (the CLI asks a person).
    """

    def apply(
        self,
        plan: Plan,
        *,
        redis_url: str | None = None,
        backup_dir: str | Path,
        batch_size: int = 500,
        num_workers: int = 1,
        plugins: Sequence[Any] = (),
        progress_callback: Callable[[str, int, int], None] | None = None,
        accept_data_loss: bool = True,
        index_timeout: float = 600.0,
        redis_client: Any = None,
        min_recall: float | None = None,
        recall_queries: int | None = None,
        recall_k: int = 10,
        query_check_file: str | Path | None = None,
        rollback_below_recall: bool = False,
        online: OnlineOptions | None = None,
    ) -> MigrationReport:
        """Apply ``plan`` to the server at ``redis_url``, or resume it from ``backup_dir``
        (re-run the same call after a crash). ``progress_callback(step, done, total)``
        reports progress (a RedisVL callback ``(step, detail)`` works too). ``redis_client``
        (a sync client, or the async API's bridge) carries every command of this process;
        worker processes still connect to ``redis_url``. ``online``
        (:class:`~rvlm.OnlineOptions`) says how an online plan that copies documents runs:
        throttling, a postponed cut-over, forwarding after it (``follow``), finalize, status.

        The quality gate: before the source stops serving, ``recall_queries`` KNN queries per
        vector field whose answers can change (vectors of stored documents, a fixed seed;
        None: 100, fewer on a source of more than 200,000 documents without ``min_recall``) and
        the checks of ``query_check_file`` are asked of the source and kept in ``backup_dir``;
        once the target is indexed they are asked of it. ``report.validation.quality`` (the
        report's ``quality``) has each field's recall@``recall_k``; a field under
        ``min_recall`` (default: the floor the plan recorded) or a failed query check fails
        the run (an online alias is not moved), and ``rollback_below_recall`` then rolls it
        back by itself.

        Returns a :class:`~rvlm.MigrationReport` whose ``result`` is ``succeeded`` only when
        validation passed. Raises :class:`~rvlm.RvlmError` (nothing changed) for a refused
        request (a bad query check file included); once the source index was dropped, a
        failure is a ``failed`` report instead (see
        :func:`rvlm.core.migrate.executor.apply_plan`).
        """
        from rvlm.core.migrate.executor import apply_plan

        quality = quality_options(min_recall=min_recall, recall_queries=recall_queries,
                                  recall_k=recall_k, query_check_file=query_check_file)
        return apply_plan(redis_url, plan, backup_dir=backup_dir, batch_size=batch_size,
                          workers=num_workers, accept_data_loss=accept_data_loss,
                          progress=progress_adapter(progress_callback), plugins=plugins,
                          index_timeout=index_timeout, client=redis_client, quality=quality,
                          rollback_below_recall=rollback_below_recall, online=online)


def quality_options(*, min_recall: float | None = None, recall_queries: int | None = None,
                    recall_k: int = 10, query_check_file: str | Path | None = None
                    ) -> QualityOptions:
    """The quality gate's options, the query check file read and checked (one-line
    :class:`~rvlm.RvlmError` for a bad one) before anything touches a server."""
    from rvlm.core.quality.model import QualityOptions

    checks = None
    if query_check_file is not None:  # only then the query check module
        from rvlm.core.quality.checks import load_query_checks

        checks = load_query_checks(query_check_file)
    return QualityOptions(min_recall=min_recall, recall_queries=recall_queries,
                          recall_k=recall_k, query_checks=checks)


def validate(
    plan: Plan | str | Path | None = None,
    *,
    redis_url: str | None = None,
    plugins: Sequence[Any] = (),
    backup_dir: str | Path | None = None,
    min_recall: float | None = None,
    query_check_file: str | Path | None = None,
) -> MigrationReport:
    """Check the live index against a plan's target (schema, documents, sampled keys,
    indexing failures, plugin checks) without changing anything; returns a report whose
    ``result`` is ``succeeded`` when every check passed.

    With the apply's ``backup_dir`` the document count is compared with the source count taken
    at apply time, not the plan's, every document the plan rewrote is checked against what
    the apply wrote to it (not a sample), and the quality gate runs again against the source
    answers the apply kept there: recall@k per vector field (under ``min_recall``, default the
    plan's floor, it fails) and the checks of ``query_check_file``. The document check needs
    the backup dir: a plan that rewrites documents without one is refused
    (:class:`RvlmError`). ``plan`` may be left out when ``backup_dir`` is given (its copy of
    the plan is used)."""
    from rvlm.core.migrate.backup_dir import check_backup_dir_name, load_backup_plan
    from rvlm.core.migrate.plan import Plan
    from rvlm.core.migrate.quality_gate import gate_for_validate
    from rvlm.core.migrate.report import MigrationReport
    from rvlm.core.migrate.validate import validate_migration
    from rvlm.core.migrate.verify import remembered_backup_dir, verifies
    from rvlm.core.plugins.context import ApplyContext
    from rvlm.core.plugins.host import host_with
    from rvlm.core.redis.capabilities import detect
    from rvlm.core.redis.connection import connect
    from rvlm.core.storage.journal import phase_data

    if backup_dir is not None:
        backup_dir = check_backup_dir_name(backup_dir)
    if plan is None:
        if backup_dir is None:
            raise RvlmError("give the plan (--plan) or the apply's backup dir (--backup-dir)")
        loaded = load_backup_plan(Path(backup_dir))
    else:
        loaded = plan if isinstance(plan, Plan) else Plan.load(plan)
    if backup_dir is not None and plan is not None:
        bound = load_backup_plan(Path(backup_dir))
        if bound.fingerprint != loaded.fingerprint:
            raise RvlmError(f"backup dir {backup_dir} belongs to another plan (fingerprint "
                            f"{bound.fingerprint}, this plan {loaded.fingerprint})")
    if backup_dir is None and verifies(loaded):
        # RedisVL's form (no backup dir): the one the apply recorded for this plan
        backup_dir = remembered_backup_dir(loaded)
        if backup_dir is None:
            raise RvlmError("this plan rewrites documents: give the apply's backup dir "
                            "(--backup-dir) so that every rewritten document is checked "
                            "against what the apply wrote, not a sample (no apply of this "
                            "plan on this machine recorded one: a plan never applied has "
                            "nothing to validate)")
    host = host_with(plugins)
    host.check()
    gate = gate_for_validate(loaded, backup_dir, quality_options(
        min_recall=min_recall, query_check_file=query_check_file))
    enum = phase_data(Path(backup_dir), "keys_enumerated") if backup_dir else {}
    client = connect(redis_url)
    try:
        ctx = ApplyContext(plan=loaded, capabilities=detect(client), client=client)
        result = validate_migration(client, loaded, expected_docs=enum.get("source_docs"),
                                    source_failures=enum.get("source_failures"), host=host,
                                    context=ctx, gate=gate,
                                    backup_dir=Path(backup_dir) if backup_dir else None)
    finally:
        client.close()
    report = MigrationReport(mode="validate", source_index=loaded.source_index,
                             target_index=loaded.target_index,
                             plan_fingerprint=loaded.fingerprint)
    report.validation = result
    return report.finish(result.passed)


def rollback(
    backup_dir: str | Path,
    *,
    redis_url: str | None = None,
    index_timeout: float = 600.0,
    progress_callback: Callable[[str, int, int], None] | None = None,
    index: str | None = None,
    force: bool = False,
) -> MigrationReport:
    """Restore the source index and documents from ``backup_dir`` (see ``rvlm rollback``);
    for a batch's backup dir, ``index`` names the index to roll back.

    A document someone changed after the migration wrote it is kept as it is and named in the
    report (``restore_conflicts``; the result is ``failed``) unless ``force`` puts its
    originals back over that change."""
    from rvlm.core.migrate.rollback import rollback as _rollback

    return _rollback(redis_url, backup_dir, index_timeout=index_timeout,
                     progress=progress_callback, index=index, force=force)


def finalize(
    backup_dir: str | Path,
    *,
    redis_url: str | None = None,
    online: OnlineOptions | None = None,
    plugins: Sequence[Any] = (),
    progress_callback: Callable[[str, int, int], None] | None = None,
) -> MigrationReport:
    """End an online migration that copied documents (see ``rvlm finalize``): back up every
    source key, then delete it, carrying over any change made meanwhile. When an apply with
    ``follow`` runs on ``backup_dir``, it is asked to do it and this waits for it."""
    from rvlm.core.migrate.online.finalize import finalize_migration

    return finalize_migration(redis_url, backup_dir, options=online, plugins=plugins,
                              progress=progress_callback)


def __getattr__(name: str) -> Any:
    """``BatchMigrationPlanner``, ``BatchMigrationExecutor`` and ``resolve_inputs``
    (:func:`rvlm.core.migrate.planner.resolve_inputs`), imported on first use."""
    if name == "BatchMigrationPlanner":
        from rvlm.core.multi.planner import BatchMigrationPlanner

        return BatchMigrationPlanner
    if name == "BatchMigrationExecutor":
        from rvlm.core.multi.executor import BatchMigrationExecutor

        return BatchMigrationExecutor
    if name == "resolve_inputs":
        from rvlm.core.migrate import planner

        return planner.resolve_inputs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BatchMigrationExecutor",
    "BatchMigrationPlanner",
    "MigrationExecutor",
    "MigrationPlanner",
    "finalize",
    "progress_adapter",
    "quality_options",
    "resolve_inputs",
    "rollback",
    "validate",
]
