"""An append-only log of keys, durable before the writes it announces.

Online mode writes a target key for every source key it copies. The keys of the copy are in
the key files; a key created in the source during the copy (or later, while forwarding) is
appended here *before* its target is written, so the key files and this log together always
name every target key rvlm may have created: exactly what rollback deletes.

Record: ``u32 length``, key bytes, ``u32 crc32`` of the key (little-endian). A torn last record
(a crash during an append: its write was never acknowledged, so its target was never written)
is ignored and cut off by the next append. Keys may repeat; a bounded set of recently logged
keys avoids most repeats. Memory is bounded; reading streams.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path

from rvlm.core.storage.files import BackupCorrupt, fsync_directory

_LEN = struct.Struct("<I")
_CRC = struct.Struct("<I")


def _records(data: bytes, path: Path) -> tuple[list[bytes], int]:
    """(keys, length of the good prefix). A bad record followed by more data is corruption."""
    keys: list[bytes] = []
    pos = 0
    n = len(data)
    while pos < n:
        if pos + _LEN.size > n:
            break
        (size,) = _LEN.unpack_from(data, pos)
        end = pos + _LEN.size + size + _CRC.size
        if end > n:
            break
        key = data[pos + _LEN.size:pos + _LEN.size + size]
        (crc,) = _CRC.unpack_from(data, end - _CRC.size)
        if zlib.crc32(key) != crc:
            if end == n:
                break
            raise BackupCorrupt(f"{path}: record at offset {pos} is damaged and later records "
                                "exist", path=path, offset=pos)
        keys.append(key)
        pos = end
    return keys, pos


def _records_final(data: bytes, path: Path) -> tuple[list[bytes], int]:
    """:func:`_records` on the end of the file: a torn last record is dropped."""
    keys, _good = _records(data, path)
    return keys, len(data)


class KeyLog:
    """See the module docstring. :meth:`add` appends and fsyncs the keys not logged lately."""

    def __init__(self, path: str | Path, recent: int = 100_000) -> None:
        self.path = Path(path)
        self.recent_max = recent
        self._recent: OrderedDict[bytes, None] = OrderedDict()
        self._fd = -1

    def _open(self) -> None:
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        size = os.fstat(fd).st_size
        if size:
            data = os.pread(fd, size, 0)
            _keys, good = _records(data, self.path)
            if good != size:
                os.ftruncate(fd, good)
                os.fsync(fd)
        if created:
            fsync_directory(self.path.parent)
        self._fd = fd

    def add(self, keys: Iterable[bytes]) -> int:
        """Append the keys not among the recently logged ones; durable when it returns.
        Returns how many were appended."""
        fresh = []
        for k in keys:
            if k in self._recent:
                self._recent.move_to_end(k)
                continue
            fresh.append(k)
            self._recent[k] = None
            if len(self._recent) > self.recent_max:
                self._recent.popitem(last=False)
        if not fresh:
            return 0
        if self._fd < 0:
            self._open()
        data = b"".join(_LEN.pack(len(k)) + k + _CRC.pack(zlib.crc32(k)) for k in fresh)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)
        return len(fresh)

    def iter_keys(self, chunk: int = 4096) -> Iterator[list[bytes]]:
        """Every logged key (repeats possible), in chunks of up to ``chunk``, read 1 MiB at a
        time."""
        try:
            f = open(self.path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            return
        with f:
            buf = b""
            out: list[bytes] = []
            while True:
                more = f.read(1 << 20)
                buf += more
                keys, good = _records(buf, self.path) if more else _records_final(buf, self.path)
                buf = buf[good:]
                for k in keys:
                    out.append(k)
                    if len(out) >= chunk:
                        yield out
                        out = []
                if not more:
                    break
            if out:
                yield out

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
