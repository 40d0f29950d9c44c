"""What a migration has done so far: an append-only, checksummed JSON-lines log per worker.

Each worker writes ``journal-{worker}.jsonl`` in the backup directory. One line per event::

    {"crc":"1a2b3c4d","rec":{"event":"batch_done","batch":3,"ts":1700000000.25,"worker":0}}

``crc`` is the crc32 (8 lowercase hex digits) of the exact bytes of the ``rec`` object as
written, so a line is checked without re-serialising it, and every line is still plain JSON
(``jq`` works). :meth:`Journal.append` writes the line with one ``write``, then ``fsync``:
once it returns, the event survives a crash.

Vocabulary (every event also carries ``ts``, seconds since the epoch, and ``worker``):

* ``phase``: ``value`` is one of :data:`PHASES` (planned, checked, keys_enumerated,
  pre_drop_done, dropped, transforming, transformed, created, indexed, validated, done,
  rolled_back, failed; an online apply adds alias_moved and source_dropped after validated;
  one that copies documents also capture_started, copied, forwarding_stopped, and finalize
  adds finalizing and finalized: see :mod:`rvlm.core.migrate.online.blue_green`).
* ``batch_started`` / ``batch_done``: ``batch`` (int). A batch is journaled as started only
  after its backup is fsynced, and as done only after all its writes succeeded. Neither is
  fsynced on the critical path: the backup's fsync is the batch's one durable point (a batch
  whose backup frame is committed counts as started on resume and rollback, journaled or not),
  and the executor fsyncs the journal beside the writes, at most twice a second
  (:meth:`Journal.sync`; a ``batch_done`` lost in an OS crash only redoes its batch). The
  events of two batches may interleave (``batch_started`` of b+1 before ``batch_done`` of b):
  the executor backs up the next batch while it writes this one. A redone
  batch (resumed) whose writes differ from what its backup records says were written carries
  ``rewritten``: ``{key hex: [digest hex, [name hex, ...]]}`` for those documents (the backup
  keeps the first attempt's originals and digests).
* ``batch_lost``: ``batch`` (int): a batch journaled as done whose writes the server no longer
  holds (it restarted from an older snapshot, or lost data); it counts as started, not done,
  until a later ``batch_done``: resume restores it from its backup and redoes it.
* ``server``: ``run_id`` (str) and ``uptime_s`` of the server an apply (or resume) talks to,
  journaled when it starts: a later resume that finds another run id knows the server
  restarted in between and checks the batches marked done.
* ``error``: ``message`` (str), plus any JSON-serialisable detail.

Damage: a torn *last* line (crash during an append, so the event was never acknowledged and
the executor did not act on it) is ignored by readers and cut off by the next
:meth:`Journal.append`. A damaged line with a good line after it is corruption and raises
:class:`~rvlm.core.storage.files.BackupCorrupt` naming file and line.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
import time
import zlib
from pathlib import Path
from types import TracebackType
from typing import Any

import attrs

from rvlm.core.storage.files import BackupBusy, BackupCorrupt, fsync_directory

LOG = logging.getLogger(__name__)

PHASES: tuple[str, ...] = (
    "planned",
    "checked",
    "keys_enumerated",
    "pre_drop_done",
    "dropped",
    "transforming",
    "transformed",
    "capture_started",
    "created",
    "copied",
    "indexed",
    "validated",
    "alias_moved",
    "source_dropped",
    "forwarding_stopped",
    "done",
    "finalizing",
    "finalized",
    "rolled_back",
    "failed",
)
_PHASE_ORDER = {p: i for i, p in enumerate(PHASES)}
EVENTS: tuple[str, ...] = ("phase", "batch_started", "batch_done", "batch_lost", "server",
                          "error")

_PREFIX = b'{"crc":"'
_MIDDLE = b'","rec":'
_CRC_AT = len(_PREFIX)
_REC_AT = _CRC_AT + 8 + len(_MIDDLE)
_JOURNAL_RE = re.compile(r"^journal-(\d+)\.jsonl$")
_RESERVED = frozenset({"event", "ts", "worker"})


def journal_path(directory: Path, worker: int) -> Path:
    """Where worker ``worker``'s journal lives in ``directory``."""
    return Path(directory) / f"journal-{worker}.jsonl"


def _encode(rec: dict[str, Any]) -> bytes:
    body = json.dumps(rec, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
    return b"%s%08x%s%s}\n" % (_PREFIX, zlib.crc32(body), _MIDDLE, body)


def _decode(line: bytes) -> dict[str, Any] | None:
    """The event of one line (without its newline), or None if the line is damaged."""
    if not (line.startswith(_PREFIX) and line[_CRC_AT + 8 : _REC_AT] == _MIDDLE):
        return None
    if not line.endswith(b"}"):
        return None
    body = line[_REC_AT:-1]
    try:
        crc = int(line[_CRC_AT : _CRC_AT + 8], 16)
    except ValueError:
        return None
    if zlib.crc32(body) != crc:
        return None
    try:
        rec = json.loads(body)
    except ValueError:
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("event"), str):
        return None
    return rec


def _parse(path: Path, data: bytes) -> tuple[list[dict[str, Any]], int, bool]:
    """(events, length of the good prefix, whether a torn last line was dropped)."""
    events: list[dict[str, Any]] = []
    pos = 0
    lineno = 0
    n = len(data)
    while pos < n:
        nl = data.find(b"\n", pos)
        lineno += 1
        if nl < 0:  # no newline: an append that never completed, whatever its bytes say
            return events, pos, True
        rec = _decode(data[pos:nl])
        if rec is None:
            if nl + 1 == n:  # the last line: a torn append
                return events, pos, True
            raise BackupCorrupt(
                f"{path}: line {lineno} (offset {pos}) is damaged (checksum mismatch or "
                "garbled) and later lines exist",
                path=path,
                offset=pos,
            )
        events.append(rec)
        pos = nl + 1
    return events, pos, False


class Journal:
    """One worker's journal. Reading methods re-read the file each call (it is small).

    The file is opened for writing lazily, on the first :meth:`append`, which takes an
    exclusive ``flock`` (a second live writer for the same worker is refused with
    :class:`~rvlm.core.storage.files.BackupBusy`) and cuts off a torn last line left by a crash.
    """

    def __init__(self, directory: Path, worker: int) -> None:
        if isinstance(worker, bool) or not isinstance(worker, int) or worker < 0:
            raise ValueError(f"worker must be a non-negative int, got {worker!r}")
        self.directory = Path(directory)
        self.worker = worker
        self.path = journal_path(self.directory, worker)
        self._fd = -1
        self._unsynced = False
        self._writes = 0  # appends so far (sync() knows whether one came after its fsync)
        # the executor appends from two threads (batch_started after a backup's fsync,
        # batch_done after a batch's writes): one append (and its fsync) at a time
        self._lock = threading.Lock()
        #: True if the last read found (and ignored) a torn last line.
        self.torn_tail = False

    def _open_for_append(self) -> None:
        created = not self.path.exists()
        # never through a symbolic link (the backup dir's own file, or none)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BackupBusy(f"{self.path} is open for writing by another process") from None
            data = _read_all(fd)
            _events, good, _torn = _parse(self.path, data)
            if good != len(data):
                os.ftruncate(fd, good)
                os.fsync(fd)
            if created:
                fsync_directory(self.directory)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def append(self, event: str, *, sync: bool = True, **data: Any) -> dict[str, Any]:
        """Write one event and fsync it; returns the event dict as written.

        ``sync=False`` writes without the fsync: the event becomes durable with the next
        synced append (an fsync covers every earlier write to the file) or :meth:`close`.
        Only for events whose loss a resume tolerates (the executor's ``batch_done``: a
        batch not marked done is restored from its backup and redone).

        ``event`` must be in :data:`EVENTS`; ``phase`` needs ``value`` in :data:`PHASES`,
        ``batch_started``/``batch_done`` need an int ``batch``. ``data`` must be
        JSON-serialisable and must not use the reserved names ``event``, ``ts``, ``worker``.
        """
        _validate(event, data)
        with self._lock:
            rec: dict[str, Any] = {"event": event, **data, "ts": time.time(),
                                   "worker": self.worker}
            line = _encode(rec)
            if self._fd < 0:
                self._open_for_append()
            view = memoryview(line)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if sync:
                os.fsync(self._fd)
            self._unsynced = not sync
            self._writes += 1
        if event == "phase":
            LOG.info("phase %s", data["value"])
        elif event == "error":
            LOG.info("journaled error: %s", data.get("message", ""))
        else:
            LOG.debug("%s %s", event.replace("_", " "), data.get("batch"))
        return rec

    def sync(self) -> None:
        """Make every event appended so far durable (one ``fsync``), without holding up
        appends from other threads while it runs. Nothing to do if the file is not open."""
        with self._lock:
            fd, writes = self._fd, self._writes
        if fd < 0:
            return
        os.fsync(fd)
        with self._lock:
            if self._writes == writes and self._fd == fd:
                self._unsynced = False

    def events(self) -> list[dict[str, Any]]:
        """Every acknowledged event, oldest first (a torn last line is left out)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        events, _good, self.torn_tail = _parse(self.path, data)
        return events

    def phase(self) -> str | None:
        """The value of the last ``phase`` event, or None if there is none."""
        for rec in reversed(self.events()):
            if rec["event"] == "phase":
                return str(rec.get("value"))
        return None

    def batches_started(self) -> set[int]:
        """Batch numbers with a ``batch_started`` event."""
        return {int(r["batch"]) for r in self.events() if r["event"] == "batch_started"}

    def batches_done(self) -> set[int]:
        """Batch numbers with a ``batch_done`` event."""
        return {int(r["batch"]) for r in self.events() if r["event"] == "batch_done"}

    def close(self) -> None:
        """Close the file if it was opened for appending (releasing the lock). Idempotent."""
        with self._lock:
            if self._fd >= 0:
                fd, self._fd = self._fd, -1
                try:
                    if self._unsynced:
                        os.fsync(fd)
                finally:
                    self._unsynced = False
                    os.close(fd)

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks = []
    pos = 0
    while pos < size:
        chunk = os.pread(fd, size - pos, pos)
        if not chunk:
            break
        chunks.append(chunk)
        pos += len(chunk)
    return b"".join(chunks)


def _validate(event: str, data: dict[str, Any]) -> None:
    if event not in EVENTS:
        raise ValueError(f"unknown journal event {event!r} (known: {', '.join(EVENTS)})")
    reserved = _RESERVED.intersection(data)
    if reserved:
        raise ValueError(f"reserved journal field(s): {', '.join(sorted(reserved))}")
    if event == "phase" and data.get("value") not in PHASES:
        raise ValueError(f"unknown phase {data.get('value')!r} (known: {', '.join(PHASES)})")
    if event in ("batch_started", "batch_done", "batch_lost"):
        batch = data.get("batch")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
            raise ValueError(f"{event} needs a non-negative int batch, got {batch!r}")
    if event == "error" and not isinstance(data.get("message"), str):
        raise ValueError("error needs a str message")


@attrs.frozen
class RunState:
    """Where a migration stands, from every worker's journal in a directory.

    ``phase`` is the value of the most recent ``phase`` event across all journals (by ``ts``,
    then worker, then position), None if none. ``done`` holds batches whose latest
    ``batch_done`` / ``batch_lost`` event (same order) is a ``batch_done``;
    ``started_not_done`` those started but not done: on resume their originals must be restored
    from the backup before they are redone. ``server`` is the latest ``server`` event (its
    ``run_id`` and ``uptime_s``), or None.
    """

    phase: str | None
    done: frozenset[int]
    started_not_done: frozenset[int]
    errors: tuple[dict[str, Any], ...]
    workers: tuple[int, ...]
    server: dict[str, Any] | None = None
    #: batch -> the ``rewritten`` of its latest ``batch_done`` (a redo that wrote other values
    #: than its backup records say), when that event has one
    rewritten: dict[int, dict[str, Any]] = attrs.field(factory=dict)

    @property
    def started(self) -> frozenset[int]:
        """Every batch journaled as started, done or not: each must be in the backup."""
        return self.done | self.started_not_done

    def reached(self, phase: str) -> bool:
        """True when the run's last phase is ``phase`` or one after it in :data:`PHASES`."""
        current = self.phase
        return current is not None and current in _PHASE_ORDER \
            and _PHASE_ORDER[current] >= _PHASE_ORDER[phase]

    @classmethod
    def load(cls, directory: Path) -> RunState:
        """Read every ``journal-*.jsonl`` in ``directory``; ``BackupCorrupt`` on damage."""
        directory = Path(directory)
        workers = sorted(
            int(m.group(1)) for p in directory.iterdir() if (m := _JOURNAL_RE.match(p.name))
        )
        last_phase: tuple[float, int, int, str] | None = None
        last_server: tuple[float, int, int] | None = None
        server: dict[str, Any] | None = None
        started: set[int] = set()
        # batch -> (ts, worker, position, done?) of its latest batch_done / batch_lost
        outcome: dict[int, tuple[float, int, int, bool]] = {}
        rewritten: dict[int, tuple[tuple[float, int, int], dict[str, Any] | None]] = {}
        errors: list[dict[str, Any]] = []
        for w in workers:
            for i, rec in enumerate(Journal(directory, w).events()):
                kind = rec["event"]
                if kind == "phase":
                    key = (float(rec.get("ts", 0.0)), w, i, str(rec.get("value")))
                    if last_phase is None or key > last_phase:
                        last_phase = key
                elif kind == "batch_started":
                    started.add(int(rec["batch"]))
                elif kind in ("batch_done", "batch_lost"):
                    b = int(rec["batch"])
                    mark = (float(rec.get("ts", 0.0)), w, i, kind == "batch_done")
                    if b not in outcome or mark > outcome[b]:
                        outcome[b] = mark
                    if kind == "batch_done" and (b not in rewritten or mark[:3] > rewritten[b][0]):
                        rewritten[b] = (mark[:3], rec.get("rewritten"))
                    if kind == "batch_lost":
                        started.add(b)
                elif kind == "server":
                    at = (float(rec.get("ts", 0.0)), w, i)
                    if last_server is None or at > last_server:
                        last_server, server = at, rec
                elif kind == "error":
                    errors.append(rec)
        done = {b for b, mark in outcome.items() if mark[3]}
        return cls(
            phase=last_phase[3] if last_phase else None,
            done=frozenset(done),
            started_not_done=frozenset((started | set(outcome)) - done),
            errors=tuple(errors),
            workers=tuple(workers),
            server=server,
            rewritten={b: r for b, (_at, r) in rewritten.items() if r and b in done},
        )


def phase_data(directory: Path, phase: str) -> dict[str, Any]:
    """The last ``phase`` event with value ``phase`` in the coordinator's journal
    (``journal-0.jsonl``), or {}: the data a run journaled with that phase."""
    for rec in reversed(Journal(directory, 0).events()):
        if rec["event"] == "phase" and rec.get("value") == phase:
            return rec
    return {}
