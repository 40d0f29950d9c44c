"""Every target document checked against the transform of its source, before the alias moves.

The same machinery as ``drop_recreate``'s verification pass (:mod:`rvlm.core.migrate.verify`,
#12): a digest of what a document must hold (:func:`~rvlm.core.redis.docio.verify.written_of`)
compared with the digest the server holds (:func:`~rvlm.core.redis.docio.verify.check_written`:
for hashes the server takes the digests itself, the documents never travel). What the digest
is taken of differs: here the *whole* target document (every hash field, or the JSON root),
since the target key is new, plus what a digest of named fields cannot see: no extra hash
field (``HLEN``) and the absolute expiry (``PEXPIRETIME``). A source key that is gone, or no
document any more, must have no target key.

:func:`verify_targets` goes through every source key the run copied or carried over (the key
files and ``written.keys``, :func:`~rvlm.core.migrate.online.capture.copied_source_keys`),
step by step (memory bounded by the batch; a step takes as many keys as fit in the engine's
``step_seconds``, fewer for large vectors): read the sources, transform them
(:class:`~rvlm.core.migrate.online.mirror.Mirror`, the plan's operations), check the targets.
Changes keep being carried over between steps.

A target that differs is not necessarily wrong: its source may have been written a moment
ago, the change not carried over yet. So after a capture barrier (every event published
before it is in the backlog), a differing key with a change in the backlog is left to
forwarding; any other is **copied again** and checked once more. Copying again, not stopping:
the source is the truth and still serves, so a copy made again from it is exactly what the
target must hold (a resume would do the same); the report names the keys (someone wrote the
target prefix, or the server lost writes). A key that still differs after being copied again,
with no change of its source in flight, fails the check: the alias stays on the source.
A JSON target whose plan edits paths the client cannot apply itself (the server applies them
after the root) cannot be digested here and is counted as unchecked.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, cast

import attrs

from rvlm.core.migrate.online.copier import OnlineCopy
from rvlm.core.plugins.checks import CheckResult
from rvlm.core.redis import wire
from rvlm.core.redis.copyio import TargetDoc
from rvlm.core.redis.docio.verify import CHANGED, GONE, OK, UNCHECKED, check_written, written_of
from rvlm.core.redis.docio.write import KeyWrite
from rvlm.core.redis.resp import to_int, to_str
from rvlm.core.storage.backup.records import WrittenRef

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


def expected_ref(doc: TargetDoc) -> WrittenRef:
    """The digest record of what ``doc``'s key must hold (``None`` digest: not checkable)."""
    if doc.storage == "json":
        if doc.edits:
            return (doc.key, None, True, None)
        w = KeyWrite(key=doc.key, set={}, delete=(), replace=doc.document, converts_to="json")
        return (doc.key, None, True, written_of("json", w))
    fields = cast(dict[str, Any], dict(doc.fields or {}))  # bytes names: digested as they are
    w = KeyWrite.edit(doc.key, fields, (), None)
    return (doc.key, None, False, written_of("hash", w))


def check_targets(client: Any, storage: str, docs: list[TargetDoc],
                  absent: list[bytes]) -> tuple[list[str], list[str]]:
    """The outcome of each of ``docs`` (``ok``, ``changed``, ``gone``, ``unchecked``) and of
    each key of ``absent`` (``ok``: no such key, or :data:`EXTRA`)."""
    refs = [expected_ref(d) for d in docs]
    outcomes = check_written(client, refs, storage) if refs else []
    commands: list[tuple[Any, ...]] = []
    for d in docs:
        if d.storage == "hash":
            commands.append((b"HLEN", d.key))
        commands.append((b"PEXPIRETIME", d.key))
    commands += [(b"EXISTS", k) for k in absent]
    replies = iter(wire.execute(client, commands))
    for i, d in enumerate(docs):
        count = next(replies) if d.storage == "hash" else None
        at = next(replies)
        if outcomes[i] != OK:
            continue
        if count is not None and to_int(count, -1) != len(d.fields or {}):
            outcomes[i] = CHANGED  # a field the copy does not have
        elif to_int(at, -3) != d.expire_at:
            outcomes[i] = CHANGED  # another expiry
    gone = ["ok" if not to_int(next(replies), 0) else EXTRA for _ in absent]
    return outcomes, gone


def _bad_sources(engine: OnlineCopy, keys: list[bytes]) -> tuple[list[bytes], int, int]:
    """Read ``keys`` of the source, transform, check their targets: (source keys whose target
    differs, documents checked, unchecked)."""
    mirror = engine.mirror
    sources = mirror.read(engine.client, keys)
    docs, deletes = mirror.targets(sources)
    outcomes, extra = check_targets(engine.client, mirror.target_storage, docs, deletes)
    bad_targets = {d.key for d, o in zip(docs, outcomes, strict=True)
                   if o in (CHANGED, GONE)}
    bad_targets.update(k for k, o in zip(deletes, extra, strict=True) if o == EXTRA)
    unchecked = sum(1 for o in outcomes if o == UNCHECKED)
    if not bad_targets:
        return [], len(docs) + len(deletes) - unchecked, unchecked
    by_target = {mirror.target_key(k): k for k in keys}
    if any(t not in by_target for t in bad_targets):  # a plugin's own key: redo the batch
        bad = list(keys)
    else:
        bad = [by_target[t] for t in bad_targets]
    return bad, len(docs) + len(deletes) - unchecked, unchecked


def _steps(engine: OnlineCopy, source_keys: Iterable[list[bytes]]) -> Iterator[list[bytes]]:
    """``source_keys`` again, in steps of ``engine.check_step`` keys (sized by time: a step
    of large vectors takes fewer keys), each without repeats."""
    for chunk in source_keys:
        keys = list(dict.fromkeys(chunk))
        i = 0
        while i < len(keys):
            step = keys[i:i + engine.check_step.size]
            i += len(step)
            yield step


def verify_targets(engine: OnlineCopy, source_keys: Iterable[list[bytes]]) -> TargetsVerified:
    """Check (and where needed copy again) the target of every key of ``source_keys`` (see
    the module docstring). Runs on the engine's thread: the one writer of target keys."""
    started = time.perf_counter()
    out = TargetsVerified()
    seen_recopied: set[bytes] = set()
    for keys in _steps(engine, source_keys):
        engine.wait_while_throttled()
        step_started = time.monotonic()
        bad, checked, unchecked = _bad_sources(engine, keys)
        engine.check_step.took(time.monotonic() - step_started, len(keys))
        out.checked += checked
        out.unchecked += unchecked
        if bad:
            for sub in engine.subscribers:
                sub.barrier()
            flying = engine.pending.holds(bad)
            out.in_flight += len(flying)
            bad = [k for k in bad if k not in flying]
        if bad:
            engine.copy_keys(bad)
            fresh = [k for k in bad if k not in seen_recopied]
            seen_recopied.update(fresh)
            out.recopied += len(fresh)
            out.recopied_keys += [engine.mirror.target_key(k) for k in fresh][
                :max(0, SHOWN - len(out.recopied_keys))]
            still, _n, _u = _bad_sources(engine, bad)
            if still:
                for sub in engine.subscribers:
                    sub.barrier()
                flying = engine.pending.holds(still)
                still = [k for k in still if k not in flying]
            out.failed += len(still)
            out.failed_keys += [engine.mirror.target_key(k) for k in still][
                :max(0, SHOWN - len(out.failed_keys))]
        engine.tick()
        engine.forward()
    out.ok = out.checked - out.recopied - out.in_flight
    out.seconds = time.perf_counter() - started
    return out


__all__ = ["EXTRA", "TargetsVerified", "check_targets", "expected_ref", "verify_targets"]
