"""Reading every worker's backup data file of a backup dir, each payload verified when read.

See :mod:`rvlm.core.storage.backup` for the format and what counts as a torn tail.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import attrs

from rvlm.core.storage.backup.frames import (
    DATA_FILE_RE,
    FRAME_SIZE,
    FrameRef,
    TornTail,
    scan_file,
)
from rvlm.core.storage.backup.records import (
    BackupRecord,
    WrittenRef,
    decode_records,
    decode_written,
)
from rvlm.core.storage.files import BackupCorrupt

log = logging.getLogger(__name__)
_T = TypeVar("_T")


@attrs.frozen
class _Located:
    path: Path
    ref: FrameRef


class BackupReader:
    """Reads every worker's data file in ``directory``.

    Opening validates each file's header and frame headers (the plan fingerprint must equal
    ``plan_fingerprint`` if given, else all files must agree) and keeps one small index entry
    per batch. Payloads are checksum-verified each time they are read: any damage raises
    :class:`BackupCorrupt` naming file, batch and offset. A torn tail is skipped (logged,
    listed in :attr:`torn_tails`) unless ``strict=True``, which refuses it.

    The same batch number in two frames is accepted only if both payloads are identical
    (a resume that backed a batch up twice); otherwise :class:`BackupCorrupt`.
    """

    def __init__(
        self, directory: Path, plan_fingerprint: str | None = None, *, strict: bool = False
    ) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"backup directory {self.directory} does not exist")
        self.torn_tails: list[TornTail] = []
        self._index: dict[int, _Located] = {}
        self._bytes = 0
        self._files: list[Path] = []
        self.plan_fingerprint = plan_fingerprint
        for path, worker in self._data_files():
            with open(path, "rb") as f:
                scan = scan_file(path, f.fileno(), self.plan_fingerprint, worker)
            if self.plan_fingerprint is None:  # the first file decides; the others must agree
                self.plan_fingerprint = scan.fingerprint
            if scan.torn is not None:
                if strict:
                    raise BackupCorrupt(scan.torn.message(), path=path, offset=scan.torn.offset)
                # whether that batch was applied only the journal can tell: the caller checks
                # (require), so nothing is said here that may not be true
                log.debug("%s", scan.torn.message())
                self.torn_tails.append(scan.torn)
            for ref in scan.frames:
                self._add(path, ref)
            self._files.append(path)
            self._bytes += scan.size

    def _data_files(self) -> list[tuple[Path, int]]:
        found = []
        for p in self.directory.iterdir():
            m = DATA_FILE_RE.match(p.name)
            if m and p.is_file():
                found.append((p, int(m.group(1))))
        return sorted(found, key=lambda t: t[1])

    def _add(self, path: Path, ref: FrameRef) -> None:
        prev = self._index.get(ref.batch)
        if prev is None:
            self._index[ref.batch] = _Located(path, ref)
            return
        if (
            prev.ref.length == ref.length
            and prev.ref.crc == ref.crc
            and prev.ref.records == ref.records
            and self._payload(prev) == self._payload(_Located(path, ref))
        ):
            return  # identical duplicate: harmless
        raise BackupCorrupt(
            f"batch {ref.batch} appears twice with different contents: "
            f"{prev.path.name} offset {prev.ref.offset} and {path.name} offset {ref.offset}",
            path=path,
            offset=ref.offset,
        )

    def _payload(self, loc: _Located) -> bytes:
        ref = loc.ref
        start = ref.offset + FRAME_SIZE
        with open(loc.path, "rb") as f:
            payload = os.pread(f.fileno(), ref.length, start)
        if len(payload) != ref.length:
            raise BackupCorrupt(
                f"{loc.path}: batch {ref.batch} at offset {ref.offset} is truncated",
                path=loc.path,
                offset=ref.offset,
            )
        if zlib.crc32(payload) != ref.crc:
            raise BackupCorrupt(
                f"{loc.path}: batch {ref.batch} at offset {ref.offset}: checksum mismatch",
                path=loc.path,
                offset=ref.offset,
            )
        return payload

    def _decoded(self, loc: _Located, decode: Callable[[bytes, int], list[_T]]) -> list[_T]:
        """The checksum-verified payload of ``loc`` parsed by ``decode``; a malformed payload
        raises :class:`BackupCorrupt` naming the batch and its offset."""
        payload = self._payload(loc)
        try:
            return decode(payload, loc.ref.records)
        except ValueError as exc:
            raise BackupCorrupt(
                f"{loc.path}: batch {loc.ref.batch} at offset {loc.ref.offset}: {exc}",
                path=loc.path,
                offset=loc.ref.offset,
            ) from None

    def _records(self, loc: _Located) -> list[BackupRecord]:
        return self._decoded(loc, decode_records)

    def _located(self, batch: int) -> _Located:
        loc = self._index.get(batch)
        if loc is None:
            raise KeyError(f"batch {batch} is not in the backup in {self.directory}")
        return loc

    def batch_numbers(self) -> list[int]:
        """Every committed batch number, ascending."""
        return sorted(self._index)

    def require(self, batches: Iterable[int]) -> None:
        """Every batch the journal says was started (``batches``) must be in the backup: raise
        :class:`BackupCorrupt` naming the first one that is not, and, when the last frame of a
        data file is damaged, that frame (the journal proves it was not a crash mid-write: a
        batch is journaled as started only after its frame was fsynced)."""
        missing = sorted(set(batches) - set(self._index))
        if not missing:
            return
        b = missing[0]
        torn = next((t for t in self.torn_tails if t.batch == b), None) or next(
            (t for t in self.torn_tails if t.batch is None), None)
        if torn is not None:
            raise BackupCorrupt(
                f"{torn.path}: the last frame (batch {b}, {torn.size} bytes at offset "
                f"{torn.offset}) is damaged ({torn.reason}), and the journal says batch {b} was "
                "written after its backup was saved: the backup is corrupt, not cut short by a "
                "crash; restore the backup dir from a copy", path=torn.path, offset=torn.offset)
        raise BackupCorrupt(f"{self.directory}: the journal says batch {b} was started but its "
                            "backup is missing; the backup cannot be trusted",
                            path=self.directory)

    def __contains__(self, batch: object) -> bool:
        return batch in self._index

    def batch(self, batch: int) -> list[BackupRecord]:
        """The records of one batch, verified. ``KeyError`` if the batch is not in the backup."""
        return self._records(self._located(batch))

    def written(self, batch: int) -> list[WrittenRef]:
        """What the verification needs of each record of one batch (key, new key, replaced,
        written digest), checksum-verified, without building the originals."""
        return self._decoded(self._located(batch), decode_written)

    def batches(self) -> Iterator[tuple[int, list[BackupRecord]]]:
        """(batch number, records) for every batch, ascending, each verified when reached.

        Memory is bounded by one batch.
        """
        for b in sorted(self._index):
            yield b, self._records(self._index[b])

    def reversed_batches(self) -> Iterator[tuple[int, list[BackupRecord]]]:
        """For rollback: batches by descending batch number, records within each batch
        reversed too, so replaying in this order restores the earliest original last."""
        for b in sorted(self._index, reverse=True):
            records = self._records(self._index[b])
            records.reverse()
            yield b, records

    def verify(self) -> dict[str, Any]:
        """Read and checksum every batch; return :meth:`stats`. ``BackupCorrupt`` on damage."""
        for _ in self.batches():
            pass
        return self.stats()

    def stats(self) -> dict[str, Any]:
        """``{"files", "batches", "records", "bytes", "torn_tails"}`` (bytes = file sizes)."""
        return {
            "files": len(self._files),
            "batches": len(self._index),
            "records": sum(loc.ref.records for loc in self._index.values()),
            "bytes": self._bytes,
            "torn_tails": len(self.torn_tails),
        }


__all__ = ["BackupReader"]
