"""The source's answers, kept in the backup dir so the target can be compared with them later.

Before the source stops serving, apply asks it the recall queries (per vector field, ``N``
vectors drawn from stored documents with a fixed seed, their ``k`` nearest documents) and the
user's query checks, and writes the answers to ``source-answers.json`` in the backup dir. Once
the target is indexed, apply asks the target the same; ``rvlm validate --backup-dir D`` asks it
again later, against the same stored answers (the source may be long gone).

File format (JSON, no code is ever loaded from it)::

    {"format": "rvlm-source-answers", "version": 1, "crc32": <crc32 of the canonical JSON of
     "answers">, "answers": {
        "plan_fingerprint": "...", "index": "<source index>", "seed": 0,
        "fields": [{"field": "emb", "target_field": "emb", "datatype": "float32",
                    "dims": 128, "k": 10, "fetch": 20,
                    "probes": [{"key": "doc:17", "vector": "<base64, little-endian>",
                                "answer": {"total": 20, "keys": [...], "scores": [...]}}]}],
        "checks": [{"check": {<the query check as in the file>} or {"name": "fetch:<id>"},
                    "answer": {"total": ..., "keys": [...]}}]}}

Keys are text (bytes that are not UTF-8 kept with ``surrogateescape``). The file is written to
a temporary file, fsynced and renamed into place (the directory fsynced), so a reader sees all
of it or none. Loading checks the format, version, checksum and every value's type, and that it
belongs to the plan in hand; anything else is :class:`~rvlm.core.storage.files.BackupCorrupt`
with one line.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from rvlm.core.convert import items
from rvlm.core.errors import RvlmError
from rvlm.core.quality.checks import QueryCheck, parse_query_checks
from rvlm.core.quality.search import Answer
from rvlm.core.storage.files import BackupCorrupt, fsync_directory

ANSWERS_NAME = "source-answers.json"
ANSWERS_FORMAT = "rvlm-source-answers"
ANSWERS_VERSION = 1


@attrs.frozen(kw_only=True)
class Probe:
    """One recall query: the document its vector came from, the vector (bytes in the source
    field's datatype) and the source's answer."""

    key: str
    vector: bytes
    answer: Answer


@attrs.frozen(kw_only=True)
class FieldProbes:
    """The recall queries of one vector field. ``field`` is its name in the source,
    ``target_field`` in the target; ``k`` the recall depth, ``fetch`` how many neighbours the
    source was asked for (more than ``k``: ties at the k-th distance)."""

    field: str
    target_field: str
    datatype: str
    dims: int
    k: int
    fetch: int
    probes: tuple[Probe, ...] = attrs.field(converter=items)


@attrs.frozen(kw_only=True)
class StoredCheck:
    """A query check as the source answered it. ``check`` is the query (None for rvl's
    ``fetch:<id>`` / ``key:<key>`` existence checks, named by ``name``)."""

    name: str
    check: QueryCheck | None
    answer: Answer


@attrs.frozen(kw_only=True)
class SourceAnswers:
    """Everything the source answered, bound to one plan."""

    plan_fingerprint: str
    index: str
    seed: int
    fields: tuple[FieldProbes, ...] = attrs.field(default=(), converter=items)
    checks: tuple[StoredCheck, ...] = attrs.field(default=(), converter=items)

    def field(self, name: str) -> FieldProbes | None:
        return next((f for f in self.fields if f.field == name), None)

    def check_answers(self) -> dict[str, Answer]:
        return {c.name: c.answer for c in self.checks}

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan_fingerprint": self.plan_fingerprint,
            "index": self.index,
            "seed": self.seed,
            "fields": [{
                "field": f.field, "target_field": f.target_field, "datatype": f.datatype,
                "dims": f.dims, "k": f.k, "fetch": f.fetch,
                "probes": [{"key": p.key, "vector": base64.b64encode(p.vector).decode("ascii"),
                            "answer": p.answer.to_dict()} for p in f.probes],
            } for f in self.fields],
            "checks": [{"check": c.check.to_dict() if c.check else {"name": c.name},
                        "answer": c.answer.to_dict()} for c in self.checks],
        }


def _canonical(body: Any) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def write_answers(directory: str | Path, answers: SourceAnswers) -> Path:
    """Write ``source-answers.json`` atomically (temp file, fsync, rename, fsync the dir)."""
    directory = Path(directory)
    body = answers.to_dict()
    doc = {"format": ANSWERS_FORMAT, "version": ANSWERS_VERSION,
           "crc32": zlib.crc32(_canonical(body)), "answers": body}
    path = directory / ANSWERS_NAME
    tmp = directory / f".{ANSWERS_NAME}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="ascii") as f:
            f.write(json.dumps(doc, sort_keys=True, ensure_ascii=True, allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_directory(directory)
    return path


def _need(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{where}{key} is missing or of the wrong type")
    return value


def _probe(data: Any, datatype: str, dims: int, where: str) -> Probe:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} is not a mapping")
    text = _need(data, "vector", str, f"{where}.")
    try:
        vector = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}.vector is not base64") from None
    from rvlm.core.vectors import WIDTH

    if len(vector) != dims * WIDTH[datatype]:
        raise ValueError(f"{where}.vector has {len(vector)} bytes, expected "
                         f"{dims * WIDTH[datatype]}")
    return Probe(key=_need(data, "key", str, f"{where}."), vector=vector,
                 answer=Answer.from_dict(_need(data, "answer", Mapping, f"{where}.")))


def _fields(data: Any) -> FieldProbes:
    if not isinstance(data, Mapping):
        raise ValueError("a fields entry is not a mapping")
    name = _need(data, "field", str, "fields[].")
    where = f"fields[{name}]."
    datatype = _need(data, "datatype", str, where)
    from rvlm.core.vectors import WIDTH

    if datatype not in WIDTH:
        raise ValueError(f"{where}datatype {datatype!r} is unknown")
    dims, k, fetch = (_need(data, key, int, where) for key in ("dims", "k", "fetch"))
    if dims < 1 or k < 1 or fetch < k:
        raise ValueError(f"{where}dims, k or fetch is out of range")
    probes = _need(data, "probes", list, where)
    return FieldProbes(field=name, target_field=_need(data, "target_field", str, where),
                       datatype=datatype, dims=dims, k=k, fetch=fetch,
                       probes=[_probe(p, datatype, dims, f"{where}probes[{i}]")
                               for i, p in enumerate(probes)])


def _check(data: Any) -> StoredCheck:
    if not isinstance(data, Mapping):
        raise ValueError("a checks entry is not a mapping")
    spec = _need(data, "check", Mapping, "checks[].")
    answer = Answer.from_dict(_need(data, "answer", Mapping, "checks[]."))
    name = _need(spec, "name", str, "checks[].check.")
    if "query" not in spec:
        if not name.startswith(("fetch:", "key:")):
            raise ValueError(f"checks[{name}] has no query")
        return StoredCheck(name=name, check=None, answer=answer)
    try:
        [check] = parse_query_checks({"queries": [dict(spec)]}, "stored check").queries
    except RvlmError as exc:
        raise ValueError(str(exc)) from None
    return StoredCheck(name=name, check=check, answer=answer)


def read_answers(directory: str | Path, plan_fingerprint: str) -> SourceAnswers | None:
    """The stored answers of the plan with ``plan_fingerprint``; None when the backup dir has
    none. :class:`BackupCorrupt` (one line) when the file is damaged, edited, of an unknown
    version, or belongs to another plan."""
    path = Path(directory) / ANSWERS_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackupCorrupt(f"{path}: not valid JSON ({exc})", path=path) from None
    if not isinstance(doc, dict) or doc.get("format") != ANSWERS_FORMAT:
        raise BackupCorrupt(f"{path}: not an rvlm source answers file", path=path)
    if doc.get("version") != ANSWERS_VERSION:
        raise BackupCorrupt(f"{path}: unknown version {doc.get('version')!r} (this rvlm reads "
                            f"{ANSWERS_VERSION})", path=path)
    body = doc.get("answers")
    if not isinstance(body, dict) or zlib.crc32(_canonical(body)) != doc.get("crc32"):
        raise BackupCorrupt(f"{path}: checksum mismatch (edited or damaged)", path=path)
    if body.get("plan_fingerprint") != plan_fingerprint:
        raise BackupCorrupt(f"{path}: the answers belong to another plan (fingerprint "
                            f"{body.get('plan_fingerprint')!r}, this plan's is "
                            f"{plan_fingerprint!r})", path=path)
    try:
        return SourceAnswers(
            plan_fingerprint=plan_fingerprint,
            index=_need(body, "index", str, ""),
            seed=_need(body, "seed", int, ""),
            fields=[_fields(f) for f in _need(body, "fields", list, "")],
            checks=[_check(c) for c in _need(body, "checks", list, "")],
        )
    except (ValueError, TypeError) as exc:
        raise BackupCorrupt(f"{path}: malformed ({exc})", path=path) from None
