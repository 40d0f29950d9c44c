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


def check_backup_files(directory: Path) -> None:
    """Refuse a backup dir holding a file that is not its own, before anything is read or
    written there: a symbolic link (a journal linked to another file would have rvlm append to
    that file), anything but a regular file or a directory, a file with another hard link, or
    one owned by another user than the directory. Raises :class:`BackupCorrupt` naming it."""
    directory = Path(directory)
    try:
        owner = directory.stat().st_uid
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    # A crash between a writer's link() and unlink() of its temp file leaves the temp file as
    # a second name of the data file: a link to our own file, inside the directory, is fine.
    names: dict[int, list[str]] = {}
    for entry in entries:
        if entry.is_file(follow_symlinks=False):
            names.setdefault(entry.stat(follow_symlinks=False).st_ino, []).append(entry.name)
    for entry in entries:
        st = entry.stat(follow_symlinks=False)
        path = directory / entry.name
        if entry.is_symlink():
            raise BackupCorrupt(f"{path} is a symbolic link; a backup dir holds only its own "
                                "files (remove the link, or use a new --backup-dir)", path=path)
        if entry.is_dir(follow_symlinks=False):
            continue
        if not entry.is_file(follow_symlinks=False):
            raise BackupCorrupt(f"{path} is not a regular file; a backup dir holds only its "
                                "own files", path=path)
        here = names.get(st.st_ino, [entry.name])
        proper = [n for n in here if not (n.startswith(".") and n.endswith(".tmp"))]
        if st.st_nlink > len(here) or len(proper) > 1:
            raise BackupCorrupt(f"{path} has {st.st_nlink} hard links: another path shares it, "
                                "so it is not this backup dir's own", path=path)
        if st.st_uid != owner:
            raise BackupCorrupt(f"{path} belongs to another user (uid {st.st_uid}, the "
                                f"directory's owner is uid {owner})", path=path)


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


__all__ = ["BackupBusy", "BackupCorrupt", "atomic_write_text", "check_backup_files",
           "fsync_directory"]
