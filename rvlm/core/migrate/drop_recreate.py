"""The drop_recreate executor: checks, key enumeration, drop, transform in batches, create,
validate; resume.

The executor owns every side effect (design intent): plugins describe and transform, this
module reads, backs up, journals, writes and renames, once for all plugins.

Order of effects (each phase is journaled in ``journal-0.jsonl`` of the backup dir)::

    checked -> keys_enumerated -> pre_drop_done -> dropped -> transforming -> transformed
    -> created -> indexed -> validated -> done

Nothing is mutated before ``dropped``: every check, the key file and the collision checks
over *all* keys come first. A plan without document operations (an index-only change) has
no key file and no transform: it drops, creates and validates.

Each batch is: read (one batch ahead, on a thread of its own) -> transform (all operations,
in plan order, each seeing the previous one's values; :mod:`rvlm.core.migrate.transform`)
-> backup (encoded, written, fsynced: thread "durable") -> ``batch_started`` -> write one
pipeline (renames last: thread "writer") -> ``batch_done``. Batches overlap: while batch b's
writes are sent, batch b+1's backup is encoded and fsynced and batch b+2 is transformed, so
the backup's fsync is off the critical path too.

The invariant, per batch N: **no key of batch N is written before batch N's backup frame is
fsynced** (the writer waits for the backup's future), and ``batch_started(N)`` is journaled
only after that fsync, ``batch_done(N)`` only after every write of N was acknowledged. Across
batches nothing is ordered but the backup frames (in batch order in each worker's data file)
and the writes (in batch order on the writer thread): ``backup(N+1)`` and
``batch_started(N+1)`` may come before ``writes(N)`` and ``batch_done(N)``, so a crash can
leave up to ``WRITE_QUEUE + 1`` (three) batches backed up and not done: N half written, N+1
queued for the writer and N+2 just transformed, neither written at all, the last frame
fsynced, or written and not yet fsynced (complete in the page cache, torn or gone after an OS
crash). The journal is fsynced at most every :data:`JOURNAL_SYNC_SECONDS`: its events order
nothing, since the backup's fsync is a batch's one durable point.

Re-running the same apply with the same backup dir resumes: batches backed up (or journaled as
started) but not done are restored from their backup records and redone from the originals,
so no value is transformed twice and no rename is lost. Why a crash at any point resumes
right: before a batch's backup fsync returns, no key of the batch was written (it is redone
from the documents as they are; a torn or lost frame is cut off by the backup writer); after
it, the backup holds the originals and the batch counts as started whether or not its
``batch_started`` reached the disk; a backed-up batch none of whose writes happened is restored
to the values it still holds (a no-op) and redone; a lost ``batch_done`` only redoes a batch
from its backup. Batches hold disjoint keys (and a rename's new keys were checked not to
exist), so restoring N+1 never touches N's keys. A rollback restores every batch in the
backup, written or not, the same way.

Crash tests stop it at fault points (:mod:`rvlm.core.migrate.faults`). ``RVLM_RENAME_MODE=dump``
forces the DUMP/RESTORE rename path used on clusters.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis

from rvlm.core.errors import MigrationFailed, RvlmError
from rvlm.core.migrate.aliases import check_aliases, lost_aliases_note, point_aliases
from rvlm.core.migrate.backup_dir import KEYS_NAME, PLAN_NAME
from rvlm.core.migrate.collector import fewer_collections
from rvlm.core.migrate.collisions import CollisionCheck, StreamedCollisions
from rvlm.core.migrate.faults import fault
from rvlm.core.migrate.report import MigrationReport
from rvlm.core.migrate.run import Run
from rvlm.core.migrate.transform import transform_batch
from rvlm.core.migrate.validate import comparable, schema_diff
from rvlm.core.migrate.verify import (
    WrittenLog,
    remember_backup_dir,
    rewritten_entry,
    verifies,
    verify_documents,
)
from rvlm.core.plugins.context import ApplyContext
from rvlm.core.redis import durability
from rvlm.core.redis.connection import connect, index_exists, read_index
from rvlm.core.redis.docio.keys import Enumeration, enumerate_keys
from rvlm.core.redis.docio.read import ReadDoc, read_batch
from rvlm.core.redis.docio.restore import conflict_actions, conflict_message, restore_records
from rvlm.core.redis.docio.write import KeyWrite, write_batch
from rvlm.core.storage.backup.reader import BackupReader
from rvlm.core.storage.backup.records import RawRecord
from rvlm.core.storage.backup.writer import BackupWriter
from rvlm.core.storage.journal import Journal, RunState, phase_data
from rvlm.core.storage.keyfile import KeyFileReader

log = logging.getLogger(__name__)

#: Send each batch's writes from a writer thread (see ``DropRecreate._work``); False writes
#: them inline, after the next batch was read and transformed.
WRITER_THREAD = True

#: Batches transformed and queued for the writer thread at once (the oldest may be being
#: written while the next one's backup is fsynced): 2 lets batch b+1's backup overlap batch
#: b's writes; 1 is the order of the fifth session (backup(b+1) only after b is done).
WRITE_QUEUE = 2

#: The journal is fsynced (beside the writes, on thread "durable") at most this often: its
#: events order nothing (see the module docstring); a batch_done lost with the page cache
#: only redoes that batch, so this bounds the work an OS crash makes a resume redo.
JOURNAL_SYNC_SECONDS = 0.5

#: A worker process is started only for at least this many batches (forking, connecting and
#: opening its backup file and journal cost about as much as a few batches).
MIN_BATCHES_PER_WORKER = 4


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def worker_count(requested: int, batches: int) -> tuple[int, str]:
    """How many transform processes to run for ``requested`` and ``batches`` pending, and
    why fewer (empty when none are cut). More processes than CPUs only take turns on them
    (with the server and the coordinator) and run slower than fewer; a worker with fewer than
    :data:`MIN_BATCHES_PER_WORKER` batches does not earn back its start."""
    cpus = usable_cpus()
    by_batches = max(1, batches // MIN_BATCHES_PER_WORKER)
    workers = max(1, min(requested, cpus, by_batches))
    if workers >= requested:
        return requested, ""
    if workers == cpus and cpus < by_batches:
        return workers, f"this machine lets the process use {cpus} CPU(s)"
    return workers, (f"{batches} batch(es) to do; a worker needs at least "
                     f"{MIN_BATCHES_PER_WORKER}")


#: Prefix of the stats keys that carry what plugins counted (ApplyContext.tally).
TALLY = "tally:"


def execute_drop_recreate(run: Run) -> MigrationReport:
    """Run (or resume) a drop_recreate apply; called by
    :func:`rvlm.core.migrate.executor.apply_plan` with the index locks held. Raises before the
    drop; after it, raises with ``run.mutated`` set (the caller turns that into a failed,
    resumable report)."""
    return DropRecreate(run).execute()


class DropRecreate:
    """The phases of a drop_recreate apply over one :class:`~rvlm.core.migrate.run.Run`."""

    def __init__(self, run: Run) -> None:
        self.run = run
        #: what this process's transform wrote, for the verification pass (bounded)
        self.written = WrittenLog()
        plan = run.plan
        self.storage = plan.source_schema.storage_type
        self.names = list(dict.fromkeys(n for op in plan.operations
                                        for n in (*op.reads, *op.writes)))
        #: a converts_to operation reads whole documents
        self.whole = any(op.converts_to is not None for op in plan.operations)
        #: TTLs are backed up only for keys that move; read them with the values only when
        #: the plan renames keys (a plugin's own new_key is handled in transform_batch)
        self.ttl = any(op.rename_prefix is not None for op in plan.operations)

    # -- phases --------------------------------------------------------------------------
    def execute(self) -> MigrationReport:
        run = self.run
        plan, client, timer, report = run.plan, run.client, run.timer, run.report
        state = run.load_state()
        restarted = run.note_server(state)
        if restarted and state.reached("dropped"):
            state = self.after_restart(state, restarted)
        if state.phase == "done":
            return self.finished_already()
        past_drop = state.reached("dropped") or (
            state.phase == "pre_drop_done"
            and not index_exists(client, plan.source_index))
        keyfile = run.dir / KEYS_NAME
        if not past_drop:
            with timer.step("checks"):
                info = run.check_source()
                aliases = check_aliases(client, plan)  # where each pointed before
                if plan.operations:  # the key file and the backup must fit (counted again
                    # once the keys are enumerated)
                    run.check_free_space(info.stats.num_docs + info.stats.indexing_failures)
            run.phase("checked", sync=False, **({"aliases": aliases} if aliases else {}))
            fault("after_checks")
            collisions = CollisionCheck(plan, client, cluster=run.caps.cluster)
            # Beside the key enumeration (a plain redis.Redis only; each on a pooled
            # connection of its own, reading only): the source answers the quality gate's
            # queries on one thread, and the collision check counts each page of keys on
            # another as the enumeration finds it, so the server works on them while the
            # client writes the key file. Both end (and their errors are raised) below,
            # before anything changes; the answers are written only once every check passed.
            overlap = bool(plan.operations) and type(client) is redis.Redis
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rvlm-source") as side, \
                    StreamedCollisions(collisions) as streamed:
                asked = side.submit(run.gate.ask_source, client, keep=False) if overlap \
                    else None
                if plan.operations:
                    with timer.step("keys"):
                        seen = 0

                        def on_page(keys: list[bytes]) -> None:
                            nonlocal seen
                            seen += len(keys)
                            run.progress("keys", seen, info.stats.num_docs)
                            if overlap and collisions.wanted:
                                streamed.add(keys)

                        en = enumerate_keys(client, plan.source_schema, info.stats.num_docs,
                                            info.stats.indexing_failures, keyfile,
                                            on_page=on_page)
                        if en.fallback:
                            report.warnings.append(f"keys enumerated with SCAN: {en.fallback}")
                else:
                    # an index-only change rewrites no document: no key file, no transform;
                    # the documents are those the source index counts
                    en = Enumeration(count=info.stats.num_docs + info.stats.indexing_failures,
                                     method="none")
                run.phase("keys_enumerated", sync=False, count=en.count, method=en.method,
                          source_docs=info.stats.num_docs + info.stats.indexing_failures,
                          source_failures=info.stats.indexing_failures)
                with timer.step("checks"):
                    if overlap:
                        streamed.finish(keyfile)
                    elif plan.operations:
                        collisions.over_file(keyfile)
                    if plan.operations:
                        run.check_free_space(en.count)
                    problems = run.host.pre_drop(plan, run.ctx)
                    if problems:
                        raise RvlmError("a plugin refused the migration: "
                                        + "; ".join(problems))
                    if asked is not None:
                        run.gate.keep(asked.result())
            if asked is None:
                run.ask_source()  # the last moment the source answers queries
            # one fsync makes checked, keys_enumerated and pre_drop_done durable, after the
            # key file (fsynced when written) and before the drop
            run.phase("pre_drop_done")
            # said before the drop, on stderr (the plan said it too)
            log.warning("%s", lost_aliases_note(plan.source_index, plan.aliases))
            with timer.step("drop"):
                run.mutated = True
                client.execute_command("FT.DROPINDEX", plan.source_index)
            # a lost "dropped" is found again on resume: pre_drop_done and no source index
            run.phase("dropped", sync=False)
            fault("after_drop")
        else:
            run.mutated = True
            run.check_plugins()
            run.check_cluster()  # a resume waits for a resharding to end, too
        enum = phase_data(run.dir, "keys_enumerated")
        report.key_enumeration = str(enum.get("method", ""))
        dropped_at = float(phase_data(run.dir, "dropped").get("ts", time.time()))
        if not state.reached("transformed") and plan.operations:
            run.phase("transforming", sync=False)
            with timer.step("transform"):
                self.transform(keyfile)
            run.phase("transformed")
            fault("after_transform")
        with timer.step("create"):
            # a resharding begun during the transform: the index would be created over part
            # of its documents (the rest are on their way to another node)
            run.check_cluster()
            run.create_target("after_create")
            # the drop removed the source's aliases: point them at the target (idempotent)
            point_aliases(client, plan.aliases, plan.target_index, plan.source_index)
        documents = None
        if verifies(plan):
            remember_backup_dir(plan, run.dir)  # for a validate without --backup-dir
            # every rewritten document read back while the server builds the index (the
            # client would only wait meanwhile): the pass costs little on the wall clock
            with timer.step("verify"):
                documents = verify_documents(
                    client, plan, run.dir,
                    progress=lambda done, total: run.progress("verify", done, total),
                    kept=self.written)
        with timer.step("indexing"):
            run.wait_indexed()
        run.phase("indexed", sync=False)
        report.downtime_duration_seconds = max(0.0, time.time() - dropped_at)
        with timer.step("validation"):
            result = run.validate(expected_docs=enum.get("source_docs"),
                                  source_failures=enum.get("source_failures"),
                                  documents=documents)
        report.validation = result
        if result.passed:
            # durable at the latest when the run closes the journal (a lost one only means
            # a resume waits for the index and validates again)
            run.phase("validated", sync=False)
            run.phase("done", sync=False)
        else:
            run.journal.append("error", message="validation failed: "
                               + "; ".join(result.errors))
            report.manual_actions.append(
                f"inspect the index, then 'rvlm validate --plan {run.dir / PLAN_NAME}' or "
                f"'rvlm rollback --backup-dir {run.dir}'")
        report.documents = int(enum.get("count", 0))
        return report.finish(result.passed)

    def finished_already(self) -> MigrationReport:
        """A re-run of an apply that finished: nothing to do when the target index is still
        the plan's (validated again, no downtime); refused (nothing touched) when it is gone
        or has another schema, e.g. the source index was recreated by hand since."""
        run = self.run
        plan, report = run.plan, run.report
        target = plan.target_index
        again = (f"to migrate it again, make a new plan and apply it with a new --backup-dir "
                 f"(this one keeps the originals of the finished migration: 'rvlm rollback "
                 f"--backup-dir {run.dir}' still undoes it)")
        try:
            live = read_index(run.client, target).schema
        except RvlmError:
            raise RvlmError(f"the migration in {run.dir} already finished, and index "
                            f"{target!r} does not exist now; {again}") from None
        want = plan.target_schema.without_unknowns()
        if comparable(live, plan.target_schema) != want:
            diff = schema_diff(comparable(live, plan.target_schema), want)
            raise RvlmError(f"the migration in {run.dir} already finished, and index "
                            f"{target!r} no longer has the plan's target schema ({diff}): it "
                            f"was changed or recreated since; nothing was done; {again}")
        enum = phase_data(run.dir, "keys_enumerated")
        report.resumed = True
        report.key_enumeration = str(enum.get("method", ""))
        report.documents = int(enum.get("count", 0))
        report.downtime_duration_seconds = 0.0
        report.warnings.append(f"the migration in {run.dir} had already finished: nothing "
                               "was changed (validated again)")
        documents = None
        if verifies(plan):  # every rewritten document, again: writes may have been lost
            with run.timer.step("verify"):
                documents = verify_documents(run.client, plan, run.dir)
        with run.timer.step("validation"):
            result = run.validate(expected_docs=enum.get("source_docs"),
                                  source_failures=enum.get("source_failures"),
                                  documents=documents)
        report.validation = result
        return report.finish(result.passed)
    def after_restart(self, state: RunState, why: str) -> RunState:
        """The server restarted since the journal was written (``why``): what the journal says
        was done may be gone. A source index that is back (a snapshot older than the drop) is
        dropped again; every batch journaled as done is checked (:mod:`~rvlm.core.migrate.verify`)
        and one whose documents do not all hold what was written is journaled ``batch_lost``:
        the transform restores it from its backup and redoes it. Returns the new state."""
        run = self.run
        plan, client = run.plan, run.client
        run.report.warnings.append(f"{why}; every batch journaled as done was checked")
        source_back = False
        if index_exists(client, plan.source_index):
            live = read_index(client, plan.source_index).schema
            source, target = plan.source_schema, plan.target_schema
            is_source = comparable(live, source) == source.without_unknowns()
            is_target = (plan.source_index == plan.target_index
                         and comparable(live, target) == target.without_unknowns())
            source_back = is_source and not is_target
        if source_back:
            client.execute_command("FT.DROPINDEX", plan.source_index)
            run.phase("dropped", again=True)
            run.report.warnings.append(
                f"the server holds the source index {plan.source_index!r} again (its snapshot "
                "is older than the drop): dropped it again")
        if state.done and verifies(plan):
            lost = verify_documents(client, plan, run.dir, batches=state.done)
            for b in sorted(lost.bad_batches):
                run.journal.append("batch_lost", batch=b)
            if lost.bad_batches:
                run.report.warnings.append(
                    f"{len(lost.bad_batches)} batch(es) journaled as done lost writes "
                    f"({lost.changed + lost.gone} of {lost.checked} documents): restored from "
                    "the backup and redone")
                if state.reached("transformed") and not source_back:
                    run.phase("transforming")
        return RunState.load(run.dir)

    # -- transform -----------------------------------------------------------------------
    def transform(self, keyfile: Path) -> None:
        """Restore unfinished batches, then run every batch not done (in N processes), with
        the garbage collector run less often (:func:`fewer_collections`)."""
        with fewer_collections():
            self._transform(keyfile)

    def _transform(self, keyfile: Path) -> None:
        run = self.run
        state = RunState.load(run.dir)
        backup = BackupReader(run.dir, run.plan.fingerprint)
        backup.require(state.started)
        backed = set(backup.batch_numbers())
        with KeyFileReader(keyfile) as reader:
            total = reader.num_batches(run.batch_size)
            keys = reader.count
        redo = sorted((backed | state.started_not_done) - state.done)
        conflicts: list[tuple[bytes, bytes]] = []
        for b in redo:
            # backed up (or started), not done: its writes may have begun (the backup's fsync
            # is the batch's durable point, its batch_started may be lost), and a replacement
            # may have failed after its DEL (recreate it)
            restore_records(run.client, self.storage, backup.batch(b),
                            recreate=True, conflicts=conflicts)
        if conflicts:
            # a batch that cannot be restored must not be redone: its writes would land on a
            # key that may not be the migration's own
            run.report.restore_conflicts = len(conflicts)
            run.report.manual_actions += conflict_actions(conflicts, run.dir)
            raise MigrationFailed(conflict_message(conflicts))
        run.report.batches_resumed = len(redo)
        pending = [b for b in range(total) if b not in state.done]
        run.report.batches = total
        # what an earlier, interrupted run finished (batch b holds keys b*size .. (b+1)*size)
        run.report.batches_done_before = total - len(pending)
        run.report.documents_done_before = sum(
            max(0, min(run.batch_size, keys - b * run.batch_size)) for b in state.done
            if b < total)
        stats = {"docs": 0, "bytes": 0}
        done_count = total - len(pending)
        run.progress("transform", done_count, total)
        workers, why = worker_count(run.workers, len(pending))
        if why:
            run.report.warnings.append(f"--workers {run.workers} capped at {workers}: {why}")
        run.report.workers = workers
        if workers == 1:
            self._work(0, pending, backed, run.client, run.journal, stats,
                       lambda n: run.progress("transform", done_count + n, total))
        else:
            self._parallel(workers, pending, backed, stats, done_count, total)
        run.report.documents_rewritten += stats["docs"]
        run.report.bytes_rewritten += stats["bytes"]
        for key, count in stats.items():
            if key.startswith(TALLY) and count:
                run.report.warnings.append(f"{count:,} {key[len(TALLY):]} (the originals are "
                                           "in the backup)")

    def _work(self, worker: int, batches: Iterable[int], backed: set[int],
              client: redis.Redis, journal: Journal, stats: dict[str, int],
              tick: Callable[[int], None]) -> None:
        run = self.run
        ctx = run.ctx if client is run.client else ApplyContext(
            plan=run.plan, capabilities=run.caps, client=client, backup_dir=str(run.dir))
        with BackupWriter(run.dir, worker, run.plan.fingerprint) as writer, \
                KeyFileReader(run.dir / KEYS_NAME, verify=False) as reader, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="rvlm-durable") as bg:
            committed = writer.committed_batches()  # backed up by an earlier, crashed run
            keep = client is run.client  # this process verifies (not a forked worker)
            earlier: BackupReader | None = None

            sync_failed: list[OSError] = []
            synced_at = time.monotonic()

            def sync_journal() -> None:
                # at most every JOURNAL_SYNC_SECONDS (durability of the journal decides no
                # ordering; see the module docstring). A failed fsync of the journal is
                # raised with the next batch (or at the end): the disk is failing
                nonlocal synced_at
                if time.monotonic() - synced_at < JOURNAL_SYNC_SECONDS:
                    return
                try:
                    journal.sync()
                except OSError as exc:
                    sync_failed.append(exc)
                synced_at = time.monotonic()

            def make_durable(b: int, records: list[RawRecord]) -> dict[str, Any]:
                # the backup fsynced (the batch's one durable point), then batch_started
                # journaled: only after both may a key of the batch be written (finish waits
                # for this). Runs on thread "durable", in batch order, beside the previous
                # batch's writes. A batch backed up by an earlier attempt keeps that backup
                # (its originals); what this attempt writes that differs from its records is
                # returned, for batch_done to say.
                nonlocal earlier
                if sync_failed:
                    raise sync_failed[0]
                rewritten: dict[str, Any] = {}
                if b not in backed and b not in committed:
                    writer.append_batch(b, records,
                                        before_sync=lambda: fault("backup_unsynced", b))
                    if keep:  # the verification pass need not read it back
                        self.written.add(b, records)
                else:
                    if earlier is None:
                        earlier = BackupReader(run.dir, run.plan.fingerprint)
                    before = {ref[0]: ref[3] for ref in earlier.written(b)}
                    for r in records:
                        if len(r) == 6 and r[5] is not None and before.get(r[0]) != r[5]:
                            rewritten[r[0].hex()] = rewritten_entry(r[5])
                fault("after_backup", b)
                journal.append("batch_started", sync=False, batch=b)
                fault("after_started", b)
                return rewritten

            # the first error of a batch's writes: no later batch is written after it
            failed: list[BaseException] = []

            def finish(n: int, b: int, writes: list[KeyWrite],
                       durable: Future[dict[str, Any]]) -> None:
                if failed:
                    raise MigrationFailed(f"batch {b} not written: an earlier batch failed")
                try:
                    rewritten = durable.result()  # raises if the backup or the journal failed
                    run.check_leases()
                    written = write_batch(client, self.storage, writes,
                                          fault=lambda: fault("mid_write", b),
                                          move_fault=lambda: fault("mid_move", b))
                except BaseException as exc:
                    failed.append(exc)
                    raise
                # not fsynced on its own: the next journal sync (or the journal's close) makes
                # it durable, and a batch_done lost in a crash only means the batch is
                # restored from its backup and redone on resume
                journal.append("batch_done", sync=False, batch=b, docs=len(writes),
                               bytes=written, **({"rewritten": rewritten} if rewritten else {}))
                fault("after_batch", b)
                stats["docs"] += len(writes)
                stats["bytes"] += written
                tick(n)

            # Pipelined, three threads: this one transforms batch b+1 (read ahead on thread
            # "reader"), thread "durable" backs b+1 up and fsyncs it, and thread "writer" (on
            # its own pooled connection) sends batch b's writes and awaits their replies, all
            # at once. Per batch the effects keep their order: backup(b) fsynced ->
            # batch_started(b) -> writes(b) -> batch_done(b); across batches, backup(b+1)
            # and batch_started(b+1) may come before writes(b) and batch_done(b) (see the
            # module docstring for why a crash anywhere still resumes and rolls back right).
            # A client that is not a plain redis.Redis (the async bridge) writes inline, on
            # this thread, while thread "durable" backs up the next batch.
            overlap = WRITER_THREAD and type(client) is redis.Redis
            # batches transformed, not yet settled, oldest first: a Future (writer thread),
            # or the arguments of a finish still to call here (inline)
            in_flight: deque[Future[None] | tuple[int, int, list[KeyWrite],
                                                  Future[dict[str, Any]]]] = deque()
            # how many may wait or be written at once (memory: these, the batch being
            # transformed and the one read ahead)
            depth = WRITE_QUEUE if overlap else 1

            def settle() -> None:
                prev = in_flight.popleft()
                if isinstance(prev, Future):
                    prev.result()  # written (or its error raised here)
                else:
                    finish(*prev)

            todo = list(batches)

            def read(i: int) -> list[ReadDoc]:
                keys = reader.batch(todo[i], run.batch_size)
                return read_batch(client, self.storage, keys, self.names, whole=self.whole,
                                  ttl=self.ttl)

            # Read ahead (no side effect; its keys are no other batch's): batch b+1 is read on
            # thread "reader", on a pooled connection of its own, while b is transformed, so
            # the server answers b+1's reads while the client works on b.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rvlm-writer") as out, \
                    ThreadPoolExecutor(max_workers=1, thread_name_prefix="rvlm-reader") as ahead:
                following = ahead.submit(read, 0) if overlap and todo else None
                try:
                    for n, b in enumerate(todo, 1):
                        run.check_leases()
                        while failed and in_flight:  # the writer's error, before a transform
                            settle()
                        if following is not None:
                            docs = following.result()
                            following = ahead.submit(read, n) if n < len(todo) else None
                        else:
                            docs = read(n - 1)
                        writes, records = transform_batch(run.host, run.plan, ctx, docs)
                        durable = bg.submit(make_durable, b, records)
                        bg.submit(sync_journal)  # off the critical path (make_durable)
                        in_flight.append(out.submit(finish, n, b, writes, durable) if overlap
                                         else (n, b, writes, durable))
                        while len(in_flight) > depth:
                            settle()
                    while in_flight:
                        settle()
                    bg.submit(lambda: None).result()  # the last journal sync ended
                    if sync_failed:
                        raise sync_failed[0]
                    for what, count in ctx.tallies.items():  # what plugins counted
                        stats[TALLY + what] = stats.get(TALLY + what, 0) + count
                    ctx.tallies.clear()
                finally:
                    failed.append(MigrationFailed("stopped"))  # queued batches write nothing
                    for left in in_flight:
                        # failing: let the batch being written end; one never written: let
                        # its backup's fsync end
                        with contextlib.suppress(BaseException):
                            (left if isinstance(left, Future) else left[3]).result()

    def _parallel(self, workers: int, pending: list[int], backed: set[int],
                  stats: dict[str, int], done_count: int, total: int) -> None:
        """Fork ``workers`` processes; worker w takes batches ``b % N == w``.

        Each worker reports over a pipe of its own (one writer, no lock shared between
        processes): a worker killed mid-message (kill -9, the OOM killer) cannot leave a lock
        held that stops the others, as a shared ``multiprocessing.Queue``'s write lock would.
        A worker is over when its pipe reaches end of file, however it ended.
        """
        import multiprocessing  # here: a run with one worker does not load it
        import multiprocessing.connection

        run = self.run
        mp = multiprocessing.get_context("fork")
        pipes = [mp.Pipe(duplex=False) for _ in range(workers)]  # (reader, writer) each
        run.journal.close()  # each child opens its own journal; ours reopens lazily

        def child(w: int, mine: list[int]) -> None:
            for i, (reader, writer) in enumerate(pipes):
                reader.close()
                if i != w:
                    writer.close()
            send = pipes[w][1].send
            try:
                client = connect(run.url)
                durability.install(client, durability.ReplicaWait(run.replica_wait.timeout_ms))
                mystats = {"docs": 0, "bytes": 0}
                with Journal(run.dir, w) as journal:
                    self._work(w, mine, backed, client, journal, mystats,
                               lambda _n: send(("tick", w, 1)))
                send(("done", w, mystats))
            except BaseException as exc:
                with contextlib.suppress(BaseException):
                    send(("error", w, f"{type(exc).__name__}: {exc}"
                          if not isinstance(exc, RvlmError) else str(exc)))
                raise SystemExit(1) from None

        procs = []
        for w in range(workers):
            mine = [b for b in pending if b % workers == w]
            p = mp.Process(target=child, args=(w, mine), name=f"rvlm-worker-{w}")
            p.start()
            procs.append(p)
        for _, writer in pipes:
            writer.close()  # the workers hold the only write ends: end of file = worker over
        open_readers = [reader for reader, _ in pipes]
        errors: list[str] = []
        ticks = 0
        try:
            while open_readers:
                run.check_leases()
                for reader in multiprocessing.connection.wait(open_readers, timeout=0.2):
                    assert isinstance(reader, multiprocessing.connection.Connection)
                    try:
                        kind, _w, data = reader.recv()
                    except (EOFError, OSError):
                        open_readers.remove(reader)
                        reader.close()
                        continue
                    if kind == "tick":
                        ticks += 1
                        run.progress("transform", done_count + ticks, total)
                    else:
                        self._msg(kind, data, stats, errors)
        finally:
            lost = run.leases is not None and run.leases.error is not None
            for p in procs:
                if p.is_alive() and (errors or lost):
                    p.terminate()
                p.join()
            for reader in open_readers:
                reader.close()
        bad = [p for p in procs if p.exitcode != 0]
        if errors or bad:
            msg = errors[0] if errors else f"worker {bad[0].name} died (exit {bad[0].exitcode})"
            raise MigrationFailed(f"transform failed: {msg}; re-run the same command to resume")

    @staticmethod
    def _msg(kind: str, data: Any, stats: dict[str, int], errors: list[str]) -> None:
        if kind == "done":
            for key, value in data.items():
                stats[key] = stats.get(key, 0) + value
        elif kind == "error":
            errors.append(str(data))

__all__ = ["DropRecreate", "execute_drop_recreate"]
