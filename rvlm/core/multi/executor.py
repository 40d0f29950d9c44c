"""Running a multi-index run: index by index, or K at a time on disjoint keyspaces.

:class:`BatchMigrationExecutor` (RedisVL's name) applies each applicable index of a
:class:`~rvlm.core.multi.plan.BatchPlan` with the single-index executor
(:func:`rvlm.core.migrate.executor.apply_plan`), checkpointing the
:class:`~rvlm.core.multi.state.BatchState` after every step and writing the
:class:`~rvlm.core.multi.report.BatchReport` at the end. An index that crashed mid-way is
resumed from its own journal (same plan file, same backup dir): it is never re-planned from a
dropped index.

    report = BatchMigrationExecutor().apply(
        plan, redis_url=url, state_path="batch_state.yaml", report_dir="reports",
        backup_dir="backups", progress_callback=lambda name, pos, total, status: ...)
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import redis
import yaml

from rvlm.core.errors import MigrationFailed, RvlmError
from rvlm.core.migrate.backup_dir import check_backup_dir_name
from rvlm.core.migrate.indexes import prefixes_overlap
from rvlm.core.migrate.report import now_iso
from rvlm.core.multi.plan import BatchPlan, safe_name
from rvlm.core.multi.report import REPORT_NAME, BatchReport
from rvlm.core.multi.state import BatchState, IndexState, state_in_use, state_lock
from rvlm.core.quality.model import QualityOptions
from rvlm.core.redis.connection import redact, resolve_url
from rvlm.core.storage.files import atomic_write_text
from rvlm.core.storage.redisvl import redisvl_backup

#: RedisVL's callback: ``progress_callback(index_name, position, total, status)`` where
#: status is ``starting``, ``succeeded`` or ``failed``.
ProgressCallback = Callable[[str, int, int, str], None]
#: The single-index executor (``rvlm.core.migrate.executor.apply_plan`` by default).
ApplyFunction = Callable[..., Any]


class BatchMigrationExecutor:
    """Runs a batch plan index by index (or K at a time on disjoint keyspaces), with a
    checkpointed state file; ``resume`` continues a multi-index run that stopped (see the
    module docstring).

    ``apply_function`` replaces the single-index executor (tests; defaults to
    :func:`rvlm.core.migrate.executor.apply_plan`). ``quality`` and ``rollback_below_recall``
    are the quality gate's options, the same for every index (see
    :meth:`rvlm.MigrationExecutor.apply`): an index under the floor fails (and, with
    ``rollback_below_recall``, is rolled back), and the failure policy decides what follows.
    """

    def __init__(self, *, apply_function: ApplyFunction | None = None,
                 plugins: Sequence[Any] = (), batch_size: int = 500, workers: int = 1,
                 index_timeout: float = 600.0, quality: QualityOptions | None = None,
                 rollback_below_recall: bool = False, online: Any = None) -> None:
        self._apply_function = apply_function
        self.plugins = tuple(plugins)
        self.batch_size = batch_size
        self.workers = workers
        self.index_timeout = index_timeout
        self.quality = quality
        self.rollback_below_recall = rollback_below_recall
        #: :class:`~rvlm.core.migrate.online.options.OnlineOptions` for the indexes whose
        #: online plans copy documents (no ``follow``: each index drains, then the next runs)
        self.online = online

    # -- public API ----------------------------------------------------------------------
    def apply(
        self,
        batch_plan: BatchPlan | str | Path,
        *,
        redis_url: str | None = None,
        state_path: str | Path = "batch_state.yaml",
        report_dir: str | Path | None = None,
        backup_dir: str | Path | None = None,
        progress_callback: ProgressCallback | None = None,
        accept_data_loss: bool = True,
        parallel: int = 1,
        batch_size: int | None = None,
        num_workers: int | None = None,
        batch_plan_path: str | Path | None = None,
    ) -> BatchReport:
        """Run every applicable index of ``batch_plan`` (an object or a file path).

        ``batch_size`` and ``num_workers`` (RedisVL's arguments) override the executor's own
        for this run; ``batch_plan_path`` is where a plan object not yet written goes (default
        ``<batch_id>_plan.yaml`` next to the state file).

        A state file that already holds this run is continued (like ``resume``); one for
        another run is refused. Raises :class:`RvlmError` for refused input (nothing run):
        a refused batch plan, no backup dir, a lossy plan with ``accept_data_loss=False``.
        Index failures do not raise: the returned report says what happened.

        Like :meth:`rvlm.MigrationExecutor.apply` (and RedisVL), the library applies the
        plans it is handed: ``accept_data_loss`` defaults to True here; the CLI passes
        ``--accept-data-loss`` as given, on every run and resume.
        """
        plan = batch_plan if isinstance(batch_plan, BatchPlan) else BatchPlan.load(batch_plan)
        self._run_sizes(batch_size, num_workers)
        if plan.refused:
            raise RvlmError(plan.conflict_message())
        if backup_dir is None:
            raise RvlmError("a backup dir is required (--backup-dir): each index keeps its "
                            "originals and journal in <backup-dir>/<index>/")
        if parallel < 1:
            raise RvlmError(f"--parallel must be at least 1, not {parallel}")
        state_file = Path(state_path).resolve()
        backup = check_backup_dir_name(backup_dir).resolve()
        if backup.exists() and not backup.is_dir():
            raise RvlmError(f"backup dir {backup} is a file")
        foreign = redisvl_backup(backup)
        if foreign is not None:
            raise RvlmError(f"{foreign}; use a new --backup-dir for rvlm batch apply (and keep "
                            f"this one for rvl migrate rollback)")
        for what, directory in (("state file's directory", state_file.parent),
                                ("backup dir", backup)):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RvlmError(f"{what} {directory}: cannot create it ({exc.strerror}); "
                                "nothing was run") from None
        with state_lock(state_file):
            if state_file.exists():
                state = BatchState.load(state_file)
                if state.batch_id != plan.batch_id:
                    raise RvlmError(
                        f"{state_file} belongs to batch {state.batch_id}, not {plan.batch_id}; "
                        "use another --state file")
                self._check_backup_dir(state, backup, state_file)
                return self._run(state, state_file, redis_url, progress_callback,
                                 accept_data_loss, parallel, retry_failed=False)
            for entry in plan.applicable:  # load and check every plan before anything runs
                plan.plan_for(entry.name)
            lossy = [e.name for e in plan.applicable if plan.plans[e.name].lossy]
            if lossy and not accept_data_loss:
                raise RvlmError(f"the plans of {', '.join(lossy)} are lossy (some values "
                                "cannot be restored exactly); pass --accept-data-loss "
                                "(accept_data_loss=True) to apply them")
            if plan.path is None:
                plan.write(Path(batch_plan_path) if batch_plan_path is not None
                           else state_file.with_name(f"{plan.batch_id}_plan.yaml"))
            assert plan.path is not None
            reports = Path(report_dir).resolve() if report_dir else state_file.parent / "reports"
            state = BatchState(
                batch_id=plan.batch_id, plan_path=str(plan.path),
                plan_fingerprint=plan.fingerprint, backup_dir=str(backup),
                report_dir=str(reports), failure_policy=plan.failure_policy,
                redis_url=redact(resolve_url(redis_url)), accept_data_loss=accept_data_loss,
                indexes=[IndexState(
                    name=e.name,
                    status="pending" if e.applicable else "skipped",
                    skip_reason=e.skip_reason,
                    plan_path=str(plan.path.parent / e.plan_path) if e.plan_path else None,
                    backup_dir=str(backup / safe_name(e.name)) if e.applicable else None,
                ) for e in plan.indexes])
            state.save(state_file)
            return self._run(state, state_file, redis_url, progress_callback,
                             accept_data_loss, parallel, retry_failed=False, plan=plan)

    def resume(
        self,
        state_path: str | Path,
        *,
        redis_url: str | None = None,
        retry_failed: bool = False,
        backup_dir: str | Path | None = None,
        report_dir: str | Path | None = None,
        progress_callback: ProgressCallback | None = None,
        accept_data_loss: bool = True,
        parallel: int = 1,
        batch_size: int | None = None,
        num_workers: int | None = None,
        batch_plan_path: str | Path | None = None,
    ) -> BatchReport:
        """Continue the multi-index run in ``state_path``: an index that was in progress
        resumes from its own journal, pending ones run, failed ones only with
        ``retry_failed``. A ``backup_dir`` other than the state's is refused, and so is a
        ``batch_plan_path`` (RedisVL's argument) that is not the batch plan the state was
        started from. A lossy plan left to run needs ``accept_data_loss`` on this call (the
        CLI's ``--accept-data-loss``), whatever the first run was given."""
        if parallel < 1:
            raise RvlmError(f"--parallel must be at least 1, not {parallel}")
        self._run_sizes(batch_size, num_workers)
        state_file = Path(state_path).resolve()
        with state_lock(state_file):
            state = BatchState.load(state_file)
            if batch_plan_path is not None:
                given = BatchPlan.load(batch_plan_path)
                if given.batch_id != state.batch_id or (
                        state.plan_fingerprint and given.fingerprint != state.plan_fingerprint):
                    raise RvlmError(f"{batch_plan_path} is not the batch plan {state_file} was "
                                    f"started from ({state.plan_path})")
            if backup_dir is not None:
                self._check_backup_dir(state, Path(backup_dir).resolve(), state_file)
            if report_dir is not None:
                state.report_dir = str(Path(report_dir).resolve())
            return self._run(state, state_file, redis_url, progress_callback,
                             accept_data_loss, parallel, retry_failed=retry_failed)

    @staticmethod
    def status(state_path: str | Path) -> BatchState:
        """The batch state as last checkpointed (read-only). A state left ``running`` by a
        process that is gone (killed, crashed) reads as ``interrupted``."""
        state = BatchState.load(Path(state_path))
        if state.status == "running" and not state_in_use(state_path):
            state.status = "interrupted"
        return state

    # -- internals -----------------------------------------------------------------------
    def _run_sizes(self, batch_size: int | None, num_workers: int | None) -> None:
        if batch_size is not None:
            self.batch_size = batch_size
        if num_workers is not None:
            self.workers = num_workers

    @staticmethod
    def _check_backup_dir(state: BatchState, backup: Path, state_file: Path) -> None:
        if Path(state.backup_dir) != backup:
            raise RvlmError(f"{state_file} was started with backup dir {state.backup_dir}, not "
                            f"{backup}; resume with the same backup dir")

    def _apply_fn(self) -> ApplyFunction:
        if self._apply_function is not None:
            return self._apply_function
        from rvlm.core.migrate.executor import apply_plan

        return apply_plan

    def _run(self, state: BatchState, state_file: Path, redis_url: str | None,
             progress: ProgressCallback | None, accept_data_loss: bool, parallel: int, *,
             retry_failed: bool, plan: BatchPlan | None = None) -> BatchReport:
        if plan is None:
            plan = BatchPlan.load(state.plan_path)
            if plan.batch_id != state.batch_id or (state.plan_fingerprint
                                                    and plan.fingerprint != state.plan_fingerprint):
                raise RvlmError(f"{state.plan_path} is not the batch plan {state_file} was "
                                "started with (it was changed); restore it or start a new batch")
        if redis_url is None and state.redis_url and "***" not in state.redis_url:
            redis_url = state.redis_url
        url = resolve_url(redis_url)
        if retry_failed:
            for i in state.indexes:
                if i.status == "failed":
                    i.status = "pending"
                    i.error = None
                    i.refused = False
        # Crashed indexes first (they hold a dropped index), then the rest in plan order.
        order = [i for i in state.indexes if i.status == "in_progress"]
        order += [i for i in state.indexes if i.status == "pending"]
        for i in order:  # load every plan before running anything
            plan.plan_for(i.name)
        lossy = [i.name for i in order if plan.plans[i.name].lossy]
        if lossy and not accept_data_loss:
            raise RvlmError(f"the plans of {', '.join(lossy)} are lossy; pass "
                            "--accept-data-loss to apply them")
        for what, directory in (("report dir", state.report_dir),
                                ("backup dir", state.backup_dir)):
            try:
                Path(directory).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RvlmError(f"{what} {directory}: cannot create it ({exc.strerror}); "
                                "nothing was run") from None
        state.status = "running"
        state.finished_at = None
        state.save(state_file)
        runner = _Runner(self, plan, state, state_file, url, progress, accept_data_loss)
        try:
            runner.run([i.name for i in order], parallel)
        finally:
            # Also on Ctrl-C: the state and the report say where the run stopped.
            state.status = state.overall()
            if state.status == "running":
                state.status = "interrupted"
            else:
                state.finished_at = now_iso()
            state.save(state_file)
            report = BatchReport.from_state(state, state_file)
            out = Path(state.report_dir) / REPORT_NAME
            report.report_path = str(out)
            report.write(out)
        return report


class _Runner:
    """Schedules indexes (1 or K at a time) and checkpoints after every step."""

    def __init__(self, owner: BatchMigrationExecutor, plan: BatchPlan, state: BatchState,
                 state_file: Path, url: str, progress: ProgressCallback | None,
                 accept_data_loss: bool) -> None:
        self.owner = owner
        self.plan = plan
        self.state = state
        self.state_file = state_file
        self.url = url
        self.progress = progress
        self.accept_data_loss = accept_data_loss
        self.lock = threading.Lock()
        self.stopped = False
        self.total = sum(1 for i in state.indexes if i.status != "skipped")
        self.position = sum(1 for i in state.indexes if i.status in ("succeeded", "failed"))

    def _notify(self, name: str, status: str) -> None:
        if self.progress is not None:
            with contextlib.suppress(Exception):
                self.progress(name, self.position, self.total, status)

    def run(self, names: list[str], parallel: int) -> None:
        if parallel <= 1:
            for name in names:
                if self.stopped:
                    break
                self._one(name)
            return
        todo = list(names)
        running: dict[Future[None], str] = {}
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="rvlm-index") as pool:
            interrupted: BaseException | None = None
            while todo or running:
                if not self.stopped and interrupted is None:
                    for name in list(todo):
                        if len(running) >= parallel:
                            break
                        if self._disjoint(name, running.values()):
                            todo.remove(name)
                            running[pool.submit(self._one, name)] = name
                if not running:
                    break
                try:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                except KeyboardInterrupt as exc:  # let running indexes checkpoint, then stop
                    interrupted = exc
                    self.stopped = True
                    continue
                for fut in done:
                    running.pop(fut)
                    fut.result()
            if interrupted is not None:
                raise interrupted

    def _disjoint(self, name: str, running: Any) -> bool:
        mine = self.plan.entry(name).keyspace
        return not any(prefixes_overlap(mine, self.plan.entry(other).keyspace)
                       for other in running)

    def _checkpoint(self) -> None:
        self.state.save(self.state_file)

    def _one(self, name: str) -> None:
        """Run (or resume) one index; never raises for an index failure."""
        with self.lock:
            ist = self.state.index(name)
            if ist.status == "in_progress" or ist.attempts:
                ist.resumed = True
            ist.status = "in_progress"
            ist.attempts += 1
            ist.error = None
            ist.started_at = ist.started_at or now_iso()
            ist.finished_at = None
            self._checkpoint()
            self.position += 1
            self._notify(name, "starting")
        plan = self.plan.plan_for(name)
        backup = Path(ist.backup_dir or Path(self.state.backup_dir) / safe_name(name))
        t0 = time.monotonic()
        report: Any = None
        error: str | None = None
        refused = False
        extra: dict[str, Any] = {}
        if self.owner.online is not None and plan.online and plan.operations:
            extra["online"] = self.owner.online
        try:
            report = self.owner._apply_fn()(
                self.url, plan, backup_dir=backup, batch_size=self.owner.batch_size,
                workers=self.owner.workers, accept_data_loss=self.accept_data_loss,
                plugins=self.owner.plugins, index_timeout=self.owner.index_timeout,
                quality=self.owner.quality,
                rollback_below_recall=self.owner.rollback_below_recall, **extra)
        except MigrationFailed as exc:
            error = str(exc)
        except RvlmError as exc:
            error, refused = str(exc), True
        except redis.RedisError as exc:
            error = f"Redis error: {exc}"
        except KeyboardInterrupt:
            with self.lock:
                ist.duration_seconds += time.monotonic() - t0
                self._checkpoint()
            self.stopped = True
            raise
        except Exception as exc:  # one index's bug must not lose the others' state
            error = f"unexpected {type(exc).__name__}: {exc}"
        elapsed = time.monotonic() - t0
        with self.lock:
            ist.duration_seconds += elapsed
            ist.finished_at = now_iso()
            ist.refused = refused
            if report is not None:
                ok = getattr(report, "result", "failed") == "succeeded"
                if isinstance(getattr(report, "resumed", None), bool):
                    ist.resumed = report.resumed  # the executor knows if its journal had work
                ist.documents = int(getattr(report, "documents", 0) or 0)
                ist.documents_rewritten = int(getattr(report, "documents_rewritten", 0) or 0)
                if not ok:
                    errors = list(getattr(getattr(report, "validation", None), "errors", []) or [])
                    error = getattr(report, "error", None) or "; ".join(errors) \
                        or "the migration failed"
                ist.report_path = self._write_index_report(name, report)
            ist.status = "succeeded" if report is not None and error is None else "failed"
            ist.error = error
            self._checkpoint()
            if ist.status == "failed" and self.state.failure_policy == "fail_fast":
                self.stopped = True
            self._notify(name, ist.status)

    def _write_index_report(self, name: str, report: Any) -> str | None:
        path = Path(self.state.report_dir) / f"{safe_name(name)}_report.yaml"
        try:
            text = report.to_yaml() if hasattr(report, "to_yaml") else yaml.safe_dump(
                report.to_dict(), sort_keys=False)
            atomic_write_text(path, text)
        except Exception:  # a report we cannot write must not fail the index
            return None
        return str(path)


__all__ = ["ApplyFunction", "BatchMigrationExecutor", "ProgressCallback"]
