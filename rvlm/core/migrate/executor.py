"""Apply a plan: checks, key enumeration, drop, transform in batches, create, validate; resume.

The executor owns every side effect (design intent): plugins describe and transform, this
module reads, backs up, journals, writes and renames, once for all plugins.

Order of effects (each phase is journaled in ``journal-0.jsonl`` of the backup dir)::

    checked -> keys_enumerated -> pre_drop_done -> dropped -> transforming -> transformed
    -> created -> indexed -> validated -> done

Nothing is mutated before ``dropped``: every check, the key file and the collision checks
over *all* keys come first. Each batch is: read -> transform (all operations, in plan order,
each seeing the previous one's values) -> backup (fsynced) -> ``batch_started`` -> write one
pipeline (renames last) -> ``batch_done``. Re-running the same apply with the same backup dir
resumes: batches started but not done are restored from their backup records and redone from
the originals, so no value is transformed twice and no rename is lost.

Fault injection for crash tests: ``RVLM_FAULT=<point>[:<batch>]`` makes the process exit with
``os._exit(137)`` at that point. Points: ``after_checks``, ``after_drop``, ``after_backup:N``
(backup of batch N fsynced, not journaled), ``after_started:N`` (journaled, nothing written),
``mid_write:N`` (values written, keys not yet renamed), ``after_batch:N``,
``after_transform``, ``after_create``. ``RVLM_RENAME_MODE=dump`` forces the DUMP/RESTORE
rename path used on clusters. ``RVLM_LOCK_LEASE_MS`` sets the lock lease (default 30000).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import multiprocessing
import os
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis

from rvlm.core.errors import MigrationFailed, RvlmError
from rvlm.core.migrate.aliases import check_aliases, point_aliases
from rvlm.core.migrate.plan import Plan
from rvlm.core.migrate.precheck import check_target_accepted
from rvlm.core.migrate.report import MigrationReport, Timer
from rvlm.core.migrate.validate import comparable, validate_migration
from rvlm.core.plugins.context import ApplyContext
from rvlm.core.plugins.documents import (
    MISSING,
    NO_CHANGE,
    Document,
    DocumentOperation,
    operation_problems,
)
from rvlm.core.plugins.host import PluginHost, host_with
from rvlm.core.redis.capabilities import Capabilities, detect
from rvlm.core.redis.connection import connect, index_exists, read_index
from rvlm.core.redis.docio import (
    JSON_ROOT,
    KeyWrite,
    ReadDoc,
    backup_raw,
    bname,
    conflict_actions,
    conflict_message,
    enumerate_keys,
    fields_exist,
    keys_exist,
    read_batch,
    read_ttls,
    restore_records,
    write_batch,
)
from rvlm.core.redis.lock import IndexLock, LeaseKeeper, LockHeld, lock_key
from rvlm.core.schema.ftcreate import create_arguments
from rvlm.core.storage.backup import (
    BackupCorrupt,
    BackupReader,
    BackupWriter,
    RawRecord,
    read_manifest,
    write_manifest,
)
from rvlm.core.storage.journal import PHASES, Journal, RunState
from rvlm.core.storage.keyfile import KeyFileReader

PLAN_NAME = "plan.yaml"
KEYS_NAME = "keys.rvk"
FAULT_ENV = "RVLM_FAULT"
LEASE_ENV = "RVLM_LOCK_LEASE_MS"

#: ``progress(phase, done, total)``: phase is ``keys``, ``transform`` or ``indexing``.
Progress = Callable[[str, int, int], None]

_ORDER = {p: i for i, p in enumerate(PHASES)}


def _reached(phase: str | None, target: str) -> bool:
    return phase is not None and phase in _ORDER and _ORDER[phase] >= _ORDER[target]


def fault(point: str, batch: int | None = None) -> None:
    """Exit at once (``os._exit(137)``) if ``RVLM_FAULT`` names this point (and batch)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    name, _, num = spec.partition(":")
    if name != point:
        return
    if num and (batch is None or int(num) != batch):
        return
    os._exit(137)


# --------------------------------------------------------------------------- locking


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_STEAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def acquire_lock(client: redis.Redis, name: str, owner: str) -> IndexLock:
    """Take the lock on index ``name``; a lock left by a dead process on this host (a crash)
    is taken over. Raises :class:`LockHeld` naming a live holder."""
    lease = int(os.environ.get(LEASE_ENV, "30000"))
    lock = IndexLock(client, name, owner=owner, lease_ms=lease)
    try:
        lock.acquire()
        return lock
    except LockHeld:
        raw = client.get(lock_key(name))
        try:
            info = json.loads(raw) if raw is not None else None
        except ValueError:
            info = None
        if (isinstance(info, dict) and info.get("host") == socket.gethostname()
                and isinstance(info.get("pid"), int) and not _pid_alive(info["pid"])):
            client.eval(_STEAL, 1, lock_key(name), raw)  # type: ignore[arg-type]
            lock.acquire()
            return lock
        raise


def _owner(command: str) -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no user name in some containers
        user = "unknown"
    return f"rvlm {command} ({user})"


# --------------------------------------------------------------------------- backup dir


def prepare_backup_dir(directory: Path, plan: Plan, batch_size: int) -> tuple[dict[str, Any], bool]:
    """Create the backup dir for ``plan`` or reopen it. Returns (manifest, created).

    A directory made for another plan (fingerprint) is refused; one that holds anything but
    an rvlm backup is refused. On reopen the manifest's batch size wins (batch numbers in
    the journal and backups depend on it).
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise RvlmError(f"backup dir {directory} is a file")
    if directory.exists() and any(directory.iterdir()):
        if not (directory / "manifest.json").exists():
            raise RvlmError(f"{directory} is not empty and is not an rvlm backup dir; "
                            "use a new --backup-dir")
        manifest = read_manifest(directory)
        if manifest.get("plan_fingerprint") != plan.fingerprint:
            raise RvlmError(
                f"backup dir {directory} belongs to another plan (fingerprint "
                f"{manifest.get('plan_fingerprint')}, this plan {plan.fingerprint}); "
                "use a new --backup-dir")
        return manifest, False
    if batch_size <= 0:
        raise RvlmError(f"batch size must be positive, got {batch_size}")
    directory.mkdir(parents=True, exist_ok=True)
    plan.write(directory / PLAN_NAME)
    manifest = {
        "plan_fingerprint": plan.fingerprint,
        "source_index": plan.source_index,
        "target_index": plan.target_index,
        "storage_type": plan.source_schema.storage_type,
        "batch_size": batch_size,
        "created_at": time.time(),
    }
    write_manifest(directory, manifest)
    return manifest, True


def phase_data(directory: Path, phase: str) -> dict[str, Any]:
    """The last ``phase`` event with value ``phase`` in the coordinator's journal, or {}."""
    for rec in reversed(Journal(directory, 0).events()):
        if rec["event"] == "phase" and rec.get("value") == phase:
            return rec
    return {}


# --------------------------------------------------------------------------- transform


def transform_batch(
    host: PluginHost, plan: Plan, ctx: ApplyContext, docs: Sequence[ReadDoc]
) -> tuple[list[KeyWrite], list[RawRecord]]:
    """Run every operation on one batch and merge the results.

    Each operation gets :class:`Document` objects holding its ``reads``/``writes`` as left by
    the operations before it (an overlay). Operations with neither ``reads`` nor ``writes``
    (pure key moves) are not handed to a plugin. An update outside the operation's ``writes``
    fails the migration before anything of the batch is written. Returns the writes (only
    documents that change) and their backup records (:data:`~rvlm.core.storage.backup.RawRecord`
    tuples, checked when encoded), in the same order.

    A ``converts_to`` operation (the last one; ``docs`` were read with ``whole=True``) gets
    every field of each document as left by the operations before it (JSON: the root under
    ``"$"``) and must return ``replace`` for every document; each becomes a replacing
    :class:`KeyWrite` and a ``replaced`` backup record holding the whole original and its TTL.

    ``docs[i].values`` (the originals the backup is built from) are never modified: each
    :class:`Document` gets its own dict, and the overlay of a document is a separate dict of
    the names operations set (or deleted: MISSING), in the order they were first touched.
    """
    storage = plan.source_schema.storage_type
    new_document = Document.of
    # per document, name -> value for every name an operation set or deleted (MISSING);
    # None: untouched. Values not in it are the document's as read.
    changes: list[dict[str, Any] | None] = [None] * len(docs)
    keys = [d.key for d in docs]
    replacements: list[Any] = [MISSING] * len(docs)
    converts_to: str | None = None
    for op in plan.operations:
        names = list(dict.fromkeys((*op.reads, *op.writes)))
        if op.converts_to is not None:
            converts_to = op.converts_to
            root = JSON_ROOT.decode()
            documents = []
            for i, d in enumerate(docs):
                ch = changes[i]
                cur = d.values if ch is None else {**d.values, **ch}
                documents.append(new_document(keys[i], (
                    {root: cur[root]} if storage == "json" else
                    {n: v for n, v in cur.items() if v is not MISSING})))
            for i, u in enumerate(host.transform(op, documents, ctx)):
                if u.replace is MISSING or u.set or u.delete:
                    raise MigrationFailed(
                        f"plugin {op.plugin!r} ({op.kind}) converts documents and must return "
                        f"an update with replace (and no set/delete) for every document; got "
                        f"{u!r:.120} for {keys[i]!r}")
                replacements[i] = u.replace
                if u.new_key is not None:
                    keys[i] = bytes(u.new_key)
        elif names:
            documents = []
            add = documents.append
            if len(names) == 1:
                only = names[0]
                for k, d, ch in zip(keys, docs, changes, strict=True):
                    add(new_document(k, {only: ch[only] if ch is not None and only in ch
                                         else d.values.get(only, MISSING)}))
            else:
                for k, d, ch in zip(keys, docs, changes, strict=True):
                    before = d.values
                    add(new_document(k, {n: ch[n] if ch is not None and n in ch
                                         else before.get(n, MISSING) for n in names}))
            updates = host.transform(op, documents, ctx)
            allowed = frozenset(op.writes)
            for i, u in enumerate(updates):
                if u is NO_CHANGE:
                    continue
                if u.replace is not MISSING:
                    raise MigrationFailed(
                        f"plugin {op.plugin!r} ({op.kind}) returned a whole document (replace) "
                        "but its operation does not declare converts_to")
                uset, udel = u.set, u.delete
                if not (allowed.issuperset(uset) and (not udel or allowed.issuperset(udel))):
                    bad = (set(uset) | set(udel)) - allowed
                    raise MigrationFailed(
                        f"plugin {op.plugin!r} ({op.kind}) tried to write {sorted(bad)}, "
                        f"outside its declared writes {list(op.writes)}")
                if uset or udel:
                    ch = changes[i]
                    if ch is None:
                        ch = changes[i] = {}
                    ch.update(uset)
                    for n in udel:
                        ch[n] = MISSING
                if u.new_key is not None:
                    keys[i] = bytes(u.new_key)
        if op.rename_prefix is not None:  # Plan.map_key, one operation at a time, inline
            old, new = op.rename_prefix[0].encode(), op.rename_prefix[1].encode()
            keys = [new + k[len(old):] if k.startswith(old) else k for k in keys]
    unread = [i for i, d in enumerate(docs) if d.pttl is None and keys[i] != d.key]
    if unread:  # a plugin moved keys the executor read without their TTL: read it now
        ttls = read_ttls(ctx.client, [docs[i].key for i in unread])
        for i, ttl in zip(unread, ttls, strict=True):
            docs[i].pttl = ttl
    writes: list[KeyWrite] = []
    records: list[RawRecord] = []
    edit = KeyWrite.edit
    hash_storage = storage != "json"
    for i, d in enumerate(docs):
        key = d.key
        new_key = keys[i] if keys[i] != key else None
        if replacements[i] is not MISSING:
            writes.append(KeyWrite(key=key, set={}, delete=(), new_key=new_key,
                                   replace=replacements[i], converts_to=converts_to,
                                   pttl=-1 if d.pttl is None else d.pttl))
            records.append(backup_raw(d, storage, (), new_key, replaced=True))
            continue
        ch = changes[i]
        if ch is None:
            if new_key is None:
                continue
            writes.append(edit(key, {}, (), new_key))
            records.append(backup_raw(d, storage, (), new_key))
            continue
        before = d.values
        set_values: dict[str, Any] = {}
        dels: list[str] = []
        originals: list[tuple[bytes, bytes | None]] = []
        for n, b in ch.items():  # changed: not MISSING on both sides, not equal values of one type
            a = before.get(n, MISSING)
            if a is MISSING or b is MISSING:
                if a is b:
                    continue
            elif type(a) is type(b) and a == b:
                continue
            if b is MISSING:
                dels.append(n)
            else:
                set_values[n] = b
            if hash_storage:  # the backup keeps the original of each changed field
                originals.append((bname(n), None if a is MISSING else
                                  a if type(a) is bytes else bytes(a)))
        if not set_values and not dels and new_key is None:
            continue
        writes.append(edit(key, set_values, tuple(dels), new_key))
        if hash_storage and (new_key is None or d.pttl is not None):
            pttl = d.pttl
            records.append((key, new_key, tuple(originals),
                            pttl if new_key is not None and pttl is not None and pttl >= 0
                            else None, False))
        else:
            records.append(backup_raw(d, storage, [*set_values, *dels], new_key))
    return writes, records


# --------------------------------------------------------------------------- the run


class _Run:
    """One apply (or resume) of one plan; see the module docstring."""

    def __init__(self, *, url: str, plan: Plan, backup_dir: Path, batch_size: int,
                 workers: int, accept_data_loss: bool, progress: Progress | None,
                 host: PluginHost, index_timeout: float, client: Any = None) -> None:
        self.url = url
        self.plan = plan
        self.dir = Path(backup_dir)
        self.batch_size = batch_size
        self.workers = max(1, int(workers))
        self.accept_data_loss = accept_data_loss
        self.progress = progress
        self.host = host
        self.index_timeout = index_timeout
        self.storage = plan.source_schema.storage_type
        self.names = list(dict.fromkeys(n for op in plan.operations
                                        for n in (*op.reads, *op.writes)))
        #: a converts_to operation reads whole documents
        self.whole = any(op.converts_to is not None for op in plan.operations)
        #: TTLs are backed up only for keys that move; read them with the values only when
        #: the plan renames keys (a plugin's own new_key is handled in transform_batch)
        self.ttl = any(op.rename_prefix is not None for op in plan.operations)
        self.timer = Timer()
        self.report = MigrationReport(
            mode=plan.mode, source_index=plan.source_index, target_index=plan.target_index,
            backup_dir=str(self.dir), workers=self.workers, plan_fingerprint=plan.fingerprint)
        self.owns_client = client is None
        self.client: redis.Redis = connect(url) if client is None else client
        self.caps: Capabilities = detect(self.client)
        self.ctx = ApplyContext(plan=plan, capabilities=self.caps, client=self.client,
                                backup_dir=str(self.dir))
        self.journal = Journal(self.dir, 0)
        self.keeper: LeaseKeeper | None = None
        self.mutated = False

    def _progress(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(phase, done, total)

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

    def check_source(self) -> Any:
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
        info = read_index(self.client, plan.source_index)
        if info.schema.index.name != plan.source_index:
            raise RvlmError(f"{plan.source_index!r} is an alias of index "
                            f"{info.schema.index.name!r}; plan against the index itself")
        live = comparable(info.schema, plan.source_schema)
        if live != plan.source_schema.without_unknowns():
            from rvlm.core.migrate.validate import _schema_diff

            raise RvlmError("source changed since the plan was made ("
                            f"{_schema_diff(live, plan.source_schema.without_unknowns())}); "
                            "make a new plan; nothing was changed")
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

    def check_collisions(self, keyfile: Path) -> None:
        """Over every key: no document already holds a field an operation creates, and no
        key a prefix rename would create exists. Raises RvlmError naming up to 5 keys."""
        creates = list(dict.fromkeys(n for op in self.plan.operations for n in op.creates))
        renames = any(op.rename_prefix for op in self.plan.operations)
        if not creates and not renames:
            return
        held: list[str] = []
        held_n = 0
        taken: list[bytes] = []
        taken_n = 0
        with KeyFileReader(keyfile, verify=False) as reader:
            for keys in reader.iter_batches(self.batch_size):
                if creates:
                    for k, names in zip(keys, fields_exist(self.client, self.storage, keys,
                                                           creates), strict=True):
                        if names:
                            held_n += 1
                            if len(held) < 5:
                                held.append(f"{k!r} ({', '.join(names)})")
                if renames:
                    moved = [nk for k in keys if (nk := self.plan.map_key(k)) != k]
                    for nk, ex in zip(moved, keys_exist(self.client, moved), strict=True):
                        if ex:
                            taken_n += 1
                            if len(taken) < 5:
                                taken.append(nk)
        if held:
            raise RvlmError(f"{held_n} document(s) already hold a field this migration "
                            f"creates, e.g. {'; '.join(held)}; nothing was changed")
        if taken:
            raise RvlmError(f"{taken_n} key(s) the prefix change would create already exist, "
                            f"e.g. {', '.join(repr(k) for k in taken)}; nothing was changed")

    # -- phases --------------------------------------------------------------------------
    def phase(self, value: str, **data: Any) -> None:
        self.journal.append("phase", value=value, **data)

    def execute(self) -> MigrationReport:
        state = RunState.load(self.dir)
        if state.phase == "rolled_back":
            raise RvlmError(f"the migration in {self.dir} was rolled back; use a new "
                            "--backup-dir to apply the plan again")
        self.report.resumed = state.phase is not None
        past_drop = _reached(state.phase, "dropped") or (
            state.phase == "pre_drop_done"
            and not index_exists(self.client, self.plan.source_index))
        keyfile = self.dir / KEYS_NAME
        if not past_drop:
            with self.timer.phase("checks"):
                info = self.check_source()
                aliases = check_aliases(self.client, self.plan)  # where each pointed before
            self.phase("checked", **({"aliases": aliases} if aliases else {}))
            fault("after_checks")
            with self.timer.phase("keys"):
                seen = 0

                def on_page(n: int) -> None:
                    nonlocal seen
                    seen += n
                    self._progress("keys", seen, info.stats.num_docs)

                en = enumerate_keys(self.client, self.plan.source_schema, info.stats.num_docs,
                                    info.stats.indexing_failures, keyfile, on_page=on_page)
                if en.fallback:
                    self.report.warnings.append(f"keys enumerated with SCAN: {en.fallback}")
            self.phase("keys_enumerated", count=en.count, method=en.method,
                       source_docs=info.stats.num_docs + info.stats.indexing_failures,
                       source_failures=info.stats.indexing_failures)
            with self.timer.phase("checks"):
                self.check_collisions(keyfile)
                problems = self.host.pre_drop(self.plan, self.ctx)
                if problems:
                    raise RvlmError("a plugin refused the migration: " + "; ".join(problems))
            self.phase("pre_drop_done")
            with self.timer.phase("drop"):
                self.mutated = True
                self.client.execute_command("FT.DROPINDEX", self.plan.source_index)
            self.phase("dropped")
            fault("after_drop")
        else:
            self.mutated = True
            self.check_plugins()
        enum = phase_data(self.dir, "keys_enumerated")
        self.report.key_enumeration = str(enum.get("method", ""))
        dropped_at = float(phase_data(self.dir, "dropped").get("ts", time.time()))
        if not _reached(state.phase, "transformed"):
            self.phase("transforming")
            with self.timer.phase("transform"):
                self.transform(keyfile)
            self.phase("transformed")
            fault("after_transform")
        with self.timer.phase("create"):
            if not index_exists(self.client, self.plan.target_index):
                try:
                    self.client.execute_command(*create_arguments(self.plan.target_schema))
                except redis.ResponseError as exc:
                    raise MigrationFailed(f"FT.CREATE {self.plan.target_index} failed: {exc}"
                                          ) from None
                self.phase("created")
                fault("after_create")
                self.host.post_create(self.plan, self.ctx)
            # the drop removed the source's aliases: point them at the target (idempotent)
            point_aliases(self.client, self.plan.aliases, self.plan.target_index)
        with self.timer.phase("indexing"):
            self.wait_indexed()
        self.phase("indexed")
        self.report.downtime_duration_seconds = max(0.0, time.time() - dropped_at)
        with self.timer.phase("validation"):
            result = validate_migration(
                self.client, self.plan, expected_docs=enum.get("source_docs"),
                source_failures=enum.get("source_failures"), host=self.host, context=self.ctx)
        self.report.validation = result
        if result.passed:
            self.phase("validated")
            self.phase("done")
        else:
            self.journal.append("error", message="validation failed: "
                                + "; ".join(result.errors))
            self.report.manual_actions.append(
                f"inspect the index, then 'rvlm validate --plan {self.dir / PLAN_NAME}' or "
                f"'rvlm rollback --backup-dir {self.dir}'")
        self.report.documents = int(enum.get("count", 0))
        return self.report.finish(result.passed)

    def wait_indexed(self) -> None:
        """Poll FT.INFO until the target index finished indexing, or fail after the timeout."""
        deadline = time.monotonic() + self.index_timeout
        while True:
            stats = read_index(self.client, self.plan.target_index).stats
            pct = stats.percent_indexed if stats.percent_indexed == stats.percent_indexed else 1
            self._progress("indexing", int(pct * 100), 100)
            if not stats.indexing and pct >= 1.0:
                return
            if time.monotonic() > deadline:
                raise MigrationFailed(
                    f"index {self.plan.target_index!r} still indexing ({pct:.0%}) after "
                    f"{self.index_timeout:.0f}s; re-run the same command to keep waiting")
            time.sleep(0.05)

    # -- transform -----------------------------------------------------------------------
    def transform(self, keyfile: Path) -> None:
        """Restore unfinished batches, then run every batch not done (in N processes)."""
        state = RunState.load(self.dir)
        backup = BackupReader(self.dir, self.plan.fingerprint)
        backed = set(backup.batch_numbers())
        lost = sorted(state.started_not_done - backed)
        if lost:
            raise BackupCorrupt(f"{self.dir}: the journal says batch {lost[0]} was started but "
                                "its backup is missing; the backup cannot be trusted")
        with KeyFileReader(keyfile) as reader:
            total = reader.num_batches(self.batch_size)
        redo = sorted((backed | state.started_not_done) - state.done)
        conflicts: list[tuple[bytes, bytes]] = []
        for b in redo:
            # started, not done: a replacement may have failed after its DEL (recreate it)
            restore_records(self.client, self.storage, backup.batch(b), cluster=self.caps.cluster,
                            recreate=b in state.started_not_done, conflicts=conflicts)
        if conflicts:
            # a batch that cannot be restored must not be redone: its writes would land on a
            # key that may not be the migration's own
            self.report.restore_conflicts = len(conflicts)
            self.report.manual_actions += conflict_actions(conflicts, self.dir)
            raise MigrationFailed(conflict_message(conflicts))
        self.report.batches_resumed = len(redo)
        pending = [b for b in range(total) if b not in state.done]
        self.report.batches = total
        stats = {"docs": 0, "bytes": 0}
        done_count = total - len(pending)
        self._progress("transform", done_count, total)
        if self.workers == 1 or len(pending) <= 1:
            self._work(0, pending, backed, self.client, self.journal, stats,
                       lambda n: self._progress("transform", done_count + n, total))
        else:
            self._parallel(pending, backed, stats, done_count, total)
        self.report.documents_rewritten += stats["docs"]
        self.report.bytes_rewritten += stats["bytes"]

    def _work(self, worker: int, batches: Iterable[int], backed: set[int],
              client: redis.Redis, journal: Journal, stats: dict[str, int],
              tick: Callable[[int], None]) -> None:
        ctx = self.ctx if client is self.client else ApplyContext(
            plan=self.plan, capabilities=self.caps, client=client, backup_dir=str(self.dir))
        with BackupWriter(self.dir, worker, self.plan.fingerprint) as writer, \
                KeyFileReader(self.dir / KEYS_NAME, verify=False) as reader, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="rvlm-durable") as bg:
            committed = writer.committed_batches()  # backed up by an earlier, crashed run

            def make_durable(b: int, records: list[RawRecord]) -> None:
                # the backup fsynced, then batch_started journaled and fsynced: only after
                # both may a key of the batch be written
                if b not in backed and b not in committed:
                    writer.append_batch(b, records)
                fault("after_backup", b)
                journal.append("batch_started", batch=b)
                fault("after_started", b)

            def finish(n: int, b: int, writes: list[KeyWrite], durable: Future[None]) -> None:
                durable.result()  # raises if the backup or the journal failed: nothing written
                if self.keeper is not None:
                    self.keeper.check()
                written = write_batch(client, self.storage, writes, cluster=self.caps.cluster,
                                      fault=lambda: fault("mid_write", b))
                # not fsynced on its own: the next batch_started (or the journal's close)
                # makes it durable, and a batch_done lost in a crash only means the batch is
                # restored from its backup and redone on resume
                journal.append("batch_done", sync=False, batch=b, docs=len(writes),
                               bytes=written)
                fault("after_batch", b)
                stats["docs"] += len(writes)
                stats["bytes"] += written
                tick(n)

            # Pipelined by one batch: while batch b's backup and batch_started are fsynced in
            # the background, batch b+1 is read and transformed (no side effect; its keys are
            # not b's). The effects on disk and in Redis keep their order: backup(b),
            # batch_started(b), writes(b), batch_done(b), backup(b+1), ...
            ahead: tuple[int, int, list[KeyWrite], Future[None]] | None = None
            try:
                for n, b in enumerate(batches, 1):
                    if self.keeper is not None:
                        self.keeper.check()
                    keys = reader.batch(b, self.batch_size)
                    docs = read_batch(client, self.storage, keys, self.names, whole=self.whole,
                                      ttl=self.ttl)
                    writes, records = transform_batch(self.host, self.plan, ctx, docs)
                    if ahead is not None:
                        prev, ahead = ahead, None
                        finish(*prev)
                    ahead = (n, b, writes, bg.submit(make_durable, b, records))
                if ahead is not None:
                    prev, ahead = ahead, None
                    finish(*prev)
            finally:
                if ahead is not None:  # failing: let the in-flight fsyncs end (never written)
                    with contextlib.suppress(BaseException):
                        ahead[3].result()

    def _parallel(self, pending: list[int], backed: set[int], stats: dict[str, int],
                  done_count: int, total: int) -> None:
        """Fork ``workers`` processes; worker w takes batches ``b % N == w``."""
        mp = multiprocessing.get_context("fork")
        queue: Any = mp.Queue()
        self.journal.close()  # each child opens its own journal; ours reopens lazily

        def child(w: int, mine: list[int]) -> None:
            try:
                client = connect(self.url)
                mystats = {"docs": 0, "bytes": 0}
                with Journal(self.dir, w) as journal:
                    self._work(w, mine, backed, client, journal, mystats,
                               lambda _n: queue.put(("tick", w, 1)))
                queue.put(("done", w, mystats))
            except BaseException as exc:
                queue.put(("error", w, f"{type(exc).__name__}: {exc}"
                           if not isinstance(exc, RvlmError) else str(exc)))
                raise SystemExit(1) from None

        procs = []
        for w in range(self.workers):
            mine = [b for b in pending if b % self.workers == w]
            p = mp.Process(target=child, args=(w, mine), name=f"rvlm-worker-{w}")
            p.start()
            procs.append(p)
        errors: list[str] = []
        finished = 0
        ticks = 0
        try:
            while finished < len(procs):
                if self.keeper is not None:
                    self.keeper.check()
                try:
                    kind, w, data = queue.get(timeout=0.2)
                except Exception:
                    if all(not p.is_alive() for p in procs):
                        # drain what is left, then stop
                        with contextlib.suppress(Exception):
                            while True:
                                kind, w, data = queue.get(timeout=0.2)
                                finished += self._msg(kind, data, stats, errors)
                        break
                    continue
                if kind == "tick":
                    ticks += 1
                    self._progress("transform", done_count + ticks, total)
                else:
                    finished += self._msg(kind, data, stats, errors)
        finally:
            for p in procs:
                if p.is_alive() and (errors or (self.keeper and self.keeper.error)):
                    p.terminate()
                p.join()
        bad = [p for p in procs if p.exitcode != 0]
        if errors or bad:
            msg = errors[0] if errors else f"worker {bad[0].name} died (exit {bad[0].exitcode})"
            raise MigrationFailed(f"transform failed: {msg}; re-run the same command to resume")

    @staticmethod
    def _msg(kind: str, data: Any, stats: dict[str, int], errors: list[str]) -> int:
        if kind == "done":
            stats["docs"] += data["docs"]
            stats["bytes"] += data["bytes"]
            return 1
        if kind == "error":
            errors.append(str(data))
            return 1
        return 0


# --------------------------------------------------------------------------- API


def apply_plan(
    url: str | None,
    plan: Plan,
    *,
    backup_dir: str | Path,
    batch_size: int = 500,
    workers: int = 1,
    accept_data_loss: bool = False,
    progress: Progress | None = None,
    plugins: Sequence[Any] = (),
    index_timeout: float = 600.0,
    client: Any = None,
) -> MigrationReport:
    """Apply ``plan`` to the server at ``url``, or resume it from ``backup_dir``.

    Takes the plan, a backup dir (created, or reopened to resume the same plan), batch size
    and worker count (a resume uses the batch size the dir was made with), and extra plugin
    objects. ``client`` replaces the connection made from ``url`` for every command of this
    process (the async executor passes a bridge to redis.asyncio); worker processes still
    connect to ``url``. Returns a :class:`MigrationReport` whose ``result`` is ``succeeded``
    only when validation passed.

    Raises :class:`RvlmError` (nothing changed) for a refused request: another apply holds the
    lock, the source changed since the plan, a lossy plan without ``accept_data_loss``,
    collisions, a missing plugin or capability, a foreign or corrupt backup dir. Once the
    source index was dropped, failures do not raise: the report says ``failed``, the journal
    holds the error, and re-running the same call resumes.
    """
    host = host_with(plugins)
    host.check()
    directory = Path(backup_dir)
    manifest, _created = prepare_backup_dir(directory, plan, batch_size)
    size = int(manifest["batch_size"])
    run = _Run(url=url or "", plan=plan, backup_dir=directory, batch_size=size,
               workers=workers, accept_data_loss=accept_data_loss, progress=progress,
               host=host, index_timeout=index_timeout, client=client)
    if size != batch_size:
        run.report.warnings.append(f"resuming with the backup dir's batch size {size} "
                                   f"(not {batch_size})")
    run.report.backup_paths = [str(directory / PLAN_NAME), str(directory / KEYS_NAME)]
    owner = _owner("apply")
    locks: list[IndexLock] = []
    keepers: list[LeaseKeeper] = []
    try:
        for name in dict.fromkeys((plan.source_index, plan.target_index)):
            locks.append(acquire_lock(run.client, name, owner))
        for lock in locks:
            keeper = LeaseKeeper(lock)
            keeper.start()
            keepers.append(keeper)
        run.keeper = keepers[0]
        try:
            if plan.online:  # build next to the source and move the alias: rvlm.core.migrate.online
                from rvlm.core.migrate.online import execute_online

                report = execute_online(run)
            else:
                report = run.execute()
        except Exception as exc:
            if not run.mutated:
                raise
            message = str(exc) if isinstance(exc, RvlmError) else f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                run.journal.append("error", message=message)
            run.report.error = message
            run.report.manual_actions.append(
                f"re-run the same command to resume, or 'rvlm rollback --backup-dir "
                f"{directory}' to restore the source index")
            report = run.report.finish(False)
    finally:
        for keeper in keepers:
            keeper.stop()
        for lock in locks:
            with contextlib.suppress(redis.RedisError):
                lock.release()
        run.journal.close()
        if run.owns_client:
            run.client.close()
    report.timings = dict(run.timer.seconds)
    report.backup_paths += sorted(str(p) for p in directory.glob("data-*.rvb"))
    return report


class MigrationExecutor:
    """RedisVL-style entry point: ``MigrationExecutor().apply(plan, redis_url=..., ...)``.

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
        progress_callback: Progress | None = None,
        accept_data_loss: bool = True,
        index_timeout: float = 600.0,
    ) -> MigrationReport:
        """Same as :func:`apply_plan`; returns the report."""
        return apply_plan(redis_url, plan, backup_dir=backup_dir, batch_size=batch_size,
                          workers=num_workers, accept_data_loss=accept_data_loss,
                          progress=progress_callback, plugins=plugins,
                          index_timeout=index_timeout)


__all__ = [
    "FAULT_ENV",
    "KEYS_NAME",
    "PLAN_NAME",
    "DocumentOperation",
    "MigrationExecutor",
    "apply_plan",
    "prepare_backup_dir",
    "transform_batch",
]

