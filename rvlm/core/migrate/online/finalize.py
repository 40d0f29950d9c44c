"""Finalize an online migration: back up the source keys, then delete them, losing no write.

Runs with change capture on the source prefixes (subscribed before the first key is read) and
the online copy engine (:class:`~rvlm.core.migrate.online.copier.OnlineCopy`) in compare mode.
In passes until a scan finds no source key *and* no write reached a source key from the scan's
start to a capture barrier after it (while clients still write: at least ``max_passes``, and for
``settle`` seconds after the first pass; then a last scan counts what is left):

1. SCAN the source prefixes for documents of the source's type into a key file;
2. per batch: read each key *atomically* with its value, PTTL, expiry and a digest of its
   serialized value (one Lua call per key); carry it over to its target if the target differs
   (so a write made after forwarding stopped is not lost); back up the originals (replaced
   records: every field or the JSON text, and the TTL), fsynced; journal ``batch_started``;
   delete each key *only if its digest is unchanged* (Lua); journal ``batch_done``;
3. behind a capture barrier, carry over every other change: the delete script's own event is
   forgotten exactly (it publishes the key on the run's marker channel right after its
   ``DEL``, atomically, and the subscriber forgets the key's entry when the marker arrives:
   :class:`~rvlm.core.redis.capture.Subscriber`), so a client that recreates the key, or
   recreates and deletes it again, right after finalize deleted it has its change carried
   over (the target then holds the new value, or is deleted), while finalize's own delete
   leaves the target alone. Forgetting covers the backlog's spill too
   (:meth:`~rvlm.core.storage.pending.PendingKeys.discard`): an event of a deleted key that
   waits on disk, finalize's own or an older client's (whose value this batch carried over
   before its delete), would otherwise read the source as gone and delete the target. A key
   already gone when the batch read it keeps its events: a client's delete reaches its
   target. (On a cluster, where a ``PUBLISH`` goes to every
   node, the events of a deleted key that is gone at a check after the barrier are
   forgotten instead: a recreate-and-delete inside that window leaves the copy.)

A key written between its read and its delete is not deleted (its digest changed): the next
pass reads, carries over and deletes it. Keys still being written after the last pass are left
in place (carried over) and counted: some client still writes the source prefix.

The quiet check dates the guarantee: :attr:`FinalizeResult.source_empty_at` is when its barrier
was asked, and every write acknowledged before it is in the target (its source key deleted).
A write after it (a client that still writes the source prefix once finalize is done) is not
carried over: :func:`late_writes`, run once capture has stopped, finds its key, the command
says so and fails, and running finalize again (even after ``finalized``) carries it over.

Between a finalize that failed (keys still being written) or ended before a late write and
the next one, no change capture runs: a client's delete of a source key reaches no target,
and the next finalize's scan cannot see a key that is gone. So :func:`finalize_migration`,
once capture started and before the passes, sweeps: on a run not yet ``finalizing``, every
copied source key that is gone has its target deleted; after that, all but those finalize
itself backed up and deleted (:func:`~rvlm.core.migrate.online.sweep.sweep_after_finalize`:
the finalize backup, less the keys that stood once a finalize had made its last delete, which
each finalize records and the next forgets before deleting anything). What that misses is
said there: a key finalize deleted that a client recreated and deleted again, both after
that finalize's last scan, and a key a killed finalize backed up but did not delete, deleted
by a client before the next finalize, keep their pre-finalize targets.

Batch numbers continue across passes and resumes (after the highest started), so each backup
frame holds the originals of one attempt; a key backed up twice is restored from either (the
same value, or the later one for a key that changed and was carried over).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import redis

from rvlm.core.errors import MigrationFailed, RvlmError
from rvlm.core.migrate.aliases import alias_index
from rvlm.core.migrate.backup_dir import load_backup_plan
from rvlm.core.migrate.faults import Fault, fault
from rvlm.core.migrate.online.capture import CaptureSession, copied_source_keys
from rvlm.core.migrate.online.control import ControlChannel, running, send
from rvlm.core.migrate.online.copier import OnlineCopy
from rvlm.core.migrate.online.options import FINALIZE_SETTLE, OnlineOptions
from rvlm.core.migrate.online.sweep import LeftKeys, sweep_after_finalize
from rvlm.core.migrate.plan import Plan
from rvlm.core.migrate.report import MigrationReport, Timings
from rvlm.core.migrate.run import Run
from rvlm.core.plugins.documents import MISSING
from rvlm.core.plugins.host import host_with
from rvlm.core.redis import routing, wire
from rvlm.core.redis.connection import connect
from rvlm.core.redis.copyio import Sources, encode_json
from rvlm.core.redis.docio.keys import escape_glob
from rvlm.core.redis.docio.read import JSON_ROOT, ReadDoc
from rvlm.core.redis.lock import hold_locks, lock_owner
from rvlm.core.redis.resp import to_int, to_list, to_map, to_str
from rvlm.core.storage.backup.manifest import read_manifest
from rvlm.core.storage.backup.records import RawRecord
from rvlm.core.storage.backup.writer import BackupWriter
from rvlm.core.storage.journal import Journal, RunState, phase_data
from rvlm.core.storage.keyfile import KeyFileReader, KeyFileWriter

#: KEYS[1]; ARGV: the storage type, then JSON paths. Returns {type} for a key that is not a
#: document of that type, else {type, value, pttl, pexpiretime, sha1 of DUMP}.
_READ = """
local t = redis.call('TYPE', KEYS[1])['ok']
local v
if ARGV[1] == 'json' and t == 'ReJSON-RL' then
  v = redis.call('JSON.GET', KEYS[1], '$', unpack(ARGV, 2))
elseif ARGV[1] == 'hash' and t == 'hash' then
  v = redis.call('HGETALL', KEYS[1])
else
  return {t}
end
return {t, v, redis.call('PTTL', KEYS[1]), redis.call('PEXPIRETIME', KEYS[1]),
        redis.sha1hex(redis.call('DUMP', KEYS[1]))}
"""
#: KEYS[1], ARGV[1] a digest: delete the key only if its serialized value still has it; then
#: publish its name on the marker channel ARGV[2] when given (see :class:`Finalizer`).
_DELETE = """
local d = redis.call('DUMP', KEYS[1])
if d and redis.sha1hex(d) == ARGV[1] then
  local n = redis.call('DEL', KEYS[1])
  if ARGV[2] then redis.call('PUBLISH', ARGV[2], KEYS[1]) end
  return n
end
return 0
"""
_SCAN_COUNT = 1000


@attrs.define
class FinalizeResult:
    """What a finalize did: keys backed up and deleted, keys carried over on the way, keys
    left because they kept changing, passes run, and when the source was last found empty
    and quiet (None: never, because writes to it kept arriving)."""

    deleted: int = 0
    backed_up: int = 0
    carried_over: int = 0
    left: int = 0
    passes: int = 0
    batches: int = 0
    #: Unix time of the last check that found the source prefixes empty with no write to
    #: them since (None: not found so): every write acknowledged before it was carried over
    source_empty_at: float | None = None


def source_documents(client: Any, prefixes: Sequence[str], storage: str,
                     tick: Callable[[], None] | None = None) -> Iterator[list[bytes]]:
    """The keys of the documents of type ``storage`` under ``prefixes``, in SCAN pages, from
    every primary of a cluster; ``tick`` is called before each page."""
    type_name = b"ReJSON-RL" if storage == "json" else b"hash"
    for _name, node in routing.primaries(client):
        for prefix in prefixes:
            cursor = 0
            match = escape_glob(prefix) + b"*"
            while True:
                if tick is not None:
                    tick()
                cursor, keys = to_list(wire.send(node, [(
                    b"SCAN", cursor, b"MATCH", match, b"COUNT", _SCAN_COUNT, b"TYPE",
                    type_name)])[0])
                cursor = to_int(cursor)
                yield [bytes(k) for k in to_list(keys)]
                if cursor == 0:
                    break


def late_writes(client: Any, plan: Plan, record: Path | None = None) -> int:
    """After finalize stopped its change capture: how many documents stand under the source
    prefixes. Each was written after finalize's last check (some client still writes the
    source prefix), and its write was not carried over. With ``record`` (the backup dir; only
    while this process holds the run's locks) their keys are added to its
    :class:`~rvlm.core.migrate.online.sweep.LeftKeys`."""
    pages = source_documents(client, plan.source_schema.index.prefix,
                             plan.source_schema.storage_type)
    if record is None:
        return sum(len(keys) for keys in pages)
    return LeftKeys(record).add(keys for keys in pages if keys)


class _Scripts:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.sha: dict[str, str] = {}

    def call(self, script: str, keys_args: Sequence[tuple[bytes, Sequence[Any]]]) -> list[Any]:
        """One EVALSHA per (key, args), pipelined; loads the script when the server lacks it."""
        sha = self.sha.get(script)
        if sha is None:
            sha = self.sha[script] = to_str(self.client.script_load(script))
        commands = [(b"EVALSHA", sha, 1, k, *args) for k, args in keys_args]
        replies = wire.execute(self.client, commands)
        if any(isinstance(r, Exception) and "NOSCRIPT" in str(r) for r in replies):
            self.client.script_load(script)
            replies = wire.execute(self.client, commands)
        bad = next((r for r in replies if isinstance(r, Exception)), None)
        if bad is not None:
            raise MigrationFailed(f"finalize: a script failed: {bad}")
        return replies


class Finalizer:
    """See the module docstring. ``engine`` carries changes over (its subscribers must be
    started); ``journal`` is the run's; ``directory`` the backup dir."""

    def __init__(self, engine: OnlineCopy, journal: Journal, directory: Path, fingerprint: str,
                 *, prefixes: Sequence[str], fault: Fault,
                 max_passes: int = 3, settle: float = FINALIZE_SETTLE,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.engine = engine
        self.client = engine.client
        self.mirror = engine.mirror
        self.storage = engine.mirror.source_storage
        self.journal = journal
        self.dir = Path(directory)
        self.fingerprint = fingerprint
        self.prefixes = list(prefixes)
        self.fault = fault
        self.max_passes = max_passes
        self.settle = settle
        self.progress = progress
        self.scripts = _Scripts(self.client)
        self.result = FinalizeResult()

    def _scan(self, path: Path) -> int:
        with KeyFileWriter(path) as writer:
            for keys in source_documents(self.client, self.prefixes, self.storage,
                                         tick=self.engine.tick):
                writer.add_many(keys)
            return writer.close()

    def _events(self) -> int:
        """Keyspace events of source keys received so far (every subscriber)."""
        return sum(sub.received for sub in self.engine.subscribers)

    def _quiet(self, seen: int) -> bool:
        """True when no event of a source key arrived since :meth:`_events` was ``seen``, as
        of a capture barrier; then :attr:`FinalizeResult.source_empty_at` is when the
        barrier was asked (every write acknowledged before it had its event delivered)."""
        began = time.time()
        for sub in self.engine.subscribers:
            sub.barrier()
        if self._events() != seen:
            return False
        self.result.source_empty_at = began
        return True

    def _read(self, keys: Sequence[bytes]) -> tuple[Sources, dict[bytes, bytes]]:
        names = [p.encode() for p in self.mirror.paths if p != JSON_ROOT.decode()]
        replies = self.scripts.call(_READ, [(k, [self.storage.encode(), *names]) for k in keys])
        out = Sources(docs=[], expire_at={}, absent=[])
        digests: dict[bytes, bytes] = {}
        root = JSON_ROOT.decode()
        for k, r in zip(keys, replies, strict=True):
            r = to_list(r)
            if len(r) < 5:
                out.absent.append(k)
                continue
            _t, value, pttl, at, digest = r
            values: dict[str, Any]
            raw_json: bytes | None = None
            if self.storage == "json":
                parsed = json.loads(value)
                matches = parsed.get("$") if isinstance(parsed, dict) else parsed
                if not matches:
                    out.absent.append(k)
                    continue
                values = {root: matches[0]}
                for n in self.mirror.paths:
                    if n != root:
                        got = parsed.get(n) if isinstance(parsed, dict) else None
                        values[n] = got[0] if got else MISSING
                raw_json = encode_json(matches[0], k)
            else:
                values = to_map(value)
            ttl = to_int(pttl, -1)
            out.docs.append(ReadDoc(key=k, values=values, raw_json=raw_json,
                                    pttl=ttl if ttl >= 0 else -1))
            out.expire_at[k] = to_int(at, -1)
            digests[k] = bytes(digest)
        return out, digests

    def _marker(self) -> list[bytes]:
        """``[channel]`` when the delete script can mark its own events (one subscriber, on
        one server), else ``[]``."""
        subs = self.engine.subscribers
        if len(subs) == 1 and subs[0].marker is not None and not subs[0].node:
            return [subs[0].marker]
        return []

    def _records(self, sources: Sources) -> list[RawRecord]:
        """Replaced records of whole documents; the TTL field holds the *absolute* expiry
        in ms (``ttl: absolute`` in the ``finalizing`` phase), so a rollback restores the
        same expiry however late it runs."""
        records: list[RawRecord] = []
        for d in sources.docs:
            if self.storage == "json":
                fields: tuple[tuple[bytes, bytes | None], ...] = ((JSON_ROOT, d.raw_json),)
            else:
                fields = tuple((n.encode("utf-8", "surrogateescape"), bytes(v))
                               for n, v in d.values.items())
            at = sources.expire_at.get(d.key, -1)
            records.append((d.key, None, fields, at if at >= 0 else None, True))
        return records

    def run(self) -> FinalizeResult:
        """Every pass (see the module docstring); returns what was done."""
        state = RunState.load(self.dir)
        next_batch = max(state.started, default=-1) + 1
        engine = self.engine
        engine.compare = True
        engine.serving = True
        engine.phase = "finalize"
        with BackupWriter(self.dir, 0, self.fingerprint) as writer:
            next_batch = max(next_batch, max(writer.committed_batches(), default=-1) + 1)
            # a pass per scan, until a scan finds no document and no write reached a source
            # key from the scan's start to a capture barrier after it (so none was made
            # under the cursor either); at least max_passes, and for settle seconds after the
            # first, while clients still write: then the last scan only counts what is left
            settle_until = math.inf
            n = 0
            while True:
                n += 1
                seen = self._events()
                path = self.dir / f"finalize-keys-{n}.rvk"
                found = self._scan(path)
                if not found and self._quiet(seen):
                    path.unlink(missing_ok=True)
                    self.result.left = 0
                    break
                self.result.left = found
                if n > self.max_passes and time.monotonic() > settle_until:
                    # the keys left in place: no finalize deletes one of them before the
                    # next forgets this list, so one gone by then was deleted by a client
                    with KeyFileReader(path, verify=False) as reader:
                        LeftKeys(self.dir).add(reader.iter_batches(_SCAN_COUNT))
                    path.unlink(missing_ok=True)
                    break
                if not found:  # writes, but none left a key: wait for the next change
                    engine.idle(0.05)
                    engine.forward()
                else:
                    self.result.passes += 1
                    done = 0
                    with KeyFileReader(path, verify=False) as reader:
                        for keys in reader.iter_batches(engine.batch_size):
                            next_batch = self._batch(writer, next_batch, keys)
                            done += len(keys)
                            if self.progress is not None:
                                self.progress(done, found)
                path.unlink(missing_ok=True)
                if n == 1:  # the settle time runs from the first scan's end, found or not
                    settle_until = time.monotonic() + self.settle
        engine.drain()
        self.fault("finalize_after_batches", None)
        return self.result

    def _batch(self, writer: BackupWriter, b: int, keys: Sequence[bytes]) -> int:
        engine = self.engine
        engine.wait_while_throttled()
        t_read = time.monotonic()
        sources, digests = self._read(keys)
        # the read covers the older events of the keys it found; a key it did not find keeps
        # its events, so a client's delete made before the read still reaches its target
        # (a target is never deleted here: an absent key may be one an earlier attempt
        # deleted, whose target must stay)
        found = [d.key for d in sources.docs]
        if not found:
            return b
        docs, deletes = self.mirror.targets(Sources(docs=sources.docs,
                                                    expire_at=sources.expire_at, absent=[]))
        self.result.carried_over += engine.write(docs, deletes)
        writer.append_batch(b, self._records(sources))
        self.fault("finalize_backup", b)
        self.journal.append("batch_started", batch=b)
        present = [d.key for d in sources.docs]
        marker = self._marker()
        replies = self.scripts.call(_DELETE, [(k, [digests[k], *marker]) for k in present])
        deleted = [k for k, r in zip(present, replies, strict=True) if to_int(r)]
        self.fault("finalize_delete", b)
        self.journal.append("batch_done", sync=False, batch=b, docs=len(deleted))
        self.result.batches += 1
        self.result.backed_up += len(present)
        self.result.deleted += len(deleted)
        # our own deletes are events too: behind a barrier, forget those of keys still gone
        for sub in engine.subscribers:
            sub.barrier()
        engine.pending.covered(found, t_read)
        if deleted and not marker:
            # no marker (a cluster): a key recreated and deleted again by a client between
            # the delete and this check keeps its pre-finalize copy (a narrow window)
            exists = wire.execute(self.client, [(b"EXISTS", k) for k in deleted])
            engine.pending.discard(k for k, e in zip(deleted, exists, strict=True)
                                   if not to_int(e))
        engine.tick()
        engine.forward()
        return b + 1


def finalize_in_run(run: Run, engine: OnlineCopy) -> dict[str, Any]:
    """Finalize inside a run whose change capture is running (``apply --finalize``, a
    follower told to finalize, or :func:`finalize_migration`): journal ``finalizing``, drop
    the source index if it is still there (its definition is in the plan), run the
    :class:`Finalizer`, journal ``finalized``. Returns what it did (``left`` > 0: some keys
    kept changing and were left; then nothing is journaled as finalized)."""
    plan = run.plan
    if not RunState.load(run.dir).reached("finalizing"):
        run.phase("finalizing", ttl="absolute")
    if alias_index(run.client, plan.source_index) == plan.source_index:
        run.client.execute_command("FT.DROPINDEX", plan.source_index)
    # durably, before the first delete: a key in the list that this finalize deletes must
    # not read as deleted by a client later
    LeftKeys(run.dir).forget()
    with run.timer.step("finalize"):
        fin = Finalizer(engine, run.journal, run.dir, plan.fingerprint,
                        prefixes=plan.source_schema.index.prefix, fault=fault,
                        settle=run.online.finalize_settle,
                        progress=lambda done, total: run.progress("finalize", done, total))
        result = fin.run()
    done = attrs.asdict(result)
    if result.left or result.source_empty_at is None:
        run.journal.append("error", message=f"finalize: source keys kept changing ({result.left} "
                           "left in place)")
        run.report.manual_actions.append(
            f"source keys were still being written after {result.passes} passes (some client "
            f"still uses the source prefix); {result.left} were carried over and left in place: "
            f"re-run 'rvlm finalize --backup-dir {run.dir}' once no client writes them")
        done["finished"] = False
        return done
    run.phase("finalized", deleted=result.deleted, backed_up=result.backed_up,
              source_empty_at=result.source_empty_at)
    run.report.online["finalized"] = True
    done["finished"] = True
    return done


def check_late_writes(client: Any, plan: Plan, directory: Path,
                      report: MigrationReport) -> bool:
    """After a finished finalize stopped its change capture: True when no document stands
    under the source prefixes; else the report says how many were written after finalize's
    last check (not carried over) and how to carry them over (see the module docstring)."""
    late = late_writes(client, plan, record=directory)
    if not late:
        return True
    empty_at = phase_data(directory, "finalized").get("source_empty_at")
    when = (time.strftime(" (%H:%M:%S", time.localtime(float(empty_at)))
            + f".{int(float(empty_at) * 1000) % 1000:03d})" if empty_at else "")
    report.error = (f"{late} source keys were written after finalize's last check{when}: "
                    "their writes were not carried over to the target (some client still "
                    "writes the source prefix)")
    report.manual_actions.append(
        f"stop the clients that write {', '.join(plan.source_schema.index.prefix)!r}, then "
        f"re-run 'rvlm finalize --backup-dir {directory}' (carries them over, backs them up "
        "and deletes them)")
    return False


def finalize_migration(
    url: str | None,
    backup_dir: str | Path,
    *,
    options: OnlineOptions | None = None,
    plugins: Sequence[Any] = (),
    index_timeout: float = 600.0,
    progress: Callable[[str, int, int], None] | None = None,
    wait: float = 3600.0,
) -> MigrationReport:
    """Back up the source keys of an online migration, then delete them (``rvlm finalize``).

    Needs the aliases to have moved. When an apply is running on ``backup_dir`` (``--follow``),
    it is asked to finalize (it keeps its change capture, so nothing written meanwhile is
    lost) and this waits up to ``wait`` seconds for it to end; otherwise this process takes
    the index locks, starts change capture and finalizes. Either way it then checks the
    source prefixes once more: documents written there after finalize's last check (a client
    that still writes them) fail the report, and running it again (even once ``finalized``)
    carries them over and deletes them. Raises :class:`RvlmError` for a refused request
    (nothing changed); a failure afterwards is a failed report, and running it again resumes.
    """
    directory = Path(backup_dir)
    plan = load_backup_plan(directory)
    if not (plan.online and plan.operations):
        raise RvlmError(f"{directory}: finalize is for online migrations that copy documents "
                        "to a new prefix; this plan does not")
    state = RunState.load(directory)
    if state.phase == "rolled_back":
        raise RvlmError(f"the migration in {directory} was rolled back; nothing to finalize")
    if not state.reached("alias_moved"):
        raise RvlmError(f"the aliases have not moved to {plan.target_index!r} yet: the source "
                        "keys still serve; finish the apply first (re-run it)")
    report = MigrationReport(mode="finalize", source_index=plan.source_index,
                             target_index=plan.target_index, backup_dir=str(directory),
                             plan_fingerprint=plan.fingerprint, resumed=state.reached(
                                 "finalizing"))
    report.downtime_duration_seconds = 0.0
    late, earlier = 0, None
    handed_over = running(directory) is not None
    if handed_over:
        answer = send(directory, "finalize")
        report.warnings.append(f"the running apply was asked to finalize ({answer})")
        if options is not None:
            report.warnings.append("the running apply finalizes with its own options (its "
                                   "backlog's memory bound included); this call's are not used")
        deadline = time.monotonic() + wait
        while running(directory) is not None:
            if time.monotonic() > deadline:
                raise MigrationFailed(f"the apply running on {directory} did not finish "
                                      f"finalizing within {wait:.0f}s; it goes on")
            time.sleep(0.05)
        final = phase_data(directory, "finalized")
        if not final:
            errors = RunState.load(directory).errors
            why = f": {errors[-1].get('message')}" if errors else " (see its report)"
            report.error = f"the apply stopped without finalizing{why}"
            report.manual_actions.append(f"re-run 'rvlm finalize --backup-dir {directory}'"
                                         + (" once no client writes the source keys"
                                            if "kept changing" in why else ""))
            return report.finish(False)
        report.online = {"deleted": final.get("deleted"), "backed_up": final.get("backed_up")}
        state = RunState.load(directory)
    if handed_over or state.reached("finalized"):
        # finalized already (by the apply just now, or earlier): done unless a client wrote
        # the source prefix after that finalize's last check (then carry those writes over)
        client = connect(url or "")
        try:
            late = late_writes(client, plan)
        finally:
            client.close()
        # keys that stood after the last finalize and may have been deleted since
        swept_left = LeftKeys(directory).exists()
        if not late and not swept_left:
            if not handed_over:
                report.warnings.append("already finalized; nothing to do")
            report.online["source_empty_at"] = phase_data(directory, "finalized").get(
                "source_empty_at")
            report.backup_paths = sorted(str(p) for p in directory.glob("data-*.rvb"))
            return report.finish(True)
        earlier = phase_data(directory, "finalized").get("source_empty_at")
        if late:
            report.warnings.append(
                f"{late} source keys were written after {'the apply' if handed_over else 'the'}"
                " finalize's last check; this call carries them over, backs them up and "
                "deletes them (a key created and deleted again after that finalize's last "
                "scan, while no change capture ran, keeps its target as it was)")
        else:
            report.warnings.append(
                "source keys stood after the last finalize (written after its last check): "
                "this call deletes the targets of those deleted since")
        report.resumed = True
    host = host_with(plugins)
    host.check()
    size = int(read_manifest(directory)["batch_size"])
    run = Run(url=url or "", plan=plan, backup_dir=directory, batch_size=size, workers=1,
              accept_data_loss=True, progress=progress, host=host, index_timeout=index_timeout,
              online=options or OnlineOptions())
    run.report = report
    capture: CaptureSession | None = None
    try:
        with hold_locks(run.client, (plan.source_index, plan.target_index),
                        lock_owner("finalize")) as leases:
            run.leases = leases
            run.check_plugins()
            run.mutated = True
            capture = CaptureSession(run, run.online)
            capture.start()
            control = ControlChannel(directory)
            engine = capture.engine(control, None)
            engine.on_tick = run.check_leases
            engine.serving = True
            # what happened while no capture ran: deletes of source keys reach the targets
            # (the finalize pass itself carries every other change over)
            engine.compare = True
            if not state.reached("finalizing"):
                engine.sweep(copied_source_keys(directory, engine.batch_size))
            else:  # except those of keys a finalize deleted (see online.sweep)
                swept = sweep_after_finalize(engine, directory, plan.fingerprint)
                report.online["sweep"] = attrs.asdict(swept)
            done = finalize_in_run(run, engine)
            report.online.update(done)
            if late:
                # the guarantee still dates from the earlier finalize's check
                report.online["source_empty_at"] = earlier
                report.online["late_writes_carried_over"] = late
            report.online["backlog_spilled_to_disk"] = engine.pending.spilled_total
            report.forward_lag_ms = engine.lag.to_dict()
            capture.stop()
            finished = bool(done["finished"])
            if finished:
                capture.leave()
                finished = check_late_writes(run.client, plan, directory, report)
            else:
                # keys written since finalize's last scan stood too (see online.sweep)
                late_writes(run.client, plan, record=directory)
            control.close("succeeded" if finished else "failed")
            report.finish(finished)
    except (MigrationFailed, redis.RedisError) as exc:
        if not run.mutated:
            raise
        report = run.failed(exc)
    finally:
        if capture is not None:
            capture.stop()
        report.timings = Timings(run.timer.seconds)
        run.close()
    report.backup_paths = sorted(str(p) for p in directory.glob("data-*.rvb"))
    return report
