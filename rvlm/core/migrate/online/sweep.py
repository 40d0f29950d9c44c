"""Deletes made while no change capture ran, once a finalize has begun: which targets go.

Between two commands of an online run (an apply that stopped, a finalize that failed or ended
before a late write, and the next ``rvlm finalize``) no change capture runs, so a client's
``DEL`` of a source key (or its expiry) reaches no target. The next command subscribes first,
then sweeps: every source key the run copied or carried over (its key files and written log,
:func:`~rvlm.core.migrate.online.capture.copied_source_keys`) that is gone has its target
deleted (:meth:`~rvlm.core.migrate.online.copier.OnlineCopy.sweep`).

Once the run has reached ``finalizing``, a gone source key may be one finalize itself backed
up and deleted, whose target must stay. :func:`sweep_after_finalize` therefore keeps the
target of a gone key that is in the finalize backup (``data-*.rvb``), unless the key is in
:class:`LeftKeys`: the source keys that stood once a finalize had made its last delete (the
keys it left in place because clients kept writing them, and the late writes found once its
capture stopped). No finalize deleted those since (each finalize forgets the list, durably,
before its first delete), so if one is gone now a client deleted it, or it expired: its
target goes.

Both sets are looked up per chunk in :class:`~rvlm.core.storage.keyset.KeySet` files in the
backup dir (removed afterwards), so memory is bounded by the chunk, not by the number of keys.

What is still missed: a key finalize backed up and deleted, then recreated *and* deleted again
by a client, both after that finalize's last scan (so not in the list), keeps its pre-finalize
target; so does a key that finalize backed up but could not delete, when that finalize then
died (its list of keys left was never written) and a client deleted the key before the next
finalize.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path

import attrs

from rvlm.core.migrate.online.capture import copied_source_keys
from rvlm.core.migrate.online.copier import OnlineCopy
from rvlm.core.storage.backup.reader import BackupReader
from rvlm.core.storage.files import fsync_directory
from rvlm.core.storage.keylog import KeyLog
from rvlm.core.storage.keyset import KeySet

#: the source keys standing once a finalize stopped deleting (see the module docstring)
LEFT_NAME = "finalize-left.keys"
#: scratch sets of :func:`sweep_after_finalize`, removed when it ends
BACKED_UP_SET = "finalize-backed-up.sqlite"
LEFT_SET = "finalize-left.sqlite"


class LeftKeys:
    """The list of source keys that stood once a finalize had made its last delete, in the
    backup dir (an append-only :class:`~rvlm.core.storage.keylog.KeyLog`, fsynced)."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / LEFT_NAME

    def add(self, chunks: Iterable[list[bytes]]) -> int:
        """Append the keys (durable when it returns); returns how many."""
        log = KeyLog(self.path)
        n = 0
        try:
            for keys in chunks:
                n += len(keys)
                log.add(keys)
        finally:
            log.close()
        return n

    def exists(self) -> bool:
        return self.path.exists()

    def iter_keys(self, chunk: int) -> Iterator[list[bytes]]:
        return KeyLog(self.path).iter_keys(chunk)

    def forget(self) -> None:
        """Remove the list, durably (before a finalize deletes anything)."""
        if self.path.exists():
            self.path.unlink()
            fsync_directory(self.path.parent)


@attrs.define
class SweepResult:
    """What :func:`sweep_after_finalize` did: copied source keys checked (repeats
    included), those found gone, the targets kept (finalize deleted those keys) and deleted,
    the sizes of the two sets and of their files, the seconds spent building them and in
    all."""

    checked: int = 0
    gone: int = 0
    kept: int = 0
    deleted: int = 0
    backed_up_keys: int = 0
    left_keys: int = 0
    disk_bytes: int = 0
    build_seconds: float = 0.0
    seconds: float = 0.0


def sweep_after_finalize(engine: OnlineCopy, directory: Path,
                         fingerprint: str) -> SweepResult:
    """Delete the target of every copied source key that is gone, except those finalize
    backed up and deleted (see the module docstring). Change capture must run already."""
    directory = Path(directory)
    started = time.monotonic()
    out = SweepResult()
    left = LeftKeys(directory)
    chunk = max(1, engine.batch_size)
    with KeySet(directory / BACKED_UP_SET) as backed, KeySet(directory / LEFT_SET) as stood:
        reader = BackupReader(directory, fingerprint)
        for b in reader.batch_numbers():
            backed.add_many(ref[0] for ref in reader.written(b))
        for keys in left.iter_keys(chunk):
            stood.add_many(keys)
        out.backed_up_keys, out.left_keys = backed.added, stood.added
        out.disk_bytes = backed.path.stat().st_size + stood.path.stat().st_size
        out.build_seconds = round(time.monotonic() - started, 3)

        def keep(gone: list[bytes]) -> set[bytes]:
            out.gone += len(gone)
            stay = backed.members(gone)
            if stay and stood.added:
                stay -= stood.members(list(stay))
            out.kept += len(stay)
            return stay

        def every() -> Iterator[list[bytes]]:
            # the keys left may include some the run never wrote a target for (a late
            # write): deleting a target that does not exist is harmless
            for keys in chain(copied_source_keys(directory, chunk), left.iter_keys(chunk)):
                out.checked += len(keys)
                yield keys

        out.deleted = engine.sweep(every(), keep=keep)
    out.seconds = round(time.monotonic() - started, 3)
    return out


__all__ = ["BACKED_UP_SET", "LEFT_NAME", "LEFT_SET", "LeftKeys", "SweepResult",
           "sweep_after_finalize"]
