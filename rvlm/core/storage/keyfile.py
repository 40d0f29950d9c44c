"""The list of keys a migration works on, on disk, with random access by batch.

Keys are arbitrary bytes (binary-safe, the empty key included). :class:`KeyFileWriter` streams
them to a temporary file and on :meth:`~KeyFileWriter.close` fsyncs it and renames it into
place, so a key file that exists is always complete. :class:`KeyFileReader` checks the header
and footer on open (a truncated file is refused at once), verifies the body checksum (on open
by default, or via :meth:`~KeyFileReader.verify`), and reads any batch with two small
``pread`` calls into the offsets table plus one read of the batch's keys. Memory is bounded
whatever the key count: the writer buffers at most 4096 keys and 64 Ki offsets (the offsets
go to a spill file, copied behind the keys on close), the reader holds one batch.

Format, version 1 (all integers little-endian)::

    header  (16 bytes)  8s magic b"RVLMKEYS", u16 version (1), u16 flags (0), u32 reserved (0)
    keys                count x (u32 length, key bytes)
    offsets             count x u64: absolute file offset of each key's length prefix
    footer  (32 bytes)  u64 count, u64 keys_end (= offset of the offsets table),
                        u32 crc32 of bytes [0, keys_end + 8 * count),
                        u32 crc32 of the 20 footer bytes before it, 8s magic b"RVLMKEND"

A file is accepted only if header and footer magic, version and footer checksum are right and
``keys_end + 8 * count + 32`` equals the file size; the body checksum covers header, keys and
offsets. Any failure raises :class:`~rvlm.core.storage.files.BackupCorrupt`.
"""

from __future__ import annotations

import os
import struct
import sys
import zlib
from array import array
from collections.abc import Iterable, Iterator
from itertools import accumulate, islice
from pathlib import Path
from types import TracebackType
from typing import IO

from rvlm.core.storage.files import BackupCorrupt, fsync_directory

MAGIC = b"RVLMKEYS"
END_MAGIC = b"RVLMKEND"
FORMAT_VERSION = 1

_HEADER = struct.Struct("<8sHHI")
_FOOTER_BODY = struct.Struct("<QQI")  # count, keys_end, body crc
_FOOTER = struct.Struct("<QQII8s")  # ... + footer crc, end magic
_LEN = struct.Struct("<I")
_OFF = struct.Struct("<Q")
_MAX_KEY = 0xFFFFFFFF
_OFFSET_CHUNK = 65536  # offsets buffered in memory before spilling (512 KiB)
_COPY_CHUNK = 1 << 20
_ADD_CHUNK = 4096  # keys joined per write in add_many
_PLUS_LEN = (4).__add__  # a key's bytes in the file: its length prefix and itself


class KeyFileWriter:
    """Writes ``path`` atomically: nothing appears at ``path`` until :meth:`close` succeeds.

    Use as a context manager; leaving the ``with`` block with an exception discards the
    partial file (an existing file at ``path`` is left untouched).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._off_tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.offsets.tmp")
        self._f: IO[bytes] = open(self._tmp, "wb")  # noqa: SIM115 - closed in close()/abort()
        try:
            self._offf: IO[bytes] = open(self._off_tmp, "w+b")  # noqa: SIM115
        except BaseException:
            self._f.close()
            self._tmp.unlink(missing_ok=True)
            raise
        header = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, 0)
        self._f.write(header)
        self._crc = zlib.crc32(header)
        self._pos = len(header)
        self._offsets: array[int] = array("Q")
        self._count = 0
        self._closed = False

    @property
    def count(self) -> int:
        """Keys added so far."""
        return self._count

    def add(self, key: bytes) -> None:
        """Append one key (bytes; ``str`` is refused rather than guessed at)."""
        self.add_many((key,))

    def add_many(self, keys: Iterable[bytes]) -> None:
        """Append keys in order. Memory is bounded by a few thousand keys at a time."""
        if self._closed:
            raise ValueError(f"{self.path}: key file writer is closed")
        if isinstance(keys, list):  # a page of keys: sliced, not iterated
            chunks: Iterable[list[bytes]] = (keys[i:i + _ADD_CHUNK]
                                             for i in range(0, len(keys), _ADD_CHUNK))
        else:
            it = iter(keys)
            chunks = iter(lambda: list(islice(it, _ADD_CHUNK)), [])
        for chunk in chunks:
            lens = list(map(len, chunk)) if set(map(type, chunk)) == {bytes} else None
            if lens is not None and max(lens) <= _MAX_KEY:
                self._add_chunk(chunk, lens)
            else:  # a key to refuse: one at a time, so those before it are kept
                self._add_each(chunk)

    def _add_chunk(self, keys: list[bytes], lens: list[int]) -> None:
        """Append ``keys`` (bytes, none too long; ``lens`` their lengths) without a Python
        step per key: the same bytes and offsets as :meth:`_add_each`."""
        n = len(keys)
        ends = list(accumulate(map(_PLUS_LEN, lens), initial=self._pos))
        self._offsets.extend(ends[:n])
        parts: list[bytes] = [b""] * (2 * n)
        parts[0::2] = map(_LEN.pack, lens)
        parts[1::2] = keys
        self._count += n
        self._write(parts, ends[n])

    def _add_each(self, keys: Iterable[bytes]) -> None:
        parts: list[bytes] = []
        pos = self._pos
        offsets = self._offsets
        pack = _LEN.pack
        try:
            for key in keys:
                if not isinstance(key, bytes):
                    raise TypeError(f"keys must be bytes, not {type(key).__name__}")
                n = len(key)
                if n > _MAX_KEY:
                    raise ValueError(f"key of {n} bytes is too long")
                offsets.append(pos)
                parts.append(pack(n))
                parts.append(key)
                pos += 4 + n
                self._count += 1
                if len(parts) >= 2 * _ADD_CHUNK:
                    self._write(parts, pos)
                    parts = []
                    offsets = self._offsets
        finally:
            # keys accepted before a refused one are kept, so count and offsets stay in step
            if parts:
                self._write(parts, pos)

    def _write(self, parts: list[bytes], pos: int) -> None:
        data = b"".join(parts)
        self._f.write(data)
        self._crc = zlib.crc32(data, self._crc)
        self._pos = pos
        if len(self._offsets) >= _OFFSET_CHUNK:
            self._spill()

    def _spill(self) -> None:
        if sys.byteorder != "little":
            self._offsets.byteswap()
        self._offf.write(self._offsets.tobytes())
        self._offsets = array("Q")

    def close(self) -> int:
        """Finish the file: append offsets and footer, fsync, rename into place, fsync the
        directory. Returns the number of keys. Idempotent."""
        if self._closed:
            return self._count
        try:
            self._spill()
            keys_end = self._pos
            self._offf.flush()
            self._offf.seek(0)
            crc = self._crc
            while chunk := self._offf.read(_COPY_CHUNK):
                self._f.write(chunk)
                crc = zlib.crc32(chunk, crc)
            body = _FOOTER_BODY.pack(self._count, keys_end, crc)
            self._f.write(body + _LEN.pack(zlib.crc32(body)) + END_MAGIC)
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            os.replace(self._tmp, self.path)
            fsync_directory(self.path.parent)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._offf.close()
        self._off_tmp.unlink(missing_ok=True)
        return self._count

    def abort(self) -> None:
        """Discard everything written; ``path`` is not created or changed."""
        self._closed = True
        for f in (self._f, self._offf):
            f.close()
        self._tmp.unlink(missing_ok=True)
        self._off_tmp.unlink(missing_ok=True)

    def __enter__(self) -> KeyFileWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        elif not self._closed:
            self.abort()


class KeyFileReader:
    """Random access to a key file by batch.

    Opening checks header, footer and size (a truncated file raises
    :class:`~rvlm.core.storage.files.BackupCorrupt` immediately) and, unless ``verify=False``, the
    checksum over the whole body, streamed in 1 MiB chunks. Pass ``verify=False`` only when
    the same file was already verified in this run (e.g. in workers after the coordinator).
    """

    def __init__(self, path: Path, *, verify: bool = True) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY)
        try:
            self._open()
            if verify:
                self.verify()
        except BaseException:
            os.close(self._fd)
            raise

    def _corrupt(self, what: str, offset: int | None = None) -> BackupCorrupt:
        where = f" at offset {offset}" if offset is not None else ""
        return BackupCorrupt(f"{self.path}: {what}{where}", path=self.path, offset=offset)

    def _open(self) -> None:
        size = os.fstat(self._fd).st_size
        self._size = size
        if size < _HEADER.size + _FOOTER.size:
            raise self._corrupt(f"truncated key file ({size} bytes)")
        magic, version, _flags, _reserved = _HEADER.unpack(self._pread(_HEADER.size, 0))
        if magic != MAGIC:
            raise self._corrupt("not an rvlm key file (bad magic)", 0)
        if version != FORMAT_VERSION:
            raise self._corrupt(f"unknown key file version {version} (this rvlm reads 1)", 8)
        foot_at = size - _FOOTER.size
        count, keys_end, crc, foot_crc, end_magic = _FOOTER.unpack(
            self._pread(_FOOTER.size, foot_at)
        )
        if end_magic != END_MAGIC:
            raise self._corrupt("truncated or incomplete key file (footer missing)")
        if zlib.crc32(_FOOTER_BODY.pack(count, keys_end, crc)) != foot_crc:
            raise self._corrupt("footer checksum mismatch", foot_at)
        if keys_end < _HEADER.size or keys_end + 8 * count != foot_at:
            raise self._corrupt(
                f"sizes do not add up ({count} keys, keys end at {keys_end}, file {size} bytes)"
            )
        self._count = count
        self._keys_end = keys_end
        self._body_crc = crc

    def _pread(self, n: int, offset: int) -> bytes:
        data = os.pread(self._fd, n, offset)
        if len(data) != n:
            raise self._corrupt(f"short read ({len(data)} of {n} bytes)", offset)
        return data

    @property
    def count(self) -> int:
        """Number of keys in the file."""
        return self._count

    def verify(self) -> None:
        """Stream the whole body through crc32; ``BackupCorrupt`` if it does not match."""
        end = self._keys_end + 8 * self._count
        crc = 0
        pos = 0
        while pos < end:
            chunk = self._pread(min(_COPY_CHUNK, end - pos), pos)
            crc = zlib.crc32(chunk, crc)
            pos += len(chunk)
        if crc != self._body_crc:
            raise self._corrupt("checksum mismatch (key file altered or damaged)")

    def num_batches(self, size: int) -> int:
        """How many batches of ``size`` keys there are (the last one may be shorter)."""
        if size <= 0:
            raise ValueError(f"batch size must be positive, got {size}")
        return -(-self._count // size)

    def _offset(self, i: int) -> int:
        if i == self._count:
            return self._keys_end
        (off,) = _OFF.unpack(self._pread(8, self._keys_end + 8 * i))
        return int(off)

    def batch(self, index: int, size: int) -> list[bytes]:
        """Keys ``[index * size, (index + 1) * size)`` in file order, read by direct seeks.

        ``IndexError`` if ``index`` is not in ``range(num_batches(size))``; ``BackupCorrupt``
        if the bytes do not parse (which the body checksum would also have caught).
        """
        n_batches = self.num_batches(size)
        if not 0 <= index < n_batches:
            raise IndexError(f"batch {index} out of range (0..{n_batches - 1})")
        start = index * size
        stop = min(start + size, self._count)
        first = self._offset(start)
        end = self._offset(stop)
        if not _HEADER.size <= first <= end <= self._keys_end:
            raise self._corrupt(f"bad offsets for batch {index}", self._keys_end + 8 * start)
        buf = self._pread(end - first, first)
        keys: list[bytes] = []
        append = keys.append
        unpack = _LEN.unpack_from
        p = 0
        try:
            for _ in range(stop - start):
                (n,) = unpack(buf, p)
                p += 4
                append(buf[p : p + n])
                p += n
        except struct.error:
            raise self._corrupt(f"batch {index} does not parse", first) from None
        if p != len(buf):
            raise self._corrupt(f"batch {index} does not parse", first)
        return keys

    def iter_batches(self, size: int) -> Iterator[list[bytes]]:
        """Every batch in order (the i-th yielded list equals ``batch(i, size)``); memory is
        bounded by one batch."""
        for i in range(self.num_batches(size)):
            yield self.batch(i, size)

    def close(self) -> None:
        """Close the file descriptor. Idempotent."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> KeyFileReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
