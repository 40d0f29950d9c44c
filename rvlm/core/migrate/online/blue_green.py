"""Online migrations that rewrite documents: a blue/green keyspace.

This module is the executor of an online plan that copies documents
(:func:`execute_blue_green`, called by
:func:`rvlm.core.migrate.online.executor.execute_online`), and the protocol it shares with
``rvlm finalize`` (:mod:`rvlm.core.migrate.online.finalize`) and rollback
(:func:`rvlm.core.migrate.online.executor.rollback_online`): phases, what each guarantees,
what a resume does, the fault points.

Layout
------
The source index covers keys under the source prefix ``S``; the target index covers new keys
under the target prefix ``T`` (the patch's ``index.prefix`` or ``--target-prefix``; neither
prefix may start with the other, no other index may cover ``T``, and ``T`` must hold no key
when the apply starts). Every source document ``S+id`` is copied, through the plan's
operations (the executor's ``transform_batch``, the same plugins as ``drop_recreate``), to
``T+id`` with the same absolute expiry (PEXPIRETIME -> PEXPIREAT). The source keys and the
source index are never written before the alias moves, so they keep serving; rvlm only reads
them.

Change capture (:mod:`rvlm.core.redis.capture`): keyspace notifications for ``S*``,
subscribed *before* the first source key is read. A changed key is re-read whole and its
target written again through the same operations (or deleted when the source key is gone, or
is no longer a document of the source's type). Which event it was does not matter; only the
key's state at the time it is read. A read that started after an event was received has seen
that event's write (a notification is published while the write runs), so such events are
dropped (:meth:`~rvlm.core.storage.pending.PendingKeys.covered`).

One writer: copy batches and carried-over changes run in one thread, so two writes of one
target key are never reordered.

Apply phases (``phase`` events of ``journal-0.jsonl``)
------------------------------------------------------
::

    checked -> capture_started -> created -> copied -> indexed -> validated
            -> alias_moved -> source_dropped -> forwarding_stopped -> done

* ``checked``: everything before any change: the plan (supported, online, a new index name, an
  alias, a target prefix that differs), the source unchanged since the plan, the target name
  and prefix free, the aliases, the memory the copy needs against ``maxmemory``, the
  notification setting (CONFIG, or a probe where CONFIG is refused, with the exact advice),
  the throttle options, the plugins' ``pre_drop``. Data: where each alias pointed, the
  notification value found.
* ``capture_started``: the notification classes turned on (the run registered in
  ``rvlm:notify``) and the subscription confirmed.
* ``created``: every key of the source (enumerated into ``keys-<epoch>.rvk`` after the
  subscription) was copied while no index covered the copies (a write a vector index covers
  inserts into its graph at once, several times slower than the index's background build),
  then the target index was created (then ``post_create``); it builds in the background.
* ``copied``: journaled right after (the documents copied, the key file's epoch). Every
  target key written outside a key file (a key created in the source during the copy) is
  appended to ``written.keys``: together they are exactly the keys rvlm created, which is
  what rollback deletes and nothing else.
* ``indexed``: the target finished indexing; changes keep being carried over meanwhile.
* ``validated``: with an empty backlog (after a capture barrier), the target's document count
  equals the source's and the plugins' ``validate`` pass; then the *gate*: the checks that must
  pass before the alias moves (a recall check plugs in here). Then the cut-over waits while
  the postpone flag file exists (``rvlm ctl cut-over`` ends the wait); forwarding goes on.
  Then, right before the cut-over, every target document is checked against the transform
  of its source (digests, #12's machinery: :mod:`rvlm.core.migrate.online.verify`); one that
  differs is copied again from its source, one that still differs keeps the alias on the
  source (the run fails, resumable).
* ``alias_moved``: every alias moved in one ``MULTI``/``EXEC`` of ``FT.ALIASUPDATE`` (checked
  just before; the backlog was drained just before too). Queries never fail: each is answered
  by the whole source or the whole target.
* ``source_dropped``: ``FT.DROPINDEX`` of the source index (keys kept), when the plan says
  ``drop_source``. Writes to source keys are still carried over.
* ``forwarding_stopped``: without ``--follow``, once the backlog is drained; with it, when
  ``rvlm finalize``, ``rvlm ctl stop``, SIGINT or SIGTERM asks (the backlog drained first).
  Data: why. The notification setting is put back (the run leaves the registry).
* ``done``: the report says ``downtime_duration_seconds: 0`` and ``forward_lag_ms``.

Finalize phases (``rvlm finalize`` or ``apply --finalize``)
-----------------------------------------------------------
::

    finalizing -> (batch_started N -> batch_done N)* -> finalized

With change capture running again (subscribed before reading), every source key is read whole
(atomically with its PTTL and a digest of its value), carried over to its target if the
target differs, backed up (``data-*.rvb``, fsynced, as replaced records), journaled as
``batch_started``, deleted only if still unchanged (digest), journaled as ``batch_done``. A
key changed in between is not deleted; it is carried over and tried again. Finalize ends when
a scan finds no source key and no write reached one from its start to a capture barrier after
it (``source_empty_at``: when that barrier was asked). So no write to a source key
acknowledged before then is missing from the target, and every deleted source key is in the
backup. Once capture stopped, the source prefixes are scanned again: a document written after
that check fails the run (its write was not carried over), and ``rvlm finalize`` carries it
over.

Rollback
--------
Before ``finalized``: the source index recreated from the plan if it was dropped (its documents
were never written, so this is exact), the aliases pointed back (or deleted if the apply created
them), the target index dropped, the keys rvlm created deleted (the key files and
``written.keys``; a key under ``T`` that rvlm did not write is left and named), the notification
run unregistered, ``rolled_back``. After ``finalized``: the source keys are first restored from
the backup (their remaining TTL shortened by the time since the backup; a key whose TTL ran out
meanwhile is not restored), then the same. Writes made directly to target keys after the
cut-over are lost by a rollback; the report says so.

Resume (the same command again)
-------------------------------
Change capture cannot survive a process: whatever happened while no subscription was active
is unknown. So a resume subscribes again first, then reconciles: every source key (enumerated
again) is read and transformed, compared with its target, and written only where they differ;
target keys rvlm created whose source key is gone are deleted. Before ``alias_moved`` that is
the copy again (cheap where nothing changed: reads, no re-indexing); after it, the same pass
keeps the serving target exact. A lost subscription (``CLIENT KILL``, output buffer limit, a
changed setting) stops the run the same way: the source keeps serving, the same command
resumes.

Fault points (``RVLM_FAULT``, ``os._exit(137)``, see :mod:`rvlm.core.migrate.faults`)
-----------------------------------------------------------------------------------
One after each phase is journaled (``online_after_checks``, ``online_after_capture``,
``online_after_create``, ``online_after_copy``, ``online_after_indexed``,
``online_after_validate``, ``online_after_alias``, ``online_after_drop``,
``online_after_forwarding``), plus ``online_copy:N`` (copy batch N written),
``online_forward`` (a batch of changes carried over), ``finalize_backup:N`` (finalize batch N
backed up, not journaled), ``finalize_delete:N`` (its keys deleted, not journaled as done),
``finalize_after_batches``.

Cluster
-------
Notifications are per node. On a Redis Cluster (:mod:`rvlm.core.migrate.online.capture`):
the setting is turned on on every node, replicas included; one
:class:`~rvlm.core.redis.capture.Subscriber` per primary feeds the one backlog, every one
confirmed before the first key is read; a change of the set of primaries (a failover, a node
added or removed) loses the capture like a lost connection does: the run stops with the source
serving and unmodified, and the same command resumes. A slot migration is refused before the
start, at a resume and again just before the cut-over (an index does not move with its slot).
The copy's reads and writes go through the cluster client (one pipeline per node, ``WAIT`` for
each node's replicas: :mod:`rvlm.core.redis.durability`). Without a search coordinator, the
source and target prefixes, both index names and the aliases share one hash tag
(``{t1}doc:`` -> ``{t1}new:``); the planner refuses anything else
(:func:`~rvlm.core.migrate.cluster_checks.layout_problems`), and so does the check here for a
plan built by hand.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import redis

from rvlm.core.errors import MigrationFailed, RvlmError
from rvlm.core.migrate.aliases import (
    alias_index,
    check_aliases,
    move_aliases,
    point_aliases,
)
from rvlm.core.migrate.backup_dir import PLAN_NAME
from rvlm.core.migrate.cluster_checks import layout_problems
from rvlm.core.migrate.faults import fault
from rvlm.core.migrate.online.capture import (
    CaptureSession,
    copied_source_keys,
    key_files,
    make_throttler,
)
from rvlm.core.migrate.online.checks import (
    notify_status,
    online_problems,
    target_prefix_problems,
)
from rvlm.core.migrate.online.control import ControlChannel
from rvlm.core.migrate.online.copier import OnlineCopy, Stopped
from rvlm.core.migrate.online.finalize import check_late_writes, finalize_in_run
from rvlm.core.migrate.online.footprint import copy_footprint
from rvlm.core.migrate.online.verify import keys_to_check, verify_targets
from rvlm.core.migrate.report import MigrationReport, ValidationResult
from rvlm.core.migrate.run import Run
from rvlm.core.migrate.validate import validate_migration
from rvlm.core.plugins.checks import CheckResult
from rvlm.core.redis import routing, wire
from rvlm.core.redis.capture import CaptureLost
from rvlm.core.redis.connection import (
    index_exists,
    other_indexes,
    read_index,
    wait_indexed,
)
from rvlm.core.redis.docio.keys import enumerate_keys, escape_glob
from rvlm.core.redis.lock import LockLost
from rvlm.core.redis.resp import to_list
from rvlm.core.schema.ftinfo import parse_ft_info
from rvlm.core.storage.journal import phase_data

#: Seconds between two FT.INFO reads while the target index builds: 0.25 s near the end,
#: up to 2 s while the end is far (each FT.INFO during a build holds Redis's main thread for
#: up to 17-38 ms, and its round trip waited up to 143 ms: every change queues behind it).
INDEX_POLL, INDEX_POLL_FAR = 0.25, 2.0
#: Tries of the gate with changes carried over meanwhile, before one with forwarding held.
GATE_TRIES = 3


def _counts(client: redis.Redis, plan: Any) -> tuple[int, int, int]:
    """(source documents, source indexing failures, target documents + failures). With the
    source index there, both indexes are read in one transaction (the same instant); after it
    was dropped, the source's documents are counted with SCAN."""
    if alias_index(client, plan.source_index) != plan.source_index:
        target = read_index(client, plan.target_index).stats
        return (_scan_count(client, plan), 0, target.num_docs + target.indexing_failures)
    if routing.is_cluster(client):
        # one node holds both indexes (one hash tag): one MULTI there, routed by the name
        replies = wire.execute(client, [(b"MULTI",), (b"FT.INFO", plan.source_index),
                                        (b"FT.INFO", plan.target_index), (b"EXEC",)])
        if isinstance(replies[-1], Exception):
            raise MigrationFailed(f"reading both indexes failed: {replies[-1]}")
        src, dst = to_list(replies[-1])
    else:
        pipe = client.pipeline(transaction=True)
        pipe.execute_command("FT.INFO", plan.source_index)
        pipe.execute_command("FT.INFO", plan.target_index)
        src, dst = pipe.execute()
    s, t = parse_ft_info(src).stats, parse_ft_info(dst).stats
    return (s.num_docs + s.indexing_failures, s.indexing_failures,
            t.num_docs + t.indexing_failures)


def _scan_count(client: redis.Redis, plan: Any) -> int:
    type_name = "ReJSON-RL" if plan.source_schema.storage_type == "json" else "hash"
    n = 0
    for _name, node in routing.primaries(client):
        for prefix in plan.source_schema.index.prefix:
            cursor = 0
            while True:
                cursor, keys = to_list(wire.send(node, [(
                    b"SCAN", cursor, b"MATCH", escape_glob(prefix) + b"*", b"COUNT", 1000,
                    b"TYPE", type_name)])[0])
                n += len(to_list(keys))
                cursor = int(cursor)
                if cursor == 0:
                    break
    return n


class _BlueGreen:
    """One apply (or resume) of an online plan that copies documents."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.plan = run.plan
        self.client = run.client
        self.options = run.online
        self.report = run.report
        self.capture: CaptureSession | None = None
        self.control: ControlChannel | None = None
        self.engine: OnlineCopy | None = None
        self.throttler: Any = None
        self.why = ""

    # -- checks ----------------------------------------------------------------------------
    def check(self) -> None:
        """Everything before the first change (see the module docstring)."""
        run, plan, client = self.run, self.plan, self.client
        with run.timer.step("checks"):
            if run.caps.cluster:
                problems = layout_problems(run.caps.search_layout, plan.source_schema,
                                           plan.target_schema, plan.aliases)
                if problems:
                    raise RvlmError("the plan cannot run on this cluster: "
                                    + "; ".join(problems))
            if plan.supported:
                problems = online_problems(plan)
                if problems:
                    raise RvlmError("the plan cannot run online: " + "; ".join(problems))
            info = run.check_source()
            before = check_aliases(client, plan)
            others = other_indexes(client, (plan.source_index, plan.target_index))
            problems = target_prefix_problems(client, plan, others)
            if problems:
                raise RvlmError("the plan cannot run online: " + "; ".join(problems))
            sample = [k.encode("utf-8", "surrogateescape") for k in plan.key_sample]
            fp = copy_footprint(client, plan, sample)
            if fp.problem():
                raise RvlmError(str(fp.problem()))
            status = notify_status(client, plan.source_schema.storage_type)
            if not status.ok:
                raise RvlmError(status.sentence())
            self.throttler = make_throttler(run, self.options)
            refused = run.host.pre_drop(plan, run.ctx)
            if refused:
                raise RvlmError("a plugin refused the migration: " + "; ".join(refused))
        run.ask_source()  # the quality gate: the source serves until the alias moves
        run.phase("checked", aliases=before,
                  source_docs=info.stats.num_docs + info.stats.indexing_failures,
                  source_failures=info.stats.indexing_failures, notify=status.current,
                  extra_memory=fp.extra_bytes)
        fault("online_after_checks")

    # -- the steps -------------------------------------------------------------------------
    def enumerate(self) -> Path:
        """Write the source's keys to a new key file (after the subscription started)."""
        run, plan, client = self.run, self.plan, self.client
        path = run.dir / f"keys-{len(key_files(run.dir)) + 1}.rvk"
        if index_exists(client, plan.source_index) \
                and alias_index(client, plan.source_index) == plan.source_index:
            stats = read_index(client, plan.source_index).stats
            en = enumerate_keys(client, plan.source_schema, stats.num_docs,
                                stats.indexing_failures, path)
        else:
            en = enumerate_keys(client, plan.source_schema, 0, 0, path,
                                scan="the source index was dropped")
        self.report.key_enumeration = en.method
        self.report.backup_paths.append(str(path))
        return path

    def copy(self, reconcile: bool) -> None:
        """Copy every source key (compare first when ``reconcile``), then, on a reconcile,
        delete the copies whose source is gone."""
        engine = self.engine
        assert engine is not None
        engine.compare = reconcile
        keyfile = self.enumerate()
        with self.run.timer.step("copy"):
            engine.copy(keyfile)
            if reconcile:
                engine.sweep(copied_source_keys(self.run.dir, engine.batch_size))

    def wait_indexed(self) -> None:
        """Carry changes over until the target finished indexing. FT.INFO is read in a
        thread of its own (reads only; at intervals from ``next_poll``), so this thread
        never waits for it: a change is carried over as soon as it arrives. The wait ends
        on a poll that says the target is fully indexed; a timeout names it and how far it
        got."""
        engine, plan = self.engine, self.plan
        assert engine is not None
        engine.phase = "catch-up"
        seen, shown = [0], [-1]  # the poll thread's last percentage; the last one reported
        stop = threading.Event()

        def report() -> None:  # progress callbacks stay on this thread
            if seen[0] != shown[0]:
                shown[0] = seen[0]
                self.run.progress("indexing", seen[0], 100)

        def poll() -> None:
            wait_indexed(self.client, plan.target_index, self.run.index_timeout,
                         progress=lambda pct: seen.__setitem__(0, pct),
                         hint="re-run the same command to keep waiting", first=INDEX_POLL,
                         low=INDEX_POLL, high=INDEX_POLL_FAR, stop=stop)

        with self.run.timer.step("indexing"):
            engine.forward_during(poll, between=report, stop=stop)
            report()

    def validate(self) -> ValidationResult:
        """With the backlog drained, the target holds as many documents as the source (read
        in one transaction; a difference that the changes still in flight explain is
        accepted under a writing load), and every validation check passes: the gate before
        the alias moves (plugins' ``validate`` included)."""
        engine, plan, client, run = self.engine, self.plan, self.client, self.run
        assert engine is not None
        with run.timer.step("validation"):
            tries = 0
            for attempt in range(GATE_TRIES + 1):
                src, failures, dst, in_flight = self._settled_counts()
                # the gate before the alias moves: the same checks as rvlm validate, the
                # plugins' and the quality gate's (under its floor the alias stays on the
                # source); they only read, so changes are carried over meanwhile (its round
                # trips and queries take up to a second on a busy server). A forwarded change
                # can move the target's count under its feet: a failed try is made again,
                # the last one with forwarding held, as a check alone would run
                def gate(src: int = src, dst: int = dst, failures: int = failures
                         ) -> ValidationResult:
                    return validate_migration(
                        client, plan, expected_docs=dst if src != dst else src,
                        source_failures=failures, host=run.host, context=run.ctx,
                        live_source=True, gate=run.gate)
                applied = engine.applied
                result = engine.forward_during(gate) if attempt < GATE_TRIES else gate()
                tries = attempt + 1
                if result.passed or engine.applied == applied:
                    break
            # how many tries the gate took (more than 1: changes carried over meanwhile made
            # a try fail; the last of GATE_TRIES + 1 held forwarding)
            self.report.online["gate_tries"] = tries
            if src != dst:
                result.add(CheckResult(
                    name="doc_count_in_flight", passed=abs(src - dst) <= in_flight,
                    details=f"source {src}, target {dst}, {in_flight} changes being carried "
                            "over"))
        self.report.documents = src
        return result

    def _settled_counts(self) -> tuple[int, int, int, int]:
        """(source documents, source failures, target documents, changes in flight) read
        with the backlog drained, once they agree or the changes in flight explain the
        difference (or after 40 tries)."""
        engine, plan, client = self.engine, self.plan, self.client
        assert engine is not None
        src = failures = dst = in_flight = 0
        for _ in range(40):
            engine.drain()
            src, failures, dst = _counts(client, plan)
            if src == dst:
                return src, failures, dst, 0
            for sub in engine.subscribers:
                sub.barrier()
            in_flight = len(engine.pending)
            if abs(src - dst) <= in_flight:
                break
            engine.forward_during(lambda: time.sleep(0.05))
        return src, failures, dst, in_flight

    def postpone(self) -> None:
        """Keep the target caught up while the postpone flag file exists."""
        engine, flag = self.engine, self.options.postpone_flag_file
        assert engine is not None
        if flag is None or not Path(flag).exists() or engine.cut_over_now:
            return
        engine.phase = "postponed"
        with self.run.timer.step("postponed"):
            while Path(flag).exists() and not engine.cut_over_now:
                engine.postponed = f"delete {flag} or run 'rvlm ctl --backup-dir " \
                                   f"{self.run.dir} cut-over'"
                engine.tick()
                if engine.stop_reason():
                    raise Stopped(str(engine.stop_reason()),
                                  f"stopped by {engine.stop_reason()} before the cut-over")
                if not engine.forward():
                    engine.idle(0.05)
        engine.postponed = None

    def verify(self) -> CheckResult:
        """Every target document against the transform of its source, right before the
        cut-over (:mod:`rvlm.core.migrate.online.verify`): a differing one is copied again."""
        engine = self.engine
        assert engine is not None
        engine.phase = "verify"
        with self.run.timer.step("verify"):
            engine.drain()
            # in steps sized by time: changes are carried over between them, so a change
            # never waits behind more than one step of the pass
            got = verify_targets(engine, *keys_to_check(self.run.dir, engine.batch_size))
        self.report.online["verified"] = {
            "checked": got.checked, "ok": got.ok, "copied_again": got.recopied,
            "in_flight": got.in_flight, "failed": got.failed, "unchecked": got.unchecked,
            "seconds": round(got.seconds, 3)}
        if got.recopied:
            self.report.warnings.append(
                f"{got.recopied} target documents differed from the transform of their source "
                "before the cut-over and were copied again (e.g. "
                + ", ".join(repr(k.decode("utf-8", "replace")) for k in got.recopied_keys)
                + "): something else wrote the target prefix, or the server lost writes")
        return got.check()

    def cut_over(self) -> None:
        """Drain, check the aliases, move them all in one step."""
        engine, plan, client = self.engine, self.plan, self.client
        assert engine is not None
        engine.phase = "cut-over"
        with self.run.timer.step("alias"):
            engine.drain()
            if self.capture is not None:  # a cluster: the primaries are those subscribed
                self.capture.check_topology()
            try:
                self.run.check_cluster()  # no slot migration began during the copy
            except MigrationFailed:
                raise
            except RvlmError as exc:  # the run stops here, the source serving
                raise MigrationFailed(str(exc)) from None
            check_aliases(client, plan, allowed=(plan.target_index,))
            move_aliases(client, plan.aliases, plan.target_index)
            engine.serving = True
        started = float(phase_data(self.run.dir, "checked").get("ts", time.time()))
        self.run.phase("alias_moved", backlog=len(engine.pending))
        self.report.online["cut_over_after_seconds"] = round(time.time() - started, 3)
        fault("online_after_alias")

    def forward(self) -> str:
        """After the cut-over: forward (``follow``) until asked to stop, then drain; returns
        why forwarding stopped."""
        engine = self.engine
        assert engine is not None
        engine.phase = "forwarding"
        with self.run.timer.step("forwarding"):
            if self.options.follow:
                engine.follow(until=lambda: engine.stop_reason() is not None)
                why = str(engine.stop_reason())
            else:
                why = "the backlog was drained (no --follow)"
            engine.drain()
        return why

    # -- the run ---------------------------------------------------------------------------
    def execute(self) -> MigrationReport:
        run, plan, client, report = self.run, self.plan, self.client, self.report
        state = run.load_state()
        report.backup_paths = [str(run.dir / PLAN_NAME)]
        report.downtime_duration_seconds = 0.0
        report.online["target_prefix"] = plan.target_schema.index.prefix[0]
        if state.reached("finalized"):
            report.warnings.append("already finalized: the source keys were backed up and "
                                   "deleted; nothing to do")
            return report.finish(True)
        if state.reached("finalizing"):
            raise RvlmError(f"finalize already started in {run.dir}: finish it with 'rvlm "
                            f"finalize --backup-dir {run.dir}'")
        if state.phase is None:
            self.check()
        else:
            run.check_plugins()
            run.check_cluster()  # no slot migration in progress
            self.throttler = make_throttler(run, self.options)
            if not state.reached("alias_moved"):
                run.ask_source()  # what a first run without the gate's options did not store
        report.documents = int(phase_data(run.dir, "checked").get("source_docs", 0))
        run.mutated = True
        self.capture = CaptureSession(run, self.options)
        self.control = ControlChannel(run.dir)
        ended = "failed"
        try:
            self.capture.start()
            if self.capture.cluster is not None:
                report.online["capture_nodes"] = sorted(s.node for s in self.capture.subscribers)
            if not state.reached("capture_started"):
                run.phase("capture_started", notify=self.capture.found)
                fault("online_after_capture")
            self.engine = engine = self.capture.engine(self.control, self.throttler)
            engine.on_tick = run.check_leases
            engine.progress = lambda done, total: run.progress("transform", done, total)
            engine.tick(force=True)
            if not state.reached("alias_moved"):
                resumed = state.reached("capture_started") or len(key_files(run.dir)) > 0
                # the copies are written while no index covers them, then the target index
                # is created and builds in the background (changes are carried over
                # meanwhile): one graph insert per write would be several times slower
                self.copy(reconcile=resumed)
                run.create_target("online_after_create")
                run.phase("copied", documents=engine.copied, epoch=len(key_files(run.dir)))
                fault("online_after_copy")
                self.wait_indexed()
                run.phase("indexed")
                fault("online_after_indexed")
                result = self.validate()
                report.validation = result
                if not result.passed:
                    run.journal.append("error", message="validation failed: "
                                       + "; ".join(result.errors),
                                       gate_tries=report.online["gate_tries"])
                    report.manual_actions.append(
                        f"the aliases still point at {plan.source_index!r}, so queries were "
                        f"not affected; inspect {plan.target_index!r}, then re-run the same "
                        f"command to validate again, or 'rvlm rollback --backup-dir {run.dir}'")
                    report.manual_actions.append(
                        "notify-keyspace-events keeps the classes this run turned on until it "
                        "is resumed or rolled back")
                    return report.finish(False)
                run.phase("validated", docs=report.documents,
                          gate_tries=report.online["gate_tries"])
                fault("online_after_validate")
                self.postpone()
                checked = self.verify()
                result.add(checked)
                if not checked.passed:
                    run.journal.append("error", message="verification failed: "
                                       + checked.details)
                    report.manual_actions.append(
                        f"the aliases still point at {plan.source_index!r}, so queries were "
                        "not affected; find what writes the target prefix, then re-run the "
                        f"same command, or 'rvlm rollback --backup-dir {run.dir}'")
                    report.manual_actions.append(
                        "notify-keyspace-events keeps the classes this run turned on until it "
                        "is resumed or rolled back")
                    return report.finish(False)
                self.cut_over()
            else:
                engine.serving = True
                self.copy(reconcile=True)
                with run.timer.step("alias"):  # idempotent: a resume makes sure they moved
                    point_aliases(client, plan.aliases, plan.target_index)
                report.validation = self.validate()
            if plan.drop_source and not state.reached("source_dropped"):
                with run.timer.step("drop_source"):
                    if alias_index(client, plan.source_index) == plan.source_index:
                        client.execute_command("FT.DROPINDEX", plan.source_index)
                run.phase("source_dropped")
                fault("online_after_drop")
            self.why = self.forward()
            run.phase("forwarding_stopped", why=self.why)
            fault("online_after_forwarding")
            run.phase("done")
            self._summarise()
            finalized = False
            if self.options.finalize or engine.finalize_requested:
                fin = finalize_in_run(run, engine)
                report.online["finalize"] = fin
                if not fin["finished"]:
                    return report.finish(False)
                finalized = True
            elif self.options.follow:
                report.manual_actions.append(
                    f"forwarding stopped ({self.why}): writes to source keys from now on are "
                    "not carried over; when no client writes them any more: 'rvlm finalize "
                    f"--backup-dir {run.dir}' (backs them up, then deletes them)")
            else:
                report.warnings.append(
                    "forwarding stopped once the backlog was drained: writes to source keys "
                    "from now on are not carried over to the target (apply --follow keeps "
                    "carrying them over until 'rvlm finalize')")
                report.manual_actions.append(
                    f"when no client writes the source keys any more: 'rvlm finalize "
                    f"--backup-dir {run.dir}' (backs them up, then deletes them)")
            self.capture.stop()
            self.capture.leave()
            passed = report.validation.passed and (
                not finalized or check_late_writes(client, plan, run.dir, report))
            ended = "succeeded" if passed else "failed"
            return report.finish(passed)
        except (CaptureLost, Stopped, MigrationFailed, LockLost, redis.RedisError) as exc:
            return self._stopped(exc)
        finally:
            self._summarise()
            if self.capture is not None:
                self.capture.stop()
            if self.control is not None:
                if self.engine is not None:
                    self.control.publish(self.engine.status())
                self.control.close(ended)
            if self.throttler is not None:
                self.throttler.close()

    def _summarise(self) -> None:
        engine, report = self.engine, self.report
        if engine is None:
            return
        report.forward_lag_ms = engine.lag.to_dict()
        report.documents_rewritten = engine.copied
        report.bytes_rewritten = engine.bytes_written
        report.online.update({
            "copied": engine.copied, "changes_carried_over": engine.applied,
            "unchanged_skipped": engine.skipped_same, "target_keys_deleted": engine.deleted,
            "backlog_spilled_to_disk": engine.pending.spilled_total,
        })
        if self.why:
            report.online["forwarding_stopped"] = self.why

    def _stopped(self, exc: BaseException) -> MigrationReport:
        run, plan, report = self.run, self.plan, self.report
        message = str(exc) if isinstance(exc, RvlmError) else f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):  # the report still says it
            run.journal.append("error", message=message)
        report.error = message
        serving = run.journal.phase() if run.journal else None
        moved = serving in ("alias_moved", "source_dropped", "forwarding_stopped", "done")
        if moved:
            report.manual_actions.append(
                f"the aliases point at {plan.target_index!r}, which keeps serving; writes to "
                "source keys are not carried over until you re-run the same command (it "
                "checks every document again first)")
        else:
            report.manual_actions.append(
                f"the source {plan.source_index!r} keeps serving and was not modified; re-run "
                "the same command to resume (it checks every copy again), or 'rvlm rollback "
                f"--backup-dir {run.dir}' to remove the copies")
        report.manual_actions.append(
            "notify-keyspace-events keeps the classes this run turned on until it is resumed "
            "or rolled back")
        return report.finish(False)


def execute_blue_green(run: Run) -> MigrationReport:
    """Run (or resume) an online apply that copies documents (see the module docstring).
    Raises :class:`RvlmError` before the first change; afterwards returns the report."""
    return _BlueGreen(run).execute()


__all__ = ["execute_blue_green"]
