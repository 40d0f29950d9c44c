"""Every target document checked against the transform of its source, before the alias moves.

:func:`verify_targets` goes through every source key the run copied or carried over, a step
at a time (memory: a few steps), in a thread of its own while the engine's thread keeps
carrying changes over, so no change waits behind the check. A step reads the sources and
their target keys whole (``HGETALL`` or ``JSON.GET``, and ``PEXPIRETIME``: one pipeline, one
round trip, :meth:`~rvlm.core.migrate.online.mirror.Mirror.read_with_targets`), transforms
the sources (the plan's operations, :class:`~rvlm.core.migrate.online.mirror.Mirror`) and
compares what each target must hold with what it holds (:func:`outcome`, by
:func:`~rvlm.core.redis.copyio.same`): every hash field byte for byte and no other field, or
the JSON document (floats up to the last bits RedisJSON reads back differently), and the
absolute expiry. A source key that is gone, or no document any more, must have no target key.
The comparison is client-side: the server only reads (no script, no digest), so the check
takes little of Redis's one thread, which the clients' queries and the target's build share.

Which keys: the key file of this run's copy and ``written.keys`` (the keys carried over),
checked whole. A resumed run also has the key files of earlier copies; a key of those that is
still a document of the source is in this run's key file or in ``written.keys`` (this run
enumerated the source after subscribing: a key created since was carried over), so it is
checked there, once; of the others only that their source is gone and their target with it
(``TYPE`` and ``EXISTS``).

A target that differs is not necessarily wrong: its source may have been written a moment
ago, the change not carried over yet. So the engine's thread checks it again at once (a
change carried over since the step read it may have set it right), then, after a capture
barrier (every event published before it is in the backlog), a differing key with a change
in the backlog is left to forwarding; any other is **copied again** and checked once more.
Copying again, not stopping: the source is the truth and still serves, so a copy made again
from it is exactly what the target must hold (a resume would do the same); the report names
the keys (someone wrote the target prefix, or the server lost writes). A key that still
differs after being copied again, with no change of its source in flight, fails the check:
the alias stays on the source. A JSON target whose plan edits paths the client cannot apply
itself (the server applies them after the root) cannot be compared here and is counted as
unchecked.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from rvlm.core.errors import MigrationFailed
from rvlm.core.migrate.online.capture import WRITTEN_NAME, key_files
from rvlm.core.migrate.online.copier import OnlineCopy
from rvlm.core.migrate.online.mirror import Mirror
from rvlm.core.plugins.checks import CheckResult
from rvlm.core.redis import wire
from rvlm.core.redis.copyio import TargetDoc, read_targets, same
from rvlm.core.redis.docio.verify import CHANGED, GONE, OK, UNCHECKED
from rvlm.core.redis.resp import to_int, to_str
from rvlm.core.storage.keyfile import KeyFileReader
from rvlm.core.storage.keylog import KeyLog

#: Keys named in a check's details.
SHOWN = 5
#: An outcome of :func:`check_targets` besides docio's: a target key that must not exist does.
EXTRA = "extra"


@attrs.define
class TargetsVerified:
    """The outcome of :func:`verify_targets`."""

    checked: int = 0
    ok: int = 0
    in_flight: int = 0
    recopied: int = 0
    unchecked: int = 0
    failed: int = 0
    recopied_keys: list[bytes] = attrs.field(factory=list)
    failed_keys: list[bytes] = attrs.field(factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.failed == 0

    def check(self) -> CheckResult:
        """The ``documents`` check of the gate before the alias moves."""
        shown = ", ".join(repr(to_str(k)) for k in self.recopied_keys)
        if not self.passed:
            return CheckResult(
                name="documents", passed=False,
                details=f"{self.failed:,} of {self.checked:,} target keys checked still differ "
                        "from the transform of their source after being copied again (e.g. "
                        f"{', '.join(repr(to_str(k)) for k in self.failed_keys)}); the alias "
                        "stays on the source: something else writes the target prefix")
        details = (f"{self.ok:,} target keys checked hold the transform of their source "
                   "(digest of every field, no other field, expiry; a key also carried over "
                   "is checked again)")
        if self.recopied:
            details += (f"; {self.recopied:,} differed and were copied again from their "
                        f"source (e.g. {shown})")
        if self.in_flight:
            details += f"; {self.in_flight:,} had a change being carried over"
        if self.unchecked:
            details += (f"; {self.unchecked:,} JSON documents with server-side path edits "
                        "were not checked")
        return CheckResult(name="documents", passed=True, details=details)


def outcome(want: TargetDoc, have: TargetDoc | None) -> str:
    """Whether a target key read back (``have``; None: no such key) holds ``want``: ``ok``,
    ``changed``, ``gone``, or ``unchecked`` (a JSON copy with edits the server applies)."""
    if have is None:
        return GONE
    if want.edits:
        return UNCHECKED
    return OK if same(want, have) else CHANGED


def check_targets(client: Any, storage: str, docs: list[TargetDoc], absent: list[bytes],
                  have: Mapping[bytes, TargetDoc | None] | None = None
                  ) -> tuple[list[str], list[str]]:
    """The :func:`outcome` of each of ``docs`` and of each key of ``absent`` (``ok``: no such
    key, or :data:`EXTRA`). ``have``: target keys already read back
    (:meth:`~rvlm.core.migrate.online.mirror.Mirror.read_with_targets`); the others are read
    here, in one round trip."""
    got = dict(have or {})
    missing = [k for k in dict.fromkeys([*(d.key for d in docs), *absent]) if k not in got]
    if missing:
        got.update(zip(missing, read_targets(client, storage, missing), strict=True))
    outcomes = [outcome(d, got[d.key]) for d in docs]
    gone = ["ok" if got[k] is None else EXTRA for k in absent]
    return outcomes, gone


def _bad_sources(client: Any, mirror: Mirror, keys: list[bytes]
                 ) -> tuple[list[bytes], int, int]:
    """Read ``keys`` of the source and their targets, transform, compare: (source keys whose
    target differs, documents checked, unchecked)."""
    sources, have = mirror.read_with_targets(client, keys)
    docs, deletes = mirror.targets(sources)
    outcomes, extra = check_targets(client, mirror.target_storage, docs, deletes, have)
    bad_targets = {d.key for d, o in zip(docs, outcomes, strict=True)
                   if o in (CHANGED, GONE)}
    bad_targets.update(k for k, o in zip(deletes, extra, strict=True) if o == EXTRA)
    unchecked = sum(1 for o in outcomes if o == UNCHECKED)
    if not bad_targets:
        return [], len(docs) + len(deletes) - unchecked, unchecked
    targets = [mirror.target_key(k) for k in keys]
    if not bad_targets.issubset(targets):  # a plugin's own key: redo the batch
        bad = list(keys)
    else:  # in the order of the keys
        bad = [k for k, t in zip(keys, targets, strict=True) if t in bad_targets]
    return bad, len(docs) + len(deletes) - unchecked, unchecked


#: The types of a source key that is a document (``TYPE``), by storage.
_DOCUMENT_TYPE = {"hash": b"hash", "json": b"ReJSON-RL"}


def _stray_targets(client: Any, mirror: Mirror, keys: list[bytes]) -> tuple[list[bytes], int]:
    """Of ``keys`` (an earlier copy's), those whose source is no document and whose target
    key exists (source keys), and how many sources are no document (their targets checked
    here; a key still a document is checked with this run's keys)."""
    want = _DOCUMENT_TYPE.get(mirror.source_storage, b"hash")
    targets = [mirror.target_key(k) for k in keys]
    replies = wire.execute(client, [*((b"TYPE", k) for k in keys),
                                    *((b"EXISTS", t) for t in targets)])
    types, exist = replies[:len(keys)], replies[len(keys):]
    gone = [i for i, t in enumerate(types) if _type_name(t) != want]
    return [keys[i] for i in gone if to_int(exist[i], 1)], len(gone)


def _type_name(reply: Any) -> bytes:
    if isinstance(reply, Exception):
        raise MigrationFailed(f"TYPE failed: {reply}")
    return reply if isinstance(reply, bytes) else str(reply).encode()


def keys_to_check(directory: Path, chunk: int
                  ) -> tuple[Iterator[list[bytes]], Iterator[list[bytes]]]:
    """The source keys :func:`verify_targets` checks, in chunks: (those checked whole: the
    last copy's key file, then ``written.keys``; those of earlier copies' key files)."""
    files = key_files(Path(directory))

    def whole() -> Iterator[list[bytes]]:
        yield from _file_keys(files[-1:], chunk)
        yield from KeyLog(Path(directory) / WRITTEN_NAME).iter_keys(chunk)

    return whole(), _file_keys(files[:-1], chunk)


def _file_keys(paths: list[Path], chunk: int) -> Iterator[list[bytes]]:
    for path in paths:
        with KeyFileReader(path, verify=False) as reader:
            yield from reader.iter_batches(chunk)


def _steps(source_keys: Iterable[list[bytes]], earlier: Iterable[list[bytes]], size: int
           ) -> Iterator[tuple[list[bytes], bool]]:
    """``source_keys`` then ``earlier`` again, in steps of ``size`` keys (across their
    chunks; the last of each shorter), each without repeats, each with whether its keys are
    checked whole."""
    for chunks, whole in ((source_keys, True), (earlier, False)):
        step: dict[bytes, None] = {}
        for chunk in chunks:
            for key in chunk:
                step[key] = None
                if len(step) == size:
                    yield list(step), whole
                    step = {}
        if step:
            yield list(step), whole


#: The interpreter's thread switch interval while the check runs (default 5 ms): a forward
#: pass takes the GIL back after each of its round trips; the checking thread, busy reading
#: and transforming, holds it until asked to let go.
SWITCH_SECONDS = 0.0005
#: Keys per step of the checking thread. A forward pass waits for the step's operations to
#: end (they run one at a time, :meth:`~rvlm.core.migrate.online.mirror.Mirror.another`):
#: 150 keys of 384-d vectors take a few ms (bench/online.py 30K x 384-d FLAT, load 4: lag p99
#: 64-69 ms, max 86-98 ms against 86-112 and 182-239 with steps of 500; the check as long).
STEP = 150
#: Steps the checking thread may be ahead of the engine thread's handling of what it found.
AHEAD = 4


def verify_targets(engine: OnlineCopy, source_keys: Iterable[list[bytes]],
                   earlier: Iterable[list[bytes]] = ()) -> TargetsVerified:
    """Check (and where needed copy again) the target of every key of ``source_keys``, and
    that no key of ``earlier`` whose source is gone has a target (see the module docstring,
    and :func:`keys_to_check`).

    The reading and comparing runs in a thread of its own, in steps of :data:`STEP` keys
    (it only reads; memory: a few steps), while the engine's thread goes on carrying changes
    over (:meth:`~rvlm.core.migrate.online.copier.OnlineCopy.forward_during`), so no change
    waits behind a step of the check; between two forward passes the engine's thread takes
    what the check found: the keys that differ are checked again at once (a change carried
    over meanwhile may have made them right), then, after a capture barrier, left to
    forwarding when a change of theirs is in flight, else copied again and checked once more.
    The engine's thread stays the one writer of target keys."""
    started = time.perf_counter()
    out = TargetsVerified()
    seen_recopied: set[bytes] = set()
    found: queue.Queue[list[bytes]] = queue.Queue(maxsize=AHEAD)
    stop = threading.Event()
    mirror = engine.mirror.another()

    def check() -> None:  # the checking thread: reads only
        for keys, whole in _steps(source_keys, earlier, min(STEP, engine.batch_size)):
            while engine.throttled is not None and not stop.is_set():
                time.sleep(0.05)
            if stop.is_set():
                return
            if whole:
                bad, checked, unchecked = _bad_sources(engine.client, mirror, keys)
            else:
                (bad, checked), unchecked = _stray_targets(engine.client, mirror, keys), 0
            out.checked += checked
            out.unchecked += unchecked
            while bad and not stop.is_set():
                try:
                    found.put(bad, timeout=0.05)
                    break
                except queue.Full:
                    continue

    def settle() -> None:  # the engine's thread: what the check found (not while throttled)
        while engine.throttled is None:
            try:
                seen = found.get_nowait()
            except queue.Empty:
                return
            bad, _n, _u = _bad_sources(engine.client, engine.mirror, seen)
            out.in_flight += len(seen) - len(bad)
            if bad:
                for sub in engine.subscribers:
                    sub.barrier()
                flying = engine.pending.holds(bad)
                out.in_flight += len(flying)
                bad = [k for k in bad if k not in flying]
            if not bad:
                continue
            engine.copy_keys(bad)
            fresh = [k for k in bad if k not in seen_recopied]
            seen_recopied.update(fresh)
            out.recopied += len(fresh)
            out.recopied_keys += [engine.mirror.target_key(k) for k in fresh][
                :max(0, SHOWN - len(out.recopied_keys))]
            still, _n, _u = _bad_sources(engine.client, engine.mirror, bad)
            if still:
                for sub in engine.subscribers:
                    sub.barrier()
                flying = engine.pending.holds(still)
                still = [k for k in still if k not in flying]
            out.failed += len(still)
            out.failed_keys += [engine.mirror.target_key(k) for k in still][
                :max(0, SHOWN - len(out.failed_keys))]

    switch = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_SECONDS)
    try:
        engine.forward_during(check, between=settle, stop=stop)
    finally:
        sys.setswitchinterval(switch)
    while not found.empty():
        engine.wait_while_throttled()
        settle()
    out.ok = out.checked - out.recopied - out.in_flight
    out.seconds = time.perf_counter() - started
    return out


__all__ = ["EXTRA", "TargetsVerified", "check_targets", "keys_to_check", "outcome",
           "verify_targets"]
