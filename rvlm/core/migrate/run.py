"""One apply (or resume) of one plan: what the drop_recreate and online executors share.

A :class:`Run` holds the connection, the plan, the backup dir's coordinator journal, the
report, the timer, the plugin host and apply context, and the leases of the index locks; it
runs the checks every apply makes before its first change (:meth:`Run.check_source`), journals
phases, creates the target index and waits until it is indexed. The two executors are
siblings that each take a Run: :func:`rvlm.core.migrate.drop_recreate.execute_drop_recreate`
and :func:`rvlm.core.migrate.online.executor.execute_online`;
:func:`rvlm.core.migrate.executor.apply_plan` builds the Run, takes the locks and dispatches
by ``plan.mode``.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from rvlm.core.errors import MigrationFailed, RvlmError
from rvlm.core.migrate.estimate import estimate_plan
from rvlm.core.migrate.faults import fault
from rvlm.core.migrate.online.options import OnlineOptions
from rvlm.core.migrate.plan import Plan
from rvlm.core.migrate.precheck import check_target_accepted
from rvlm.core.migrate.quality_gate import QualityGate
from rvlm.core.migrate.report import RESUME_HINT, MigrationReport, Timer, ValidationResult
from rvlm.core.migrate.validate import comparable, schema_diff, validate_migration
from rvlm.core.migrate.verify import DocumentsVerified
from rvlm.core.plugins.context import ApplyContext
from rvlm.core.plugins.documents import operation_problems
from rvlm.core.plugins.host import PluginHost
from rvlm.core.quality.model import QualityOptions
from rvlm.core.redis import durability
from rvlm.core.redis.capabilities import Capabilities, detect
from rvlm.core.redis.connection import connect, index_exists, read_index, wait_indexed
from rvlm.core.redis.lock import Leases
from rvlm.core.redis.topology import cluster_migrations
from rvlm.core.schema.ftcreate import create_arguments
from rvlm.core.schema.ftinfo import IndexInfo
from rvlm.core.storage.journal import Journal, RunState
from rvlm.core.units import human_bytes

#: Bytes kept free beyond the backup estimate (journals, key logs, file-system blocks).
SPACE_MARGIN = 1024 * 1024

#: ``progress(step, done, total)``: step is ``keys``, ``transform``, ``verify`` or ``indexing``.
Progress = Callable[[str, int, int], None]


def check_live_source(client: Any, plan: Plan) -> IndexInfo:
    """The live source index is the plan's (its own name, not an alias) and unchanged since the
    plan was made; returns its IndexInfo."""
    info = read_index(client, plan.source_index)
    if info.schema.index.name != plan.source_index:
        raise RvlmError(f"{plan.source_index!r} is an alias of index "
                        f"{info.schema.index.name!r}; plan against the index itself")
    live = comparable(info.schema, plan.source_schema)
    if live != plan.source_schema.without_unknowns():
        raise RvlmError("source changed since the plan was made ("
                        f"{schema_diff(live, plan.source_schema.without_unknowns())}); "
                        "make a new plan; nothing was changed")
    return info


class Run:
    """One apply (or resume) of ``plan`` into ``backup_dir``.

    ``client`` replaces the connection made from ``url`` (the async executor passes a bridge
    to redis.asyncio); ``owns_client`` says whether :meth:`close` closes it. ``online`` says
    how an online apply that copies documents behaves (throttle, follow, finalize, status).
    ``leases`` is set by the caller that holds the index locks; :meth:`check_leases` raises
    once one is lost.
    ``mutated`` turns True right before the first change to the server: from then on a failure
    is a failed, resumable migration, not a refused request. ``gate`` is the run's quality
    gate (:mod:`rvlm.core.migrate.quality_gate`): an executor calls :meth:`ask_source` while
    the source still serves, before its first change, and :meth:`validate` (which measures the
    target) before the target goes live.
    """

    def __init__(self, *, url: str, plan: Plan, backup_dir: Path, batch_size: int,
                 workers: int, accept_data_loss: bool, progress: Progress | None,
                 host: PluginHost, index_timeout: float, client: Any = None,
                 quality: QualityOptions | None = None,
                 online: OnlineOptions | None = None) -> None:
        self.url = url
        self.plan = plan
        self.dir = Path(backup_dir)
        self.batch_size = batch_size
        self.workers = max(1, int(workers))
        self.accept_data_loss = accept_data_loss
        self.progress_callback = progress
        self.host = host
        self.index_timeout = index_timeout
        #: how an online apply that copies documents behaves while it runs
        self.online = online or OnlineOptions()
        self.timer = Timer()
        self.report = MigrationReport(
            mode=plan.mode, source_index=plan.source_index, target_index=plan.target_index,
            backup_dir=str(self.dir), workers=self.workers, plan_fingerprint=plan.fingerprint,
            operation_kinds=tuple(dict.fromkeys(o.kind for o in plan.operations)))
        self.owns_client = client is None
        self.client: redis.Redis = connect(url) if client is None else client
        # every write pipeline waits for the replicas before its batch is journaled done
        self.replica_wait = durability.install(self.client)
        self.caps: Capabilities = detect(self.client)
        self.ctx = ApplyContext(plan=plan, capabilities=self.caps, client=self.client,
                                backup_dir=str(self.dir))
        self.journal = Journal(self.dir, 0)
        self.leases: Leases | None = None
        self.mutated = False
        self.gate = QualityGate(plan, self.dir, quality)

    def progress(self, step: str, done: int, total: int) -> None:
        """Report the progress of ``step`` to the caller's callback, if any."""
        if self.progress_callback is not None:
            self.progress_callback(step, done, total)

    def check_leases(self) -> None:
        """Raise :class:`~rvlm.core.redis.lock.LockLost` once an index lock's lease is lost."""
        if self.leases is not None:
            self.leases.check()

    # -- state ---------------------------------------------------------------------------
    def load_state(self) -> RunState:
        """The journal's state; a rolled-back run is refused. Sets ``report.resumed``."""
        state = RunState.load(self.dir)
        if state.phase == "rolled_back":
            raise RvlmError(f"the migration in {self.dir} was rolled back; use a new "
                            "--backup-dir to apply the plan again")
        self.report.resumed = state.phase is not None
        self.report.resumed_from = state.phase or ""
        return state

    def server_identity(self) -> dict[str, Any]:
        """``{"run_id", "uptime_s"}`` of the server (a cluster: every node's run id, sorted and
        joined, and the shortest uptime)."""
        info = self.client.info("server")
        nodes = [v for v in info.values() if isinstance(v, dict)] if "run_id" not in info \
            else [info]
        run_ids = sorted(str(n.get("run_id", "")) for n in nodes) or [""]
        uptimes = [int(n.get("uptime_in_seconds", 0)) for n in nodes] or [0]
        return {"run_id": ",".join(run_ids), "uptime_s": min(uptimes)}

    def note_server(self, state: RunState) -> str | None:
        """Journal the server this run talks to; when the journal saw another one (its run id
        changed: it restarted, or a replica took over), say so: writes journaled as done may
        be gone (an older snapshot, an AOF that was not synced) and must be checked."""
        now = self.server_identity()
        before = state.server
        self.journal.append("server", **now)
        if before is None or before.get("run_id") == now["run_id"]:
            return None
        return (f"the server restarted since the journal was written (run id "
                f"{str(before.get('run_id'))[:12]} -> {now['run_id'][:12]}, up "
                f"{now['uptime_s']} s)")

    def phase(self, value: str, *, sync: bool = True, **data: Any) -> None:
        """Journal that the run reached phase ``value``, with ``data``; fsynced unless
        ``sync=False``: then it becomes durable with the next synced event or :meth:`close`
        (for phases whose loss a resume tolerates: it redoes the step or finds it done)."""
        self.journal.append("phase", sync=sync, value=value, **data)

    # -- checks --------------------------------------------------------------------------
    def check_plugins(self) -> None:
        """Every plugin the plan names is installed; version differences become warnings."""
        named: set[tuple[str, str | None]] = {(c.plugin, c.plugin_version)
                                              for c in self.plan.changes}
        named |= {(o.plugin, None) for o in self.plan.operations}
        for name, version in sorted(named, key=lambda t: (t[0], t[1] or "")):
            if not self.host.has(name):
                raise RvlmError(f"the plan needs plugin {name!r}, which is not installed "
                                "(or is disabled)")
            have = self.host.version(name)
            if version is not None and have != version:
                self.report.warnings.append(
                    f"plugin {name!r} is version {have}; the plan was made with {version}")

    def check_source(self) -> IndexInfo:
        """Everything before any mutation; returns the live source IndexInfo."""
        plan = self.plan
        if not plan.supported:
            raise RvlmError("the plan is blocked: " + "; ".join(plan.blocked_reasons))
        problems = operation_problems(plan.operations, plan.source_schema.storage_type,
                                      plan.target_schema.storage_type)
        if problems:
            raise RvlmError("the plan's operations cannot run: " + "; ".join(problems))
        if plan.lossy and not self.accept_data_loss:
            raise RvlmError("the plan is lossy (some values cannot be restored exactly); "
                            "pass --accept-data-loss (accept_data_loss=True) to apply it")
        self.check_plugins()
        self.check_cluster()
        info = check_live_source(self.client, plan)
        if info.stats.indexing:
            raise RvlmError(f"index {plan.source_index!r} is still indexing "
                            f"({info.stats.percent_indexed:.0%}); wait until it finishes")
        target = plan.target_schema
        if target.storage_type == "json" and not self.caps.json:
            raise RvlmError("the target index is on JSON and the server has no JSON module")
        for f in target.vector_fields():
            a = f.attrs
            if a.datatype not in self.caps.datatypes:  # type: ignore[union-attr]
                raise RvlmError(f"vector field {f.name!r}: the server cannot index datatype "
                                f"{a.datatype} (it has {', '.join(self.caps.datatypes)})")  # type: ignore[union-attr]
            if a.algorithm not in self.caps.algorithms:  # type: ignore[union-attr]
                raise RvlmError(f"vector field {f.name!r}: the server has no {a.algorithm} "  # type: ignore[union-attr]
                                f"algorithm (it has {', '.join(self.caps.algorithms)})")
        if plan.target_index != plan.source_index and index_exists(self.client,
                                                                   plan.target_index):
            raise RvlmError(f"the target index name {plan.target_index!r} already exists "
                            "(index or alias); choose another name")
        check_target_accepted(self.client, target)
        return info

    def check_cluster(self) -> None:
        """On a Redis Cluster: no slot migration in progress (an index does not move with its
        slot, so documents moved meanwhile would leave the index behind)."""
        if not self.caps.cluster:
            return
        moving = cluster_migrations(self.client)
        if moving:
            shown = ", ".join(m.describe() for m in moving[:5])
            raise RvlmError(f"a slot migration is in progress on the cluster ({shown}): an "
                            "index does not move with its slot, so apply does not start or go "
                            "on during one; let the resharding finish, then run the same "
                            "command again")

    def check_free_space(self, documents: int) -> None:
        """Before the drop: the file system of the backup dir must hold the key file and the
        backup the plan's estimate expects for ``documents`` documents (plus
        :data:`SPACE_MARGIN` and a fifth), or the apply would stop mid-transform with the index
        already dropped. Called before the keys are enumerated (the source's count) and again
        after (the count found)."""
        estimate = estimate_plan(self.plan, self.client, self.host)
        need = estimate["backup_bytes"]
        if need is None:
            self.report.warnings.append("the backup's size is unknown (no estimate for some "
                                        "operation): free disk space was not checked")
            return
        planned = int(estimate["documents"] or 0)
        if planned and documents != planned:
            need = need * documents / planned
        # the key file, written twice while duplicates are sorted out (key, length, fingerprint)
        sample = self.plan.key_sample
        key_len = sum(len(k) for k in sample) / len(sample) if sample else 32
        need += 2 * documents * (key_len + 16)
        need = int(need * 1.2) + SPACE_MARGIN
        free = shutil.disk_usage(self.dir).free
        if free < need:
            raise RvlmError(
                f"not enough free disk space for the backup in {self.dir}: {human_bytes(free)} "
                f"free, about {human_bytes(need)} needed (the estimate for {documents} documents, "
                "plus a margin); free some space or use another --backup-dir; nothing was changed")

    # -- quality -------------------------------------------------------------------------
    def ask_source(self) -> None:
        """The quality gate asks the source what is not stored yet: call it while the source
        still serves, before the first change (a refused query check raises RvlmError)."""
        with self.timer.step("checks"):
            self.gate.ask_source(self.client)

    def validate(self, *, expected_docs: int | None, source_failures: int | None,
                 documents: DocumentsVerified | None = None) -> ValidationResult:
        """Validate the target (:func:`~rvlm.core.migrate.validate.validate_migration`) with
        the plugins' checks, the quality gate's and ``documents`` (the verification pass):
        what must pass before the target goes live (an alias moves, the run succeeds)."""
        return validate_migration(self.client, self.plan, expected_docs=expected_docs,
                                  source_failures=source_failures, host=self.host,
                                  context=self.ctx, gate=self.gate, documents=documents)

    # -- the target index ----------------------------------------------------------------
    def create_target(self, fault_point: str) -> None:
        """FT.CREATE the target index unless it exists (a resume), journal ``created``, then
        run the plugins' ``post_create``. ``fault_point`` names the crash-test point right
        after the journal entry (:mod:`rvlm.core.migrate.faults`)."""
        if index_exists(self.client, self.plan.target_index):
            return
        try:
            self.client.execute_command(*create_arguments(self.plan.target_schema))
        except redis.ResponseError as exc:
            raise MigrationFailed(f"FT.CREATE {self.plan.target_index} failed: {exc}") from None
        self.phase("created")
        fault(fault_point)
        self.host.post_create(self.plan, self.ctx)

    def wait_indexed(self) -> None:
        """Wait until the target index finished indexing (progress step ``indexing``), or
        fail after the run's index timeout."""
        wait_indexed(self.client, self.plan.target_index, self.index_timeout,
                     progress=lambda pct: self.progress("indexing", pct, 100),
                     hint="re-run the same command to keep waiting")

    # -- the end -------------------------------------------------------------------------
    def failed(self, exc: BaseException) -> MigrationReport:
        """The report of a run that failed after its first change: the error journaled and
        reported, with how to resume or roll back."""
        message = str(exc) if isinstance(exc, RvlmError) else f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):
            self.journal.append("error", message=message)
        self.report.error = message
        self.report.manual_actions.append(
            f"{RESUME_HINT}, or 'rvlm rollback --backup-dir {self.dir}' to restore the source "
            "index")
        return self.report.finish(False)

    def close(self) -> None:
        """Close the journal, and the connection when the run made it."""
        self.journal.close()
        durability.uninstall(self.client)
        if self.owns_client:
            self.client.close()


__all__ = ["SPACE_MARGIN", "Progress", "Run"]
