"""The keys change capture saw change and that are not carried over yet: deduplicated, oldest
first, with memory bounded.

Capture only needs to know *which* keys changed, not how: whoever takes a key re-reads it and
copies its current state (or deletes its copy), so many events on one key are one entry, and
the entry keeps the time of its oldest event (the lag of that key is measured from it).

Up to ``max_keys`` entries are held in memory (a dict in arrival order). Beyond that, new
entries go to a spill file in ``directory`` (4-byte length, key, 8-byte time per record), and
keep going there until the spill is drained, so entries come out in arrival order: memory
first, then the spill. Spilled entries are not deduplicated (that would need memory); a key
spilled twice is copied twice, which is harmless. Thread-safe: capture threads ``add``, the
copy loop ``take``\\ s.

:meth:`PendingKeys.discard` forgets every entry of a key that arrived so far, spilled ones
included, and none that arrives later. ``rvlm finalize`` relies on it: the event of its own
``DEL`` of a source key (and every older one, all covered by the value it carried over just
before) must never reach the forwarder, which would read the source as gone and delete the
target, a lost document. In memory the entry is simply removed. In the spill, records cannot
be found without reading the file, so the key is *marked* with the spill's end offset: a
record of the key before that offset is skipped when taken; one after it (a client's later
change) is not. Marks are bounded like the memory: past ``max_keys`` of them, one pass over
the unread spill overwrites the time of every marked record with NaN (skipped when taken) and
the marks are dropped; they are dropped too whenever the spill drains. ``len()`` counts a
skipped record until it is read past.

:meth:`PendingKeys.holds` answers for the spill too (the check before the cut-over leaves a
key whose change waits there to forwarding instead of copying it again): one pass over the
unread spill, read in chunks like the sweep, so memory stays the asked keys plus a chunk.
"""

from __future__ import annotations

import math
import struct
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

_TIME = struct.Struct("<d")
_DEAD = _TIME.pack(math.nan)
_SWEEP_CHUNK = 1 << 20
_LEN = struct.Struct("<I")


class PendingKeys:
    """See the module docstring. ``len()`` is the backlog (memory + spill)."""

    def __init__(self, directory: str | Path, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.directory = Path(directory)
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._arrived = threading.Event()
        self._memory: dict[bytes, float] = {}
        self._spill_path = self.directory / f".pending-{uuid.uuid4().hex}.spill"
        self._spill: BinaryIO | None = None  # the open file while anything is spilled
        self._spilled = 0  # records in the spill not taken yet
        self._read_at = 0
        self._write_at = 0
        #: key -> spill offset: the key's records before it are forgotten (see discard)
        self._marks: dict[bytes, int] = {}
        #: every ``add`` call (events received)
        self.received = 0
        #: records ever written to the spill file
        self.spilled_total = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._memory) + self._spilled

    def add(self, key: bytes, at: float) -> None:
        """Record that ``key`` changed at ``at`` (seconds, any monotonic clock)."""
        with self._lock:
            self.received += 1
            self._arrived.set()
            if key in self._memory:
                return  # the older time stays
            if self._spilled == 0 and len(self._memory) < self.max_keys:
                self._memory[key] = at
                return
            f = self._spill_file()
            f.seek(self._write_at)
            record = _LEN.pack(len(key)) + key + _TIME.pack(at)
            f.write(record)
            self._write_at += len(record)
            self._spilled += 1
            self.spilled_total += 1

    def _spill_file(self) -> BinaryIO:
        if self._spill is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._spill = open(self._spill_path, "w+b")  # noqa: SIM115
            self._read_at = 0
            self._write_at = 0
        return self._spill

    def take(self, limit: int) -> list[tuple[bytes, float]]:
        """Up to ``limit`` entries, oldest first, removed from the backlog."""
        out: list[tuple[bytes, float]] = []
        with self._lock:
            mem = self._memory
            while mem and len(out) < limit:
                key = next(iter(mem))
                out.append((key, mem.pop(key)))
            if len(out) < limit and self._spilled:
                f = self._spill_file()
                f.seek(self._read_at)
                marks = self._marks
                while self._spilled and len(out) < limit:
                    offset = f.tell()
                    (n,) = _LEN.unpack(f.read(_LEN.size))
                    key = f.read(n)
                    (at,) = _TIME.unpack(f.read(_TIME.size))
                    self._spilled -= 1
                    if math.isnan(at) or (marks and marks.get(key, -1) > offset):
                        continue  # forgotten (discard)
                    out.append((key, at))
                self._read_at = f.tell()
                if not self._spilled:  # drained: start the file over
                    f.seek(0)
                    f.truncate()
                    self._read_at = 0
                    self._write_at = 0
                    marks.clear()
            if not mem and not self._spilled:
                self._arrived.clear()
        return out

    def wait(self, timeout: float) -> bool:
        """Block until an entry may be waiting (or ``timeout`` seconds); True if one came."""
        return self._arrived.wait(timeout)

    def covered(self, keys: Iterable[bytes], before: float) -> int:
        """Forget the entries of ``keys`` whose oldest event came before ``before``: a read of
        those keys that started at ``before`` already saw those changes (a write's
        notification is published after the write). Returns how many were forgotten. Only
        in-memory entries are checked; a spilled one is copied again later (harmless)."""
        n = 0
        with self._lock:
            mem = self._memory
            for k in keys:
                at = mem.get(k)
                if at is not None and at < before:
                    del mem[k]
                    n += 1
        return n

    def holds(self, keys: Iterable[bytes]) -> set[bytes]:
        """Those of ``keys`` with an entry not taken yet (a change not carried over yet), in
        memory or in the spill; a spilled record that :meth:`discard` forgot does not count.
        Where some of ``keys`` are not in memory and anything is spilled, one pass over the
        unread spill (chunks, under the lock, stopping once every key is found): memory is
        ``keys`` plus a chunk. Meant for a few keys now and then (the check before the
        cut-over asks about the keys whose target differs), not for every change."""
        with self._lock:
            mem = self._memory
            wanted = set(keys)
            found = {k for k in wanted if k in mem}
            rest = wanted - found
            if rest and self._spilled:
                marks = self._marks
                for offset, key, at in self._unread():
                    if key in rest and not math.isnan(at) and marks.get(key, -1) <= offset:
                        found.add(key)
                        rest.discard(key)
                        if not rest:
                            break
            return found

    def discard(self, keys: Iterable[bytes]) -> None:
        """Forget every entry of ``keys`` that arrived so far, in memory and in the spill,
        whatever its time; a later one is kept (see the module docstring)."""
        with self._lock:
            for k in keys:
                self._memory.pop(k, None)
                if self._spilled:
                    self._marks[k] = self._write_at
            if len(self._marks) > self.max_keys:
                self._sweep()

    def _sweep(self) -> None:
        """Overwrite the time of every unread spilled record before its key's mark with NaN,
        then drop the marks (one pass over the unread spill, read in chunks; under the lock)."""
        f = self._spill_file()
        marks = self._marks
        for offset, key, _at in self._unread():
            if marks.get(key, -1) > offset:
                f.seek(offset + _LEN.size + len(key))
                f.write(_DEAD)
        marks.clear()

    def _unread(self) -> Iterator[tuple[int, bytes, float]]:
        """``(offset, key, time)`` of every unread spilled record, in order, the file read in
        chunks of :data:`_SWEEP_CHUNK` (memory: one chunk). Under the lock; the caller may
        write into records already yielded between two of them."""
        f = self._spill_file()
        base = self._read_at  # the file offset of buf[0]
        buf = b""
        while base + len(buf) < self._write_at:
            f.seek(base + len(buf))
            buf += f.read(min(_SWEEP_CHUNK, self._write_at - base - len(buf)))
            i = 0
            while i + _LEN.size <= len(buf):
                (n,) = _LEN.unpack_from(buf, i)
                end = i + _LEN.size + n + _TIME.size
                if end > len(buf):
                    break
                (at,) = _TIME.unpack_from(buf, end - _TIME.size)
                yield base + i, buf[i + _LEN.size:end - _TIME.size], at
                i = end
            buf, base = buf[i:], base + i

    def oldest(self) -> float | None:
        """The time of the oldest entry in memory (None when memory is empty)."""
        with self._lock:
            return next(iter(self._memory.values()), None)

    def close(self) -> None:
        """Drop the spill file (entries still in it are lost: call at the end of a run)."""
        with self._lock:
            if self._spill is not None:
                self._spill.close()
                self._spill = None
            self._spill_path.unlink(missing_ok=True)
            self._spilled = 0
            self._marks.clear()
