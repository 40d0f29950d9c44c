"""Appending batches to a worker's backup data file, each one fsynced before it counts.

See :mod:`rvlm.core.storage.backup` for the protocol the executor follows and the format.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from rvlm.core.storage.backup.frames import (
    FRAME_HEAD,
    FRAME_MAGIC,
    MAX_BATCH,
    MAX_PAYLOAD,
    U32,
    TornTail,
    encode_header,
    scan_file,
)
from rvlm.core.storage.backup.records import BackupRecord, RawRecord, encode_records
from rvlm.core.storage.files import BackupBusy, BackupCorrupt, fsync_directory

log = logging.getLogger(__name__)


class BackupWriter:
    """Appends framed batches to ``{directory}/data-{worker}.rvb``, one fsync per batch.

    Opening creates the file (header written to a temp file, fsynced, linked into place, so a
    present data file always has a complete header) or reopens it: the header, the worker and
    the plan fingerprint are validated (:class:`BackupCorrupt` otherwise), a torn tail is
    removed (see :attr:`recovered_tail`) and appending resumes after the last committed frame.
    The file is locked (``flock``) while open; a second writer gets :class:`BackupBusy`.
    """

    def __init__(self, directory: Path, worker: int, plan_fingerprint: str) -> None:
        if isinstance(worker, bool) or not isinstance(worker, int) or not 0 <= worker < 2**32:
            raise ValueError(f"worker must be an int in [0, 2**32), got {worker!r}")
        if not isinstance(plan_fingerprint, str) or not plan_fingerprint:
            raise ValueError("plan_fingerprint must be a non-empty str")
        self.directory = Path(directory)
        self.worker = worker
        self.plan_fingerprint = plan_fingerprint
        self.path = self.directory / f"data-{worker}.rvb"
        #: The torn tail removed on reopen, if there was one (its bytes are kept beside the
        #: data file as ``data-{worker}.rvb.torn-{offset}``).
        self.recovered_tail: TornTail | None = None
        self._committed: dict[int, int] = {}
        self._broken = False
        if not self.path.exists():
            self._create()
        self._f = open(self.path, "r+b")  # noqa: SIM115 - closed in close()
        try:
            self._lock()
            self._recover()
        except BaseException:
            self._f.close()
            raise

    def _create(self) -> None:
        tmp = self.directory / f".data-{self.worker}.rvb.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(encode_header(self.worker, self.plan_fingerprint))
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, self.path)  # never clobbers a file another process just made
        finally:
            tmp.unlink(missing_ok=True)
        fsync_directory(self.directory)

    def _lock(self) -> None:
        try:
            fcntl.flock(self._f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupBusy(f"{self.path} is open for writing by another process") from None

    def _recover(self) -> None:
        scan = scan_file(self.path, self._f.fileno(), self.plan_fingerprint, self.worker)
        for fr in scan.frames:
            if fr.batch in self._committed:
                raise BackupCorrupt(
                    f"{self.path}: batch {fr.batch} appears twice (offsets "
                    f"{self._committed[fr.batch]} and {fr.offset})",
                    path=self.path,
                    offset=fr.offset,
                )
            self._committed[fr.batch] = fr.offset
        if scan.torn is not None:
            torn = scan.torn
            keep = self.path.with_name(f"{self.path.name}.torn-{torn.offset}")
            self._f.seek(torn.offset)
            with open(keep, "wb") as k:
                k.write(self._f.read())
                k.flush()
                os.fsync(k.fileno())
            self._f.truncate(torn.offset)
            self._f.flush()
            os.fsync(self._f.fileno())
            fsync_directory(self.directory)
            log.warning("%s; removed (bytes kept in %s)", torn.message(), keep.name)
            self.recovered_tail = torn
        self._end = scan.end
        self._f.seek(self._end)

    def append_batch(self, batch: int, records: Sequence[BackupRecord | RawRecord], *,
                     before_sync: Callable[[], None] | None = None) -> None:
        """Append one batch as one frame, then flush and ``os.fsync`` before returning.

        Once this returns, the batch survives a crash. If it raises, the file is cut back to
        where it was (nothing of the batch is kept). A batch number already in the file is
        refused with ``ValueError``: its first backup holds the true originals and must not be
        shadowed (check :meth:`committed_batches` on resume and skip those batches' backup).
        ``before_sync`` is called once the frame is written to the OS, before its fsync (a
        crash test's fault point: the frame is complete in the page cache, not on disk).
        """
        if self._f.closed or self._broken:
            raise ValueError(f"{self.path}: writer is closed")
        if isinstance(batch, bool) or not isinstance(batch, int) or not 0 <= batch <= MAX_BATCH:
            raise ValueError(f"batch must be an int in [0, 2**64), got {batch!r}")
        if batch in self._committed:
            raise ValueError(
                f"batch {batch} is already backed up in {self.path.name}; "
                "its first backup holds the true originals"
            )
        payload = encode_records(records)
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"batch {batch} is {len(payload)} bytes; split it (max 4 GiB)")
        head = FRAME_HEAD.pack(FRAME_MAGIC, len(payload), zlib.crc32(payload), batch, len(records))
        header = head + U32.pack(zlib.crc32(head))
        start = self._end
        try:
            self._f.write(header)
            self._f.write(payload)
            self._f.flush()
            if before_sync is not None:
                before_sync()
            os.fsync(self._f.fileno())
        except BaseException:
            self._cut_back(start)
            raise
        self._end = start + len(header) + len(payload)
        self._committed[batch] = start

    def _cut_back(self, size: int) -> None:
        try:
            self._f.seek(size)
            self._f.truncate(size)
            self._f.flush()
            os.fsync(self._f.fileno())
        except BaseException:
            # The file may end in a partial frame: the next open treats it as a torn tail.
            self._broken = True
            with contextlib.suppress(OSError):
                self._f.close()

    def committed_batches(self) -> set[int]:
        """Batch numbers whose frames are complete and fsynced in this worker's file."""
        return set(self._committed)

    def close(self) -> None:
        """Close the file (releasing the lock). Idempotent."""
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> BackupWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


__all__ = ["BackupWriter"]
