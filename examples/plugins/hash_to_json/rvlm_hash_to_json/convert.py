"""Pure conversion of hash documents to JSON documents (no Redis, no I/O).

A conversion is described by a table of :class:`FieldRule` (one per indexed field: the hash
field it reads, the JSON path it writes, how to type the value) and :class:`Options` (what to do
with tags, binary values and fields no index covers). The table is computed at plan time and
recorded in the plan, so apply converts exactly what the plan says.

Typing, field by field:

* ``vector``: the little-endian bytes become an array of numbers (floats, or ints for
  int8/uint8), exactly: every datatype widens to float64 without rounding.
* ``numeric``: ``"42"`` becomes ``42``, ``"2.5"`` becomes ``2.5``.
* ``tag``: ``"a, b"`` becomes ``["a", "b"]`` (``tags: array``, split on the field's separator
  and trimmed like the server does) or stays a string (``tags: string``); the target field
  keeps the separator either way, so tag queries match the same documents.
* ``text``, ``geo`` (``"lon,lat"``), ``geoshape`` (WKT): UTF-8 strings.
* a field no index covers: a UTF-8 string; a value that is not UTF-8 is refused
  (``binary: error``) or kept as ``{"base64": "..."}`` (``binary: base64``); or dropped
  (``unindexed: drop``).

A value the conversion cannot keep faithfully raises :class:`ConversionError`.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from rvlm.plugin import DATATYPE_WIDTH

IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SEGMENT = re.compile(r'\.([A-Za-z_][A-Za-z0-9_]*)|\[("(?:[^"\\]|\\.)*")\]')
_INT = re.compile(r"^[+-]?[0-9]+$")
TAG_MODES = ("array", "string")
BINARY_MODES = ("error", "base64")
UNINDEXED_MODES = ("keep", "drop")


class ConversionError(ValueError):
    """A value that cannot be converted faithfully; the message names the field."""


def parse_path(path: str) -> tuple[str, ...]:
    """The object keys of a plain JSON path: ``$.a.b`` or ``$["a b"].c`` -> ``("a", "b")``.

    Raises ValueError for anything else (wildcards, filters, array indexes): a converted
    document is built from these keys, so they must name exactly one place.
    """
    if not isinstance(path, str) or not path.startswith("$") or path == "$":
        raise ValueError(f"{path!r} is not a plain JSON path like $.a.b")
    keys: list[str] = []
    pos = 1
    while pos < len(path):
        m = _SEGMENT.match(path, pos)
        if m is None:
            raise ValueError(f"{path!r} is not a plain JSON path like $.a.b or $[\"a b\"]")
        keys.append(m.group(1) if m.group(1) is not None else json.loads(m.group(2)))
        pos = m.end()
    return tuple(keys)


def default_path(name: str) -> str:
    """Where a hash field goes by default: ``$.name``, or ``$["odd name"]``."""
    return f"$.{name}" if IDENT.match(name) else f"$[{json.dumps(name)}]"


@attrs.frozen(kw_only=True)
class FieldRule:
    """How one indexed hash field becomes one JSON value."""

    hash: str
    path: str
    type: str
    datatype: str | None = None
    dims: int | None = None
    separator: str = ","

    @property
    def keys(self) -> tuple[str, ...]:
        return parse_path(self.path)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"hash": self.hash, "path": self.path, "type": self.type}
        if self.type == "vector":
            out.update(datatype=self.datatype, dims=self.dims)
        if self.type == "tag":
            out["separator"] = self.separator
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FieldRule:
        return cls(**dict(data))


@attrs.frozen(kw_only=True)
class Options:
    """The user's choices from the ``hash_to_json`` patch section (see the README)."""

    prefix: str | None = None
    paths: dict[str, str] = attrs.field(factory=dict)
    tags: str = "array"
    binary: str = "error"
    unindexed: str = "keep"

    def to_dict(self) -> dict[str, Any]:
        return {"paths": dict(self.paths), "tags": self.tags, "binary": self.binary,
                "unindexed": self.unindexed}

    @classmethod
    def parse(cls, value: Any, where: str = "changes.hash_to_json") -> Options:
        """Validate the section's YAML value; raises ValueError naming the key."""
        if value is None or value is True:
            value = {}
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} must be a mapping (or empty), not {type(value).__name__}")
        known = {"prefix", "paths", "tags", "binary", "unindexed"}
        extra = sorted(set(map(str, value)) - known)
        if extra:
            raise ValueError(f"{where}: unknown key {extra[0]!r} (expected "
                             f"{', '.join(sorted(known))})")
        prefix = value.get("prefix")
        if prefix is not None and (not isinstance(prefix, str) or not prefix):
            raise ValueError(f"{where}.prefix must be a non-empty string")
        paths = value.get("paths") or {}
        if not isinstance(paths, Mapping):
            raise ValueError(f"{where}.paths must map hash field names to JSON paths")
        for name, path in paths.items():
            try:
                parse_path(path)
            except ValueError as exc:
                raise ValueError(f"{where}.paths.{name}: {exc}") from None
        out = {}
        for key, choices in (("tags", TAG_MODES), ("binary", BINARY_MODES),
                             ("unindexed", UNINDEXED_MODES)):
            v = value.get(key, choices[0])
            if v not in choices:
                raise ValueError(f"{where}.{key} must be one of {', '.join(choices)}, not {v!r}")
            out[key] = v
        return cls(prefix=prefix, paths={str(k): str(v) for k, v in paths.items()}, **out)


def check_layout(paths: Sequence[tuple[str, str]]) -> None:
    """Refuse two hash fields mapped to one JSON place, or one inside another's value.

    ``paths`` holds ``(hash field, JSON path)`` pairs.
    """
    seen: dict[tuple[str, ...], str] = {}
    for name, path in paths:
        keys = parse_path(path)
        for other_keys, other in seen.items():
            short, long_ = sorted((keys, other_keys), key=len)
            if long_[: len(short)] == short:
                raise ValueError(f"hash fields {other!r} and {name!r} map to overlapping JSON "
                                 f"paths ({path} and {'$.' + '.'.join(other_keys)}); set "
                                 "different paths for them")
        seen[keys] = name


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConversionError(f"{what} is not UTF-8 text") from None


def _number(raw: bytes, what: str) -> int | float:
    text = _text(raw, what).strip()
    try:
        value: int | float = int(text) if _INT.match(text) else float(text)
    except ValueError:
        raise ConversionError(f"{what} = {text[:40]!r} is not a number") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ConversionError(f"{what} = {text!r} cannot be stored in JSON")
    return value


def _tags(raw: bytes, separator: str, mode: str, what: str) -> str | list[str]:
    text = _text(raw, what)
    if mode == "string":
        return text
    return [t.strip() for t in text.split(separator) if t.strip()]


def _put(doc: dict[str, Any], keys: tuple[str, ...], value: Any, what: str) -> None:
    node = doc
    for k in keys[:-1]:
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConversionError(f"{what}: {k!r} already holds a value, cannot nest under it")
        node = nxt
    if keys[-1] in node:
        raise ConversionError(f"{what}: two hash fields map to the same JSON path")
    node[keys[-1]] = value


def _unindexed(name: str, raw: bytes, options: Options, what: str) -> Any:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        if options.binary == "base64":
            return {"base64": base64.b64encode(raw).decode("ascii")}
        raise ConversionError(
            f"{what} is binary (not UTF-8) and no index covers it; set "
            "hash_to_json.binary: base64 to keep it as {\"base64\": ...}, or index it") from None


def convert_batch(
    documents: Sequence[Mapping[str, bytes]], rules: Sequence[FieldRule], options: Options,
    keys: Sequence[bytes] | None = None,
) -> list[dict[str, Any] | ConversionError]:
    """Convert a batch of hash documents (field name -> raw bytes) to JSON documents.

    Returns, per document, the JSON document or the :class:`ConversionError` that stops it,
    so a caller can either raise the first error or report them all. Vectors of the whole
    batch are decoded with one numpy call per field.
    """
    label = [k.decode(errors="replace") for k in keys] if keys else [
        f"document {i}" for i in range(len(documents))]
    by_hash = {r.hash: r for r in rules}
    errors: dict[int, ConversionError] = {}
    decoded: dict[tuple[int, str], Any] = {}
    for rule in rules:
        if rule.type != "vector":
            continue
        assert rule.datatype is not None and rule.dims is not None
        size = rule.dims * DATATYPE_WIDTH[rule.datatype]
        picked: list[int] = []
        raws: list[bytes] = []
        for i, doc in enumerate(documents):
            raw = doc.get(rule.hash)
            if raw is None:
                continue
            if len(raw) != size:
                errors.setdefault(i, ConversionError(
                    f"{label[i]}: vector {rule.hash!r} has {len(raw)} bytes, expected {size} "
                    f"({rule.dims} x {rule.datatype}); the source index could not index it "
                    "either: fix or delete the document first"))
                continue
            picked.append(i)
            raws.append(bytes(raw))
        if raws:
            from rvlm.plugin import decode_batch  # numpy: loaded by a run that converts

            matrix = decode_batch(raws, rule.datatype, rule.dims)
            as_int = rule.datatype in ("int8", "uint8")
            rows = matrix.astype("int64").tolist() if as_int else matrix.tolist()
            for i, row in zip(picked, rows, strict=True):
                decoded[(i, rule.hash)] = row
    out: list[dict[str, Any] | ConversionError] = []
    for i, doc in enumerate(documents):
        if i in errors:
            out.append(errors[i])
            continue
        result: dict[str, Any] = {}
        try:
            for name, raw in doc.items():
                what = f"{label[i]}: field {name!r}"
                found = by_hash.get(name)
                if found is None:
                    if options.unindexed == "drop":
                        continue
                    value = _unindexed(name, bytes(raw), options, what)
                    path = options.paths.get(name) or default_path(name)
                    _put(result, parse_path(path), value, what)
                    continue
                rule = found
                if rule.type == "vector":
                    value = decoded[(i, name)]
                elif rule.type == "numeric":
                    value = _number(bytes(raw), what)
                elif rule.type == "tag":
                    value = _tags(bytes(raw), rule.separator, options.tags, what)
                else:
                    value = _text(bytes(raw), what)
                _put(result, rule.keys, value, what)
        except ConversionError as exc:
            out.append(exc)
            continue
        out.append(result)
    return out
