"""What every durable file of a backup dir shares (backup data, key file, journal, manifest):
the errors for a file that cannot be trusted or is in use, and making writes durable.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from rvlm.core.errors import RvlmError


class BackupCorrupt(RvlmError):
    """A backup, key file, journal or manifest that cannot be trusted.

    The message is one line naming the file, the batch or byte offset, and what is wrong
    (truncated, checksum mismatch, unknown version, foreign plan). ``path`` and ``offset`` are
    also available as attributes when known.
    """

    def __init__(self, message: str, *, path: Path | None = None, offset: int | None = None):
        super().__init__(message)
        self.path = path
        self.offset = offset


class BackupBusy(RvlmError):
    """Another process has this worker's backup file open for writing."""


def fsync_directory(directory: Path) -> None:
    """Make a rename or file creation inside ``directory`` durable (``fsync`` on the dir)."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so a crash leaves the old file or the new one, never a mix:
    a temp file in the same directory, fsync, ``os.replace``, fsync of the directory."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    data = text.encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_directory(path.parent)


__all__ = ["BackupBusy", "BackupCorrupt", "atomic_write_text", "fsync_directory"]
