"""A backup record (the originals of one key) and a batch payload: the record layout of the
backup format (see :mod:`rvlm.core.storage.backup`)."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import attrs

_REC = struct.Struct("<IBIqI")  # key len, flags, new_key len, ttl_ms, field count
_FIELD = struct.Struct("<II")  # name len, value len (_NONE_LEN: field did not exist)
_NONE_LEN = 0xFFFFFFFF
MAX_ITEM_LEN = 0xFFFFFFFE  # longest key / field name / value a record can hold
_REC_NEW_KEY = 1
_REC_TTL = 2
_REC_REPLACED = 4
_REC_WRITTEN = 8
_REC_KNOWN = _REC_NEW_KEY | _REC_TTL | _REC_REPLACED | _REC_WRITTEN
_WRITTEN = struct.Struct("<8sI")  # digest, name count
_NAME = struct.Struct("<I")  # name len


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


def _check_digest(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bytes) or len(value) != 8:
        raise ValueError(f"digest must be 8 bytes, not {value!r:.40}")


def _to_names(value: Iterable[bytes]) -> tuple[bytes, ...]:
    return tuple(value)


def _check_names(_inst: object, _attr: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    for n in value:
        if not isinstance(n, bytes) or len(n) > MAX_ITEM_LEN:
            raise TypeError(f"written names must be bytes, not {type(n).__name__}")


@attrs.frozen
class Written:
    """What the migration wrote to a document: a digest (8 bytes) of the values it set and the
    names it deleted (``names``, hash fields or JSON paths, in digest order), or of the whole
    new document when ``names`` is empty and the record is *replaced*
    (:mod:`rvlm.core.redis.docio.verify` computes and checks it)."""

    digest: bytes = attrs.field(validator=_check_digest)
    names: tuple[bytes, ...] = attrs.field(default=(), converter=_to_names,
                                           validator=_check_names)


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
    #: what the migration wrote (None in backups made before digests, format version 1)
    written: Written | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(Written)))


#: A backup record as a plain tuple, for the executor's hot path (no object per record):
#: ``(key, new_key, fields, ttl_ms, replaced, written)`` with ``fields`` a tuple of
#: ``(name, value)`` pairs and ``written`` a :class:`Written` or None (a 5-tuple without it is
#: accepted too); the same meaning and the same limits as :class:`BackupRecord`, checked by
#: :func:`encode_records` before anything is written.
RawRecord = tuple[Any, ...]


def raw_record(record: BackupRecord) -> RawRecord:
    """``record`` as a :data:`RawRecord`."""
    return (record.key, record.new_key, tuple((f.name, f.value) for f in record.fields),
            record.ttl_ms, record.replaced, record.written)


def _item_ok(value: object) -> bool:
    return isinstance(value, bytes) and len(value) <= MAX_ITEM_LEN


def _raw_problem(r: Any) -> str | None:
    """Why the raw record ``r`` breaks :class:`BackupRecord`'s rules (None: it does not)."""
    if not isinstance(r, tuple) or len(r) not in (5, 6):
        return f"records must be BackupRecord or 6-tuples, not {type(r).__name__}"
    key, new_key, fields, ttl, replaced = r[:5]
    if len(r) == 6 and r[5] is not None and not isinstance(r[5], Written):
        return f"written must be a Written or None, not {type(r[5]).__name__}"
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
    blocks: dict[int, bytes] = {}  # id of a written names tuple: its bytes in the record
    held: list[tuple[bytes, ...]] = []  # those tuples
    absents: dict[bytes, bytes] = {}  # a field name: its bytes when it did not exist
    for r in records:
        if type(r) is tuple:
            if len(r) == 6:
                key, new_key_or_none, fields, ttl_ms, replaced, written = r
            else:
                key, new_key_or_none, fields, ttl_ms, replaced = r
                written = None
            # the common case checked inline; anything unusual goes to _raw_problem
            if not (type(key) is bytes and len(key) <= limit
                    and (new_key_or_none is None or type(new_key_or_none) is bytes)
                    and (ttl_ms is None or type(ttl_ms) is int)
                    and type(replaced) is bool and type(fields) is tuple
                    and (written is None or type(written) is Written)):
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
            written = r.written
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
        if written is not None:
            flags |= _REC_WRITTEN
        append(rec_pack(len(key), flags, len(new_key), ttl, fields_n))
        append(key)
        if new_key:
            append(new_key)
        if written is not None:
            names = written.names
            block = blocks.get(id(names))
            if block is None:  # (the records of a batch mostly share one names tuple)
                block = b"".join([_NAME.pack(len(name)) + name for name in names])
                blocks[id(names)] = block
                held.append(names)  # its id stays its own until the end of the call
            append(_WRITTEN.pack(written.digest, len(names)))
            append(block)
        for pair in pairs:
            name, value = pair
            if type(name) is not bytes and not isinstance(name, bytes):
                raise TypeError(f"field name must be bytes, not {type(name).__name__}")
            if len(name) > limit:
                raise ValueError(f"field name is {len(name)} bytes; at most {limit} are "
                                 "supported")
            if value is None:
                absent = absents.get(name)
                if absent is None:
                    absent = absents[name] = field_pack(len(name), none_len) + name
                append(absent)
            else:
                if type(value) is not bytes and not isinstance(value, bytes):
                    raise TypeError(f"field value must be bytes or None, not "
                                    f"{type(value).__name__}")
                if len(value) > limit:
                    raise ValueError(f"field value is {len(value)} bytes; at most {limit} "
                                     "are supported")
                append(field_pack(len(name), len(value)) + name)
                append(value)
    return b"".join(parts)


class _Malformed(Exception):
    pass


_T = TypeVar("_T")


def _parsed(decode: Callable[[bytes, int], list[_T]], payload: bytes, count: int) -> list[_T]:
    """``decode(payload, count)``, any parse error turned into one ``ValueError``."""
    try:
        return decode(payload, count)
    except (_Malformed, struct.error, TypeError, ValueError) as exc:
        raise ValueError(f"malformed batch payload: {exc or type(exc).__name__}") from None


def decode_records(payload: bytes, count: int) -> list[BackupRecord]:
    """Parse a batch payload of ``count`` records; raises ``ValueError`` if it is malformed."""
    return _parsed(_decode, payload, count)


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
        written: Written | None = None
        if flags & _REC_WRITTEN:
            digest, nnames = _WRITTEN.unpack_from(payload, p)
            p += _WRITTEN.size
            names: list[bytes] = []
            for _ in range(nnames):
                (name_len,) = _NAME.unpack_from(payload, p)
                p += _NAME.size
                if p + name_len > n:
                    raise _Malformed("written name runs past the end of the payload")
                names.append(payload[p : p + name_len])
                p += name_len
            written = Written(digest, tuple(names))
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
                                bool(flags & _REC_REPLACED), written))
    if p != n:
        raise _Malformed(f"{n - p} unexpected bytes after {count} records")
    return out


#: What a verification needs of a record, without its originals: ``(key, new_key, replaced,
#: written)``.
WrittenRef = tuple[bytes, "bytes | None", bool, "Written | None"]


def decode_written(payload: bytes, count: int) -> list[WrittenRef]:
    """The key, new key, replaced flag and written digest of each of ``count`` records,
    skipping the originals (the verification pass reads every record of a backup: this is its
    hot path). Raises ``ValueError`` if the payload is malformed."""
    return _parsed(_decode_written, payload, count)


def trusted_written(digest: bytes, names: tuple[bytes, ...]) -> Written:
    """A :class:`Written` without the validators, for the hot paths: from a checksummed frame,
    or from the executor, which computed an 8-byte digest over byte names itself."""
    w = _new(Written)
    _set_digest(w, digest)
    _set_names(w, names)
    return w


# the frozen class's slots, set without its __setattr__ (which refuses) nor a lookup by name
_new = object.__new__
_set_digest = Written.__dict__["digest"].__set__
_set_names = Written.__dict__["names"].__set__


def _decode_written(payload: bytes, count: int) -> list[WrittenRef]:
    out: list[WrittenRef] = []
    # records of a batch mostly write the same names: the last names block is reused when
    # the next record's block is the same bytes
    last_block = b""
    last_names: tuple[bytes, ...] = ()
    n = len(payload)
    p = 0
    rec_unpack = _REC.unpack_from
    field_unpack = _FIELD.unpack_from
    rec_size = _REC.size
    field_size = _FIELD.size
    none_len = _NONE_LEN
    for _ in range(count):
        klen, flags, nklen, _ttl, nfields = rec_unpack(payload, p)
        p += rec_size
        if flags & ~_REC_KNOWN:
            raise _Malformed(f"unknown record flags {flags:#x}")
        key = payload[p : p + klen]
        p += klen
        new_key = payload[p : p + nklen] if flags & _REC_NEW_KEY else None
        p += nklen
        written: Written | None = None
        if flags & _REC_WRITTEN:
            digest, nnames = _WRITTEN.unpack_from(payload, p)
            p += _WRITTEN.size
            if nnames == len(last_names) and last_block and payload.startswith(last_block, p):
                names = last_names
                p += len(last_block)
            else:
                start = p
                found = []
                for _ in range(nnames):
                    (name_len,) = _NAME.unpack_from(payload, p)
                    p += _NAME.size
                    found.append(payload[p : p + name_len])
                    p += name_len
                names = tuple(found)
                last_block, last_names = payload[start:p], names
            written = trusted_written(digest, names)
        for _ in range(nfields):
            name_len, value_len = field_unpack(payload, p)
            p += field_size + name_len + (0 if value_len == none_len else value_len)
        if p > n:
            raise _Malformed("record runs past the end of the payload")
        out.append((key, new_key, bool(flags & _REC_REPLACED), written))
    if p != n:
        raise _Malformed(f"{n - p} unexpected bytes after {count} records")
    return out


__all__ = ["MAX_ITEM_LEN", "BackupRecord", "FieldOriginal", "RawRecord", "Written", "WrittenRef",
           "decode_records", "decode_written", "encode_records", "raw_record",
           "trusted_written"]
