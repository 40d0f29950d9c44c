"""The query check file (``--query-check-file``): the user's own queries, asked before and after.

Two formats, in one YAML file or mixed:

* rvl migrate's, accepted as is: ``fetch_ids: [id, ...]`` (the document ``<prefix><sep><id>``
  must exist after the migration, the prefix and separator of the target index) and
  ``keys_exist: [key, ...]`` (the key must exist, where it lives after a prefix change);
* rvlm's, for real queries::

      queries:
        - name: red_cheap
          query: "@category:{red} @price:[0 5]"
        - name: red_near
          query: "(@category:{red})=>[KNN 5 @embedding $vec]"
          params: {vec: [0.12, -0.5, ...]}   # a list of numbers: encoded to the field's datatype
          order: true                        # also compare the order (default: the set of ids)
          limit: 100                         # ids compared (default 1000)

Each query runs against the source before it stops serving and against the target after
(``FT.SEARCH ... NOCONTENT LIMIT 0 <limit> DIALECT 2``); the ids must be the same, and so must
the total count. A list parameter feeds a ``KNN ... @field $param`` or ``@field:[VECTOR_RANGE
... $param]`` clause: it is encoded to that field's datatype in each index (for the target, the
way the documents were converted). A query with one KNN clause is sorted by its distance
(``SORTBY`` on the clause's ``AS`` name, or the server's default ``__<field>_score``): without
it the server returns KNN results in document-id order, which a rebuilt index renumbers.
Other queries come in the server's relevance order, ties by document id: ``order: true`` is
for KNN queries.

Bad input is refused with one line naming the file, the entry and the problem
(:class:`~rvlm.core.errors.RvlmError`), before anything runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import redis
import yaml

from rvlm.core.errors import RvlmError
from rvlm.core.plugins.checks import CheckResult
from rvlm.core.quality.search import Answer, search
from rvlm.core.schema.model import IndexSchema, VectorAttrs

DEFAULT_LIMIT = 1000
MAX_LIMIT = 100_000
TOP_KEYS = ("queries", "fetch_ids", "keys_exist")
QUERY_KEYS = ("name", "query", "params", "order", "limit")

_ATTR = r"(?P<field>(?:\\.|[^\s\]\\:])+)"
_KNN = re.compile(r"KNN\s+\S+\s+@" + _ATTR + r"\s+\$(?P<param>\w+)(?P<rest>[^\]]*)\]",
                  re.IGNORECASE)
_RANGE = re.compile(r"@" + _ATTR + r"\s*:\s*\[\s*VECTOR_RANGE\s+\S+\s+\$(?P<param>\w+)",
                    re.IGNORECASE)
_AS = re.compile(r"\bAS\s+(?P<alias>[^\s\]]+)", re.IGNORECASE)

#: A parameter value: text, a number, or a vector (a list of numbers).
ParamValue = str | int | float | tuple[float, ...]
#: ``encode(field, numbers) -> bytes``: a vector parameter as the index's datatype wants it.
Encoder = Callable[[str, Sequence[float]], bytes]
KeyMap = Callable[[str], str]


def _unescape(name: str) -> str:
    return re.sub(r"\\(.)", r"\1", name)


@attrs.frozen(kw_only=True)
class QueryCheck:
    """One of rvlm's ``queries`` (see the module docstring)."""

    name: str
    query: str
    params: dict[str, ParamValue] = attrs.field(factory=dict)
    order: bool = False
    limit: int = DEFAULT_LIMIT

    def vector_fields(self) -> dict[str, str]:
        """Parameter name -> the vector attribute it feeds (KNN and VECTOR_RANGE clauses)."""
        out: dict[str, str] = {}
        for pattern in (_KNN, _RANGE):
            for m in pattern.finditer(self.query):
                out.setdefault(m.group("param"), _unescape(m.group("field")))
        return out

    def sort_by(self) -> str | None:
        """The distance a query with exactly one KNN clause is sorted by, else None."""
        found = list(_KNN.finditer(self.query))
        if len(found) != 1:
            return None
        alias = _AS.search(found[0].group("rest"))
        return alias.group("alias") if alias else f"__{_unescape(found[0].group('field'))}_score"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "query": self.query}
        if self.params:
            out["params"] = {k: list(v) if isinstance(v, tuple) else v
                             for k, v in self.params.items()}
        if self.order:
            out["order"] = True
        if self.limit != DEFAULT_LIMIT:
            out["limit"] = self.limit
        return out


@attrs.frozen(kw_only=True)
class QueryChecks:
    """A loaded query check file: rvlm's ``queries`` and rvl's ``fetch_ids`` / ``keys_exist``."""

    source: str = "query check file"
    queries: tuple[QueryCheck, ...] = ()
    fetch_ids: tuple[str, ...] = ()
    keys_exist: tuple[str, ...] = ()

    def names(self) -> list[str]:
        """Every check's name, in file order: each query's, ``fetch:<id>``, ``key:<key>``."""
        return ([q.name for q in self.queries] + [f"fetch:{i}" for i in self.fetch_ids]
                + [f"key:{k}" for k in self.keys_exist])

    def result_name(self, name: str) -> str:
        """The name a check's result has in a report: ``query_check:<name>`` for a query,
        ``fetch:<id>`` / ``key:<key>`` (rvl's) for the others."""
        return f"query_check:{name}" if self.query(name) is not None else name

    def query(self, name: str) -> QueryCheck | None:
        return next((q for q in self.queries if q.name == name), None)

    def only(self, names: Collection[str]) -> QueryChecks:
        """The checks named in ``names`` (see :meth:`names`), in file order."""
        return attrs.evolve(
            self, queries=tuple(q for q in self.queries if q.name in names),
            fetch_ids=tuple(i for i in self.fetch_ids if f"fetch:{i}" in names),
            keys_exist=tuple(k for k in self.keys_exist if f"key:{k}" in names))

    def __len__(self) -> int:
        return len(self.queries) + len(self.fetch_ids) + len(self.keys_exist)


# --------------------------------------------------------------------------- loading


def load_query_checks(path: str | Path) -> QueryChecks:
    """Read and check a query check file; :class:`RvlmError` with one line if it is bad."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RvlmError(f"{p}: query check file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RvlmError(f"{p}: cannot read the query check file ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RvlmError(f"{p}: not valid YAML ({where}{problem})") from None
    return parse_query_checks(data, str(p))


def _number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _scalar_list(data: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RvlmError(f"{where}: {key}: expected a list of ids, got {type(value).__name__}")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (str, int)) or item == "":
            raise RvlmError(f"{where}: {key}[{i}]: expected a non-empty string or an integer, "
                            f"got {item!r}")
        out.append(str(item))
    return tuple(out)


def _param(value: Any, where: str) -> ParamValue:
    if isinstance(value, str) or _number(value):
        return value
    if isinstance(value, list):
        if not value:
            raise RvlmError(f"{where}: an empty list; a vector needs its numbers")
        bad = [x for x in value if not _number(x)]
        if bad:
            raise RvlmError(f"{where}: expected a list of finite numbers, found {bad[0]!r}")
        return tuple(float(x) for x in value)
    raise RvlmError(f"{where}: expected a string, a number or a list of numbers, got "
                    f"{type(value).__name__}")


def _query(item: Any, where: str) -> QueryCheck:
    if not isinstance(item, Mapping):
        raise RvlmError(f"{where}: expected a mapping with name and query, got "
                        f"{type(item).__name__}")
    unknown = [str(k) for k in item if k not in QUERY_KEYS]
    if unknown:
        raise RvlmError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(QUERY_KEYS)})")
    name, query = item.get("name"), item.get("query")
    if not isinstance(name, str) or not name.strip():
        raise RvlmError(f"{where}: name: expected a non-empty string, got {name!r}")
    where = f"{where} ({name})"
    if not isinstance(query, str) or not query.strip():
        raise RvlmError(f"{where}: query: expected a non-empty query string, got {query!r}")
    params_in = item.get("params") or {}
    if not isinstance(params_in, Mapping):
        raise RvlmError(f"{where}: params: expected a mapping of name: value, got "
                        f"{type(params_in).__name__}")
    params: dict[str, ParamValue] = {}
    for key, value in params_in.items():
        if not isinstance(key, str) or not re.fullmatch(r"\w+", key):
            raise RvlmError(f"{where}: params: {key!r} is not a parameter name (letters, "
                            "digits, _)")
        params[key] = _param(value, f"{where}: params.{key}")
    order = item.get("order", False)
    if not isinstance(order, bool):
        raise RvlmError(f"{where}: order: expected true or false, got {order!r}")
    limit = item.get("limit", DEFAULT_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= MAX_LIMIT:
        raise RvlmError(f"{where}: limit: expected an integer from 1 to {MAX_LIMIT}, "
                        f"got {limit!r}")
    check = QueryCheck(name=name, query=query, params=params, order=order, limit=limit)
    used = check.vector_fields()
    for key, value in params.items():
        if isinstance(value, tuple) and key not in used:
            raise RvlmError(f"{where}: params.{key} is a list of numbers, but no KNN or "
                            f"VECTOR_RANGE clause of the query uses ${key}")
    missing = sorted(set(re.findall(r"\$(\w+)", query)) - set(params))
    if missing:
        raise RvlmError(f"{where}: the query uses ${missing[0]}, which params does not give")
    return check


def parse_query_checks(data: Any, source: str = "query check file") -> QueryChecks:
    """Check the parsed YAML of a query check file (see :func:`load_query_checks`)."""
    if not isinstance(data, Mapping):
        got = "an empty file" if data is None else type(data).__name__
        raise RvlmError(f"{source}: expected a mapping with queries, fetch_ids or keys_exist, "
                        f"got {got}")
    unknown = [str(k) for k in data if k not in TOP_KEYS]
    if unknown:
        raise RvlmError(f"{source}: unknown key {unknown[0]!r} (known: {', '.join(TOP_KEYS)})")
    raw = data.get("queries") or []
    if not isinstance(raw, list):
        raise RvlmError(f"{source}: queries: expected a list, got {type(raw).__name__}")
    queries = tuple(_query(item, f"{source}: queries[{i}]") for i, item in enumerate(raw))
    checks = QueryChecks(source=source, queries=queries,
                         fetch_ids=_scalar_list(data, "fetch_ids", source),
                         keys_exist=_scalar_list(data, "keys_exist", source))
    if not len(checks):
        raise RvlmError(f"{source}: no checks (give queries, fetch_ids or keys_exist)")
    seen: set[str] = set()
    for name in checks.names():
        if name in seen:
            raise RvlmError(f"{source}: two checks are named {name!r}; names must be unique")
        seen.add(name)
    return checks


# --------------------------------------------------------------------------- running


def id_key(schema: IndexSchema, doc_id: str) -> str:
    """The key of document ``doc_id`` as rvl's ``fetch`` builds it: the index's first prefix
    (a trailing separator not doubled), the key separator, the id; the id alone without a
    prefix."""
    prefix, sep = schema.index.prefix[0], schema.index.key_separator
    if not prefix:
        return doc_id
    if sep:
        prefix = prefix.rstrip(sep)
    return f"{prefix}{sep}{doc_id}"


def encoder_for(schema: IndexSchema) -> Encoder:
    """Encode a vector parameter to the datatype of ``schema``'s field (the numbers as given,
    rounded to a float datatype; an int datatype takes whole numbers in its range)."""

    def encode(field: str, numbers: Sequence[float]) -> bytes:
        f = schema.field(field)
        if f is None or not isinstance(f.attrs, VectorAttrs):
            raise RvlmError(f"index {schema.name!r} has no vector field {field!r}")
        if len(numbers) != f.attrs.dims:
            raise RvlmError(f"vector field {field!r} of index {schema.name!r} has "
                            f"{f.attrs.dims} dims, the parameter gives {len(numbers)} numbers")
        import numpy as np

        from rvlm.core import vectors

        try:
            return vectors.encode_batch(np.asarray([numbers], dtype=np.float64),
                                        f.attrs.datatype)[0]
        except vectors.VectorError as exc:
            raise RvlmError(f"vector field {field!r}: {exc}") from None

    return encode


def _exists(client: redis.Redis, keys: Sequence[str]) -> list[bool]:
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.exists(k.encode("utf-8", "surrogateescape"))
    return [bool(x) for x in pipe.execute()]


def run_checks(client: redis.Redis, schema: IndexSchema, checks: QueryChecks,
               encode: Encoder | None = None, key_map: KeyMap | None = None,
               index: str | None = None) -> dict[str, Answer]:
    """Every check against one index: check name -> :class:`Answer`.

    ``schema`` is the index's (for fetch_ids keys and vector parameters); ``index`` the name to
    query (default ``schema.name``). ``encode`` turns a vector parameter into bytes (default:
    :func:`encoder_for` the schema); an encoding problem becomes the query's error. ``key_map``
    maps ``keys_exist`` keys to where they live in this index (after a prefix change). An
    existence check answers ``total`` 1 or 0 with its key."""
    encode = encode or encoder_for(schema)
    name = index or schema.name
    out: dict[str, Answer] = {}
    for check in checks.queries:
        fields = check.vector_fields()
        params: dict[str, Any] = {}
        try:
            for key, value in check.params.items():
                if isinstance(value, tuple):
                    params[key] = encode(fields[key], value)
                else:
                    params[key] = str(value) if not isinstance(value, str) else value
        except RvlmError as exc:
            out[check.name] = Answer(error=str(exc))
            continue
        out[check.name] = search(client, name, check.query, params, limit=check.limit,
                                 sort_by=check.sort_by())
    fetch = [id_key(schema, i) for i in checks.fetch_ids]
    for doc_id, key, ok in zip(checks.fetch_ids, fetch, _exists(client, fetch), strict=True):
        out[f"fetch:{doc_id}"] = Answer(keys=(key,), total=int(ok))
    keys = [key_map(k) if key_map else k for k in checks.keys_exist]
    for given, key, ok in zip(checks.keys_exist, keys, _exists(client, keys), strict=True):
        out[f"key:{given}"] = Answer(keys=(key,), total=int(ok))
    return out


def source_problems(checks: QueryChecks, answers: Mapping[str, Answer]) -> list[str]:
    """Queries the source refused: the file is wrong for this index (refuse the migration)."""
    return [f"query check {q.name!r} fails on the source index: {answers[q.name].error}"
            for q in checks.queries if answers[q.name].error is not None]


def _ids(keys: Sequence[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:3])
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def compare_query(check: QueryCheck, source: Answer, target: Answer,
                  key_map: KeyMap | None = None) -> CheckResult:
    """Did the target answer ``check`` as the source did? (ids, total, and order if asked)."""
    name = f"query_check:{check.name}"
    if target.error is not None:
        return CheckResult(name=name, passed=False, details=f"the target refused it: "
                                                            f"{target.error}")
    if source.error is not None:
        return CheckResult(name=name, passed=False, details=f"the source refused it: "
                                                            f"{source.error}")
    want = [key_map(k) if key_map else k for k in source.keys]
    got = list(target.keys)
    if source.total != target.total:
        return CheckResult(name=name, passed=False,
                           details=f"the source found {source.total}, the target "
                                   f"{target.total}")
    if check.order:
        if got != want:
            at = next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b),
                      min(len(want), len(got)))
            return CheckResult(name=name, passed=False,
                               details=f"the order differs from position {at + 1}: source "
                                       f"{want[at:at + 3]}, target {got[at:at + 3]}")
        return CheckResult(name=name, passed=True,
                           details=f"{len(got)} ids, the same in the same order")
    if source.total > len(source.keys):
        return CheckResult(name=name, passed=True,
                           details=f"{target.total} results on both (more than limit "
                                   f"{check.limit}: compared by count)")
    missing = [k for k in want if k not in set(got)]
    extra = [k for k in got if k not in set(want)]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {_ids(missing)}")
        if extra:
            parts.append(f"new {_ids(extra)}")
        return CheckResult(name=name, passed=False, details="; ".join(parts))
    return CheckResult(name=name, passed=True, details=f"{len(got)} ids, the same")


def compare_checks(checks: QueryChecks, source: Mapping[str, Answer],
                   target: Mapping[str, Answer], key_map: KeyMap | None = None
                   ) -> list[CheckResult]:
    """One :class:`CheckResult` per check, in file order (rvl's names for existence checks:
    ``fetch:<id>``, ``key:<key>``)."""
    results = [compare_query(q, source[q.name], target[q.name], key_map) for q in checks.queries]
    for name in checks.names()[len(checks.queries):]:
        t = target[name]
        before = source.get(name)
        ok = t.total > 0
        if ok:
            details = f"{t.keys[0]!r} exists"
        elif before is not None and before.total == 0:
            details = f"{t.keys[0]!r} not found (nor before the migration)"
        else:
            details = f"{t.keys[0]!r} not found after the migration"
        results.append(CheckResult(name=name, passed=ok, details=details))
    return results
