"""The originals of everything a migration rewrites, on disk, crash-safe.

A migration's backup directory holds, per worker, one append-only data file
``data-{worker}.rvb`` plus one ``manifest.json`` for the whole run. Nothing here pickles or
executes anything on load: records are a fixed binary layout read with :mod:`struct`.

Protocol the executor follows (and what makes a torn tail harmless)
--------------------------------------------------------------------
For each batch: read the originals, :meth:`BackupWriter.append_batch` (returns only after
``fsync``), journal ``batch_started``, write Redis, journal ``batch_done``. So a batch whose
frame is *not* completely on disk was never journaled as started and no key of it was
written. A crash can therefore only leave one kind of damage that is expected: a partial frame
at the very end of one data file (a "torn tail"), holding a batch that nothing depends on.

* :class:`BackupWriter` on reopen removes a torn tail (the bytes are first copied to
  ``data-{worker}.rvb.torn-{offset}`` for forensics), reports it in
  :attr:`BackupWriter.recovered_tail` and appends after the last committed frame.
* :class:`BackupReader` skips a torn tail by default (logged at WARNING, listed in
  :attr:`BackupReader.torn_tails`): a rollback or resume must not be blocked by a batch that
  was never applied. With ``strict=True`` it raises :class:`BackupCorrupt`
  ("incomplete batch at end of data-0.rvb (crash during write?)").
* Everything else is corruption and is refused with :class:`BackupCorrupt` naming the file and
  byte offset: a frame whose checksum fails when another frame follows it, a damaged frame
  header followed by valid frames, a bad file header, an unknown format version, a plan
  fingerprint that does not match, a file whose worker number disagrees with its name.

The executor must also check, on resume and before a rollback, that every batch the journal
marks as started -- done or not, ``RunState.started`` -- is in the backup
(:meth:`BackupReader.batch_numbers`): the last frame of a file cannot be told apart from a torn
one by its bytes alone, so a bit flip there looks like a crash, and only the journal can tell
the two apart (:attr:`TornTail.batch` names the batch that was dropped, when its header was
readable).

File format, version 1 (all integers little-endian)
---------------------------------------------------
File header::

    8s  magic  b"RVLMBKUP"
    u16 format version (1)
    u16 flags (0)
    u32 worker number (must match the file name)
    u16 n, then n bytes: plan fingerprint (UTF-8)
    u32 crc32 of all the header bytes above

Then zero or more frames, one per batch, each written with one ``write`` and ``fsync``::

    4s  frame magic b"RVBF"
    u32 payload length
    u32 crc32 of the payload
    u64 batch number
    u32 record count
    u32 crc32 of the 24 frame-header bytes above
    payload: ``record count`` records

A record::

    u32 key length, u8 flags (bit0: new_key present, bit1: ttl_ms present,
    bit2: replaced), u32 new_key length (0 if absent), i64 ttl_ms (0 if absent),
    u32 field count, key bytes, new_key bytes,
    then per field: u32 name length, u32 value length (0xFFFFFFFF = field did not exist),
                    name bytes, value bytes

A *replaced* record (bit 2) is the whole original of a document that a ``converts_to``
operation replaced: its fields are every field of the hash (or ``$`` and the JSON document's
text), and ttl_ms is present whenever the key had a TTL. Restoring it deletes whatever is at the
key and its new key and recreates the original exactly. Other flag bits are refused.

The frame header carries its own checksum so that a bit flip in a length can never make a
committed frame in the middle of a file look like a torn tail, and the frame magic lets a
damaged header be told apart from the end of the file (a valid frame after it means
corruption, none means a torn tail).

The manifest (``manifest.json``) is JSON::

    {"format": "rvlm-backup-manifest", "version": 1, "crc32": <crc32 of the canonical JSON
     of "manifest">, "manifest": {...}}

written to a temporary file, fsynced, ``os.replace``'d into place and the directory fsynced.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import mmap
import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import attrs

from rvlm.core.errors import RvlmError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_VERSION = 1
MANIFEST_FORMAT = "rvlm-backup-manifest"
MANIFEST_NAME = "manifest.json"
MAGIC = b"RVLMBKUP"
FRAME_MAGIC = b"RVBF"

_HDR_FIXED = struct.Struct("<8sHHIH")  # magic, version, flags, worker, fingerprint length
_U32 = struct.Struct("<I")
_FRAME_HEAD = struct.Struct("<4sIIQI")  # magic, payload len, payload crc, batch, record count
_FRAME_SIZE = _FRAME_HEAD.size + _U32.size  # + header crc = 28 bytes
_REC = struct.Struct("<IBIqI")  # key len, flags, new_key len, ttl_ms, field count
_FIELD = struct.Struct("<II")  # name len, value len (_NONE_LEN: field did not exist)
_NONE_LEN = 0xFFFFFFFF
MAX_ITEM_LEN = 0xFFFFFFFE  # longest key / field name / value a record can hold
_MAX_PAYLOAD = 0xFFFFFFFF
_MAX_BATCH = 2**64 - 1
_REC_NEW_KEY = 1
_REC_TTL = 2
_REC_REPLACED = 4
_REC_KNOWN = _REC_NEW_KEY | _REC_TTL | _REC_REPLACED
_DATA_RE = re.compile(r"^data-(\d+)\.rvb$")


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


# --------------------------------------------------------------------------- records


def _check_item(name: str, limit: int = MAX_ITEM_LEN) -> Any:
    def check(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, bytes):
            raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
        if len(value) > limit:
            raise ValueError(f"{name} is {len(value)} bytes; at most {limit} are supported")

    return check


def _check_optional_item(name: str) -> Any:
    inner = _check_item(name)

    def check(inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        if value is not None:
            inner(inst, attr, value)

    return check


def _check_ttl(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"ttl_ms must be an int or None, not {type(value).__name__}")
    if not 0 <= value < 2**63:
        raise ValueError(f"ttl_ms must be >= 0 (use None for 'no TTL'), got {value}")


def _to_fields(value: Iterable[FieldOriginal]) -> tuple[FieldOriginal, ...]:
    return tuple(value)


def _check_fields(_inst: object, _attr: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    for f in value:
        if not isinstance(f, FieldOriginal):
            raise TypeError(f"fields must hold FieldOriginal, not {type(f).__name__}")


@attrs.frozen
class FieldOriginal:
    """One field as it was before the migration.

    ``name`` is a hash field name or a JSON path encoded as bytes; ``value`` is the original
    raw value (hash bytes, or the JSON text of the value), or None if the field did not exist.
    """

    name: bytes = attrs.field(validator=_check_item("field name"))
    value: bytes | None = attrs.field(validator=_check_optional_item("field value"))


@attrs.frozen
class BackupRecord:
    """The originals of one key: its name, the name it was renamed to (if any), the original
    value of every field the migration rewrites, and the original PTTL when it must be kept.

    ``replaced``: the document was replaced as a whole (``converts_to``); ``fields`` then hold
    *every* original field (hash) or ``$`` and the document text (JSON), and ``ttl_ms`` the
    PTTL whenever the key had one.
    """

    key: bytes = attrs.field(validator=_check_item("key"))
    new_key: bytes | None = attrs.field(validator=_check_optional_item("new_key"))
    fields: tuple[FieldOriginal, ...] = attrs.field(converter=_to_fields, validator=_check_fields)
    ttl_ms: int | None = attrs.field(default=None, validator=_check_ttl)
    replaced: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))


#: A backup record as a plain tuple, for the executor's hot path (no object per record):
#: ``(key, new_key, fields, ttl_ms, replaced)`` with ``fields`` a tuple of ``(name, value)``
#: pairs; the same meaning and the same limits as :class:`BackupRecord`, checked by
#: :func:`encode_records` before anything is written.
RawRecord = tuple[bytes, "bytes | None", tuple[tuple[bytes, "bytes | None"], ...], "int | None",
                  bool]


def raw_record(record: BackupRecord) -> RawRecord:
    """``record`` as a :data:`RawRecord`."""
    return (record.key, record.new_key, tuple((f.name, f.value) for f in record.fields),
            record.ttl_ms, record.replaced)


def _item_ok(value: object) -> bool:
    return isinstance(value, bytes) and len(value) <= MAX_ITEM_LEN


def _raw_problem(r: Any) -> str | None:
    """Why the raw record ``r`` breaks :class:`BackupRecord`'s rules (None: it does not)."""
    if not isinstance(r, tuple) or len(r) != 5:
        return f"records must be BackupRecord or 5-tuples, not {type(r).__name__}"
    key, new_key, fields, ttl, replaced = r
    if not _item_ok(key):
        return f"key must be bytes of at most {MAX_ITEM_LEN} bytes ({type(key).__name__})"
    if new_key is not None and not _item_ok(new_key):
        return f"new_key must be bytes or None, not {type(new_key).__name__}"
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int)
                            or not 0 <= ttl < 2**63):
        return f"ttl_ms must be an int in [0, 2**63) or None, not {ttl!r}"
    if not isinstance(replaced, bool):
        return f"replaced must be a bool, not {type(replaced).__name__}"
    if not isinstance(fields, tuple):
        return f"fields must be a tuple, not {type(fields).__name__}"
    for f in fields:
        if not isinstance(f, tuple) or len(f) != 2:
            return f"fields must hold (name, value) pairs, not {type(f).__name__}"
        if not _item_ok(f[0]):
            return f"field name must be bytes, not {type(f[0]).__name__}"
        if f[1] is not None and not _item_ok(f[1]):
            return f"field value must be bytes or None, not {type(f[1]).__name__}"
    return None


def encode_records(records: Sequence[BackupRecord | RawRecord]) -> bytes:
    """The payload bytes of a batch (see the module docstring for the layout).

    Records are :class:`BackupRecord` objects (validated when built) or :data:`RawRecord`
    tuples, which are checked here against the same rules (``TypeError``/``ValueError``
    before any byte is produced), so nothing malformed ever reaches the file."""
    parts: list[bytes] = []
    append = parts.append
    rec_pack = _REC.pack
    field_pack = _FIELD.pack
    none_len = _NONE_LEN
    limit = MAX_ITEM_LEN
    for r in records:
        if type(r) is tuple:
            key, new_key_or_none, fields, ttl_ms, replaced = r
            # the common case checked inline; anything unusual goes to _raw_problem
            if not (type(key) is bytes and len(key) <= limit
                    and (new_key_or_none is None or type(new_key_or_none) is bytes)
                    and (ttl_ms is None or type(ttl_ms) is int)
                    and type(replaced) is bool and type(fields) is tuple):
                problem = _raw_problem(r)
                if problem is not None:
                    raise TypeError(problem)
            if len(key) > limit or (new_key_or_none is not None
                                    and len(new_key_or_none) > limit) or (
                    ttl_ms is not None and not 0 <= ttl_ms < 2**63):
                raise ValueError(_raw_problem(r) or "record out of range")
            pairs: Sequence[Any] = fields
            fields_n = len(fields)
        elif isinstance(r, BackupRecord):
            key, new_key_or_none, ttl_ms, replaced = r.key, r.new_key, r.ttl_ms, r.replaced
            pairs = [(f.name, f.value) for f in r.fields]
            fields_n = len(pairs)
        else:
            raise TypeError(f"records must be BackupRecord, not {type(r).__name__}")
        flags = 0
        new_key = b""
        ttl = 0
        if new_key_or_none is not None:
            flags |= _REC_NEW_KEY
            new_key = new_key_or_none
        if ttl_ms is not None:
            flags |= _REC_TTL
            ttl = ttl_ms
        if replaced:
            flags |= _REC_REPLACED
        append(rec_pack(len(key), flags, len(new_key), ttl, fields_n))
        append(key)
        append(new_key)
        for pair in pairs:
            name, value = pair
            if type(name) is not bytes and not isinstance(name, bytes):
                raise TypeError(f"field name must be bytes, not {type(name).__name__}")
            if len(name) > limit:
                raise ValueError(f"field name is {len(name)} bytes; at most {limit} are "
                                 "supported")
            if value is None:
                append(field_pack(len(name), none_len))
                append(name)
            else:
                if type(value) is not bytes and not isinstance(value, bytes):
                    raise TypeError(f"field value must be bytes or None, not "
                                    f"{type(value).__name__}")
                if len(value) > limit:
                    raise ValueError(f"field value is {len(value)} bytes; at most {limit} "
                                     "are supported")
                append(field_pack(len(name), len(value)))
                append(name)
                append(value)
    return b"".join(parts)


class _Malformed(Exception):
    pass


def decode_records(payload: bytes, count: int) -> list[BackupRecord]:
    """Parse a batch payload of ``count`` records; raises ``ValueError`` if it is malformed."""
    try:
        return _decode(payload, count)
    except (_Malformed, struct.error, TypeError, ValueError) as exc:
        raise ValueError(f"malformed batch payload: {exc or type(exc).__name__}") from None


def _decode(payload: bytes, count: int) -> list[BackupRecord]:
    out: list[BackupRecord] = []
    n = len(payload)
    p = 0
    rec_unpack = _REC.unpack_from
    field_unpack = _FIELD.unpack_from
    rec_size = _REC.size
    field_size = _FIELD.size
    for _ in range(count):
        klen, flags, nklen, ttl, nfields = rec_unpack(payload, p)
        p += rec_size
        if flags & ~_REC_KNOWN:
            raise _Malformed(f"unknown record flags {flags:#x}")
        if p + klen + nklen > n:
            raise _Malformed("record runs past the end of the payload")
        key = payload[p : p + klen]
        p += klen
        new_key: bytes | None = None
        if flags & _REC_NEW_KEY:
            new_key = payload[p : p + nklen]
        elif nklen:
            raise _Malformed("new_key length set but new_key absent")
        p += nklen
        fields: list[FieldOriginal] = []
        for _ in range(nfields):
            name_len, value_len = field_unpack(payload, p)
            p += field_size
            if p + name_len > n:
                raise _Malformed("field name runs past the end of the payload")
            name = payload[p : p + name_len]
            p += name_len
            value: bytes | None = None
            if value_len != _NONE_LEN:
                if p + value_len > n:
                    raise _Malformed("field value runs past the end of the payload")
                value = payload[p : p + value_len]
                p += value_len
            fields.append(FieldOriginal(name, value))
        out.append(BackupRecord(key, new_key, tuple(fields), ttl if flags & _REC_TTL else None,
                                bool(flags & _REC_REPLACED)))
    if p != n:
        raise _Malformed(f"{n - p} unexpected bytes after {count} records")
    return out


# --------------------------------------------------------------------------- file scanning


@attrs.frozen
class TornTail:
    """An incomplete frame at the end of a data file, left by a crash during an append.

    ``offset`` is where it starts, ``size`` how many bytes it has, ``batch`` the batch number
    if its frame header was intact (None otherwise), ``reason`` what was found.
    """

    path: Path
    offset: int
    size: int
    batch: int | None
    reason: str

    def message(self) -> str:
        """The one-line description used in logs and in strict-mode errors."""
        which = f"batch {self.batch}" if self.batch is not None else "batch"
        return (
            f"incomplete {which} at end of {self.path.name} (crash during write?): "
            f"{self.size} bytes at offset {self.offset}, {self.reason}"
        )


class _FrameRef(NamedTuple):
    batch: int
    offset: int  # start of the frame header
    length: int  # payload length
    crc: int  # payload crc32
    records: int  # record count


@attrs.frozen
class _Scan:
    worker: int
    fingerprint: str
    frames: list[_FrameRef]
    end: int  # end of the last committed frame
    size: int
    torn: TornTail | None


def _encode_header(worker: int, fingerprint: str) -> bytes:
    fp = fingerprint.encode("utf-8")
    if len(fp) > 0xFFFF:
        raise ValueError("plan fingerprint is too long")
    body = _HDR_FIXED.pack(MAGIC, FORMAT_VERSION, 0, worker, len(fp)) + fp
    return body + _U32.pack(zlib.crc32(body))


def _parse_header(path: Path, buf: Any, size: int) -> tuple[int, str, int]:
    """Return (worker, fingerprint, header length) or raise BackupCorrupt."""
    if size < _HDR_FIXED.size:
        raise BackupCorrupt(f"{path}: truncated file header ({size} bytes)", path=path, offset=0)
    magic, version, _flags, worker, fp_len = _HDR_FIXED.unpack_from(buf, 0)
    if magic != MAGIC:
        raise BackupCorrupt(f"{path}: not an rvlm backup file (bad magic)", path=path, offset=0)
    if version != FORMAT_VERSION:
        raise BackupCorrupt(
            f"{path}: unknown backup format version {version} (this rvlm reads {FORMAT_VERSION})",
            path=path,
            offset=8,
        )
    end = _HDR_FIXED.size + fp_len + _U32.size
    if size < end:
        raise BackupCorrupt(f"{path}: truncated file header ({size} bytes)", path=path, offset=0)
    (crc,) = _U32.unpack_from(buf, end - _U32.size)
    if zlib.crc32(buf[: end - _U32.size]) != crc:
        raise BackupCorrupt(f"{path}: file header checksum mismatch", path=path, offset=0)
    try:
        fingerprint = bytes(buf[_HDR_FIXED.size : end - _U32.size]).decode("utf-8")
    except UnicodeDecodeError:
        raise BackupCorrupt(f"{path}: plan fingerprint is not UTF-8", path=path) from None
    return worker, fingerprint, end


def _valid_frame_header(buf: Any, pos: int, size: int) -> tuple[int, int, int, int] | None:
    """(payload length, payload crc, batch, count) if a frame header with a good crc is at pos."""
    if size - pos < _FRAME_SIZE:
        return None
    magic, length, crc, batch, count = _FRAME_HEAD.unpack_from(buf, pos)
    if magic != FRAME_MAGIC:
        return None
    (hcrc,) = _U32.unpack_from(buf, pos + _FRAME_HEAD.size)
    if zlib.crc32(buf[pos : pos + _FRAME_HEAD.size]) != hcrc:
        return None
    return length, crc, batch, count


def _next_valid_frame(buf: mmap.mmap, start: int, size: int) -> int | None:
    pos = start
    while True:
        pos = buf.find(FRAME_MAGIC, pos, size)
        if pos < 0:
            return None
        if _valid_frame_header(buf, pos, size) is not None:
            return pos
        pos += 1


def _scan(
    path: Path,
    fileno: int,
    expect_fingerprint: str | None,
    expect_worker: int | None,
) -> _Scan:
    """Validate a data file's header and frame headers; find its committed end and torn tail.

    Reads frame headers only, plus the payload of the last frame (a torn append can leave a
    full-size frame whose payload never reached the disk). Middle payloads are verified when
    they are read.
    """
    size = os.fstat(fileno).st_size
    if size == 0:
        raise BackupCorrupt(f"{path}: empty file (no header)", path=path, offset=0)
    with mmap.mmap(fileno, size, access=mmap.ACCESS_READ) as buf:
        worker, fingerprint, pos = _parse_header(path, buf, size)
        if expect_worker is not None and worker != expect_worker:
            raise BackupCorrupt(
                f"{path}: header says worker {worker}, file name says {expect_worker}", path=path
            )
        if expect_fingerprint is not None and fingerprint != expect_fingerprint:
            raise BackupCorrupt(
                f"{path}: backup belongs to plan {fingerprint!r}, not {expect_fingerprint!r} "
                "(foreign plan)",
                path=path,
            )
        frames: list[_FrameRef] = []
        torn: TornTail | None = None
        while pos < size:
            head = _valid_frame_header(buf, pos, size)
            if head is None:
                if size - pos < _FRAME_SIZE:
                    torn = TornTail(path, pos, size - pos, None, "frame header incomplete")
                    break
                nxt = _next_valid_frame(buf, pos + 1, size)
                if nxt is not None:
                    raise BackupCorrupt(
                        f"{path}: damaged frame header at offset {pos} "
                        f"(after batch {frames[-1].batch if frames else '-'}; "
                        f"valid frames follow at offset {nxt})",
                        path=path,
                        offset=pos,
                    )
                torn = TornTail(path, pos, size - pos, None, "frame header damaged")
                break
            length, crc, batch, count = head
            end = pos + _FRAME_SIZE + length
            if end > size:
                torn = TornTail(path, pos, size - pos, batch, "frame runs past end of file")
                break
            if end == size and zlib.crc32(buf[pos + _FRAME_SIZE : end]) != crc:
                torn = TornTail(path, pos, size - pos, batch, "payload checksum mismatch")
                break
            frames.append(_FrameRef(batch, pos, length, crc, count))
            pos = end
    return _Scan(worker, fingerprint, frames, pos, size, torn)


# --------------------------------------------------------------------------- writer


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
                f.write(_encode_header(self.worker, self.plan_fingerprint))
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
        scan = _scan(self.path, self._f.fileno(), self.plan_fingerprint, self.worker)
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

    def append_batch(self, batch: int, records: Sequence[BackupRecord | RawRecord]) -> None:
        """Append one batch as one frame, then flush and ``os.fsync`` before returning.

        Once this returns, the batch survives a crash. If it raises, the file is cut back to
        where it was (nothing of the batch is kept). A batch number already in the file is
        refused with ``ValueError``: its first backup holds the true originals and must not be
        shadowed (check :meth:`committed_batches` on resume and skip those batches' backup).
        """
        if self._f.closed or self._broken:
            raise ValueError(f"{self.path}: writer is closed")
        if isinstance(batch, bool) or not isinstance(batch, int) or not 0 <= batch <= _MAX_BATCH:
            raise ValueError(f"batch must be an int in [0, 2**64), got {batch!r}")
        if batch in self._committed:
            raise ValueError(
                f"batch {batch} is already backed up in {self.path.name}; "
                "its first backup holds the true originals"
            )
        payload = encode_records(records)
        if len(payload) > _MAX_PAYLOAD:
            raise ValueError(f"batch {batch} is {len(payload)} bytes; split it (max 4 GiB)")
        head = _FRAME_HEAD.pack(FRAME_MAGIC, len(payload), zlib.crc32(payload), batch, len(records))
        header = head + _U32.pack(zlib.crc32(head))
        start = self._end
        try:
            self._f.write(header)
            self._f.write(payload)
            self._f.flush()
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


# --------------------------------------------------------------------------- reader


@attrs.frozen
class _Located:
    path: Path
    ref: _FrameRef


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
                scan = _scan(path, f.fileno(), self.plan_fingerprint, worker)
            if self.plan_fingerprint is None:  # the first file decides; the others must agree
                self.plan_fingerprint = scan.fingerprint
            if scan.torn is not None:
                if strict:
                    raise BackupCorrupt(scan.torn.message(), path=path, offset=scan.torn.offset)
                log.warning("%s; ignored (that batch was never applied)", scan.torn.message())
                self.torn_tails.append(scan.torn)
            for ref in scan.frames:
                self._add(path, ref)
            self._files.append(path)
            self._bytes += scan.size

    def _data_files(self) -> list[tuple[Path, int]]:
        found = []
        for p in self.directory.iterdir():
            m = _DATA_RE.match(p.name)
            if m and p.is_file():
                found.append((p, int(m.group(1))))
        return sorted(found, key=lambda t: t[1])

    def _add(self, path: Path, ref: _FrameRef) -> None:
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
        start = ref.offset + _FRAME_SIZE
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

    def _records(self, loc: _Located) -> list[BackupRecord]:
        payload = self._payload(loc)
        try:
            return decode_records(payload, loc.ref.records)
        except ValueError as exc:
            raise BackupCorrupt(
                f"{loc.path}: batch {loc.ref.batch} at offset {loc.ref.offset}: {exc}",
                path=loc.path,
                offset=loc.ref.offset,
            ) from None

    def batch_numbers(self) -> list[int]:
        """Every committed batch number, ascending."""
        return sorted(self._index)

    def __contains__(self, batch: object) -> bool:
        return batch in self._index

    def batch(self, batch: int) -> list[BackupRecord]:
        """The records of one batch, verified. ``KeyError`` if the batch is not in the backup."""
        loc = self._index.get(batch)
        if loc is None:
            raise KeyError(f"batch {batch} is not in the backup in {self.directory}")
        return self._records(loc)

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


# --------------------------------------------------------------------------- manifest


def _canonical(manifest: Any) -> bytes:
    return json.dumps(
        manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Atomically write ``{directory}/manifest.json``.

    ``manifest`` must be JSON-serialisable (tuples come back as lists, non-str keys as str).
    It is written to a temp file, fsynced, ``os.replace``'d over the old one and the directory
    fsynced: a reader sees the old manifest or the new one, never a mix.
    """
    if not isinstance(manifest, dict):
        raise TypeError(f"manifest must be a dict, not {type(manifest).__name__}")
    directory = Path(directory)
    normal = json.loads(json.dumps(manifest, allow_nan=False))
    doc = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "crc32": zlib.crc32(_canonical(normal)),
        "manifest": normal,
    }
    text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    tmp = directory / f".{MANIFEST_NAME}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / MANIFEST_NAME)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_directory(directory)


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest dict as written. ``BackupCorrupt`` if missing, garbled, of an unknown
    format version, or its checksum does not match (edited or damaged)."""
    path = Path(directory) / MANIFEST_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BackupCorrupt(f"{path}: manifest missing", path=path) from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackupCorrupt(f"{path}: manifest is not valid JSON ({exc})", path=path) from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise BackupCorrupt(f"{path}: not an rvlm backup manifest", path=path)
    if doc.get("version") != MANIFEST_VERSION:
        raise BackupCorrupt(
            f"{path}: unknown manifest version {doc.get('version')!r} "
            f"(this rvlm reads {MANIFEST_VERSION})",
            path=path,
        )
    manifest = doc.get("manifest")
    if not isinstance(manifest, dict):
        raise BackupCorrupt(f"{path}: manifest body missing", path=path)
    if zlib.crc32(_canonical(manifest)) != doc.get("crc32"):
        raise BackupCorrupt(f"{path}: manifest checksum mismatch (edited or damaged)", path=path)
    return manifest
