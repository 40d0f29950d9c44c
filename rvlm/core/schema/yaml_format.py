"""The schema model in and out of YAML, in the RedisVL ``IndexSchema`` format.

```yaml
index:
  name: docs
  prefix: "doc:"            # one prefix as a string, several as a list
  storage_type: hash        # or json
  key_separator: ":"
  # rvlm additions, all optional: stopwords, filter, language, language_field, score,
  # score_field, payload_field, maxtextfields, nooffsets, nohl, nofields, nofreqs
fields:
  - name: title
    type: text
    attrs: {weight: 2.0, sortable: true}
  - name: embedding
    type: vector
    attrs: {dims: 768, algorithm: hnsw, datatype: float32, distance_metric: cosine, m: 16}
```

Round trip is exact: ``schema_from_dict(schema_to_dict(s)) == s``, and a dict written by
:func:`schema_to_dict` reads back and writes out identical. Unknown keys and wrong types are
:class:`RvlmError` lines naming the key and the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import cattrs
import yaml
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from rvlm.core.errors import RvlmError
from rvlm.core.schema.model import (
    ALGORITHM_PARAMS,
    ATTRS_BY_TYPE,
    VECTOR_PARAMS,
    Field,
    FieldAttrs,
    IndexDefinition,
    IndexSchema,
    VectorAttrs,
    real_number,
    vector_param_problem,
    whole_number,
)

_converter = cattrs.Converter(forbid_extra_keys=True)


def _strict_bool(value: Any, _type: Any) -> bool:
    """YAML booleans only: ``sortable: "no"`` is an error, not True."""
    if isinstance(value, bool):
        return value
    raise ValueError(f"must be true or false, not {value!r}")


def _strict_int(value: Any, _type: Any) -> int:
    """Whole numbers only: ``m: true`` is not 1 and ``dims: 8.9`` is not 8."""
    return whole_number(value)


def _strict_float(value: Any, _type: Any) -> float:
    """Finite numbers only (an int is fine): ``weight: true`` and ``weight: .nan`` are errors."""
    return real_number(value)


def _strict_str(value: Any, _type: Any) -> str:
    """Strings only: ``stopwords: [no]`` (YAML reads a bool) is an error, not ``"False"``."""
    if isinstance(value, str):
        return value
    raise ValueError(f"must be a string, not {value!r} (quote it in YAML)")


_converter.register_structure_hook(bool, _strict_bool)
_converter.register_structure_hook(int, _strict_int)
_converter.register_structure_hook(float, _strict_float)
_converter.register_structure_hook(str, _strict_str)

#: The classes written to and read from YAML with generated hooks. Each hook is generated
#: (cattrs compiles its code) the first time its class is converted, not at import: a run
#: reads and writes only the field types its schemas hold (issue #17, start-up). Kept here
#: once made (cattrs forgets its dispatch cache whenever a hook is registered).
_HOOKED = frozenset((*ATTRS_BY_TYPE.values(), IndexDefinition))
_hooks: dict[tuple[str, type], Any] = {}


def _unstructure_fn(cls: type) -> Any:
    hook = _hooks.get(("unstructure", cls))
    if hook is None:
        overrides: dict[str, Any] = {}
        if cls is VectorAttrs:
            overrides = {
                k: override(omit_if_default=False)
                for k in ("dims", "algorithm", "datatype", "distance_metric")
            }
        if cls is IndexDefinition:
            overrides = {k: override(omit_if_default=False) for k in ("name", "storage_type")}
        hook = _hooks[("unstructure", cls)] = make_dict_unstructure_fn(
            cls, _converter, _cattrs_omit_if_default=True, **overrides)
    return hook


def _structure_fn(cls: type) -> Any:
    hook = _hooks.get(("structure", cls))
    if hook is None:
        hook = _hooks[("structure", cls)] = make_dict_structure_fn(
            cls, _converter, _cattrs_forbid_extra_keys=True)
    return hook


_converter.register_unstructure_hook_factory(_HOOKED.__contains__, _unstructure_fn)
_converter.register_structure_hook_factory(_HOOKED.__contains__, _structure_fn)


def _format_exception(exc: BaseException, type_: Any) -> str:
    """Keep our validators' own messages (they name the value and the choices)."""
    if isinstance(exc, ValueError) and not isinstance(exc, cattrs.BaseValidationError) and str(exc):
        return str(exc)
    return cattrs.v.format_exception(exc, type_)


def _describe(exc: BaseException, where: str) -> str:
    if isinstance(exc, (cattrs.BaseValidationError,)):
        messages = cattrs.transform_error(exc, path=where, format_exception=_format_exception)
        # cattrs writes "<problem> @ <path>": name the place first, like every other message
        return "; ".join(f"{path}: {problem}" if sep else problem
                         for problem, sep, path in (m.rpartition(" @ ") for m in messages))
    return f"{where}: {exc}"


def _structure(data: Any, cls: type, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise RvlmError(f"{where} must be a mapping, not {type(data).__name__}")
    try:
        return _converter.structure(dict(data), cls)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        raise RvlmError(_describe(exc, where)) from None


def field_attrs_from_dict(ftype: str, data: Any, where: str) -> FieldAttrs:
    """A field's ``attrs`` mapping as the attrs class for its type."""
    cls = ATTRS_BY_TYPE.get(str(ftype).lower())
    if cls is None:
        raise RvlmError(f"{where}.type: unknown field type {ftype!r} "
                        f"(one of {', '.join(ATTRS_BY_TYPE)})")
    if cls is VectorAttrs and isinstance(data, Mapping):
        # before the model turns a default (``m: 16``) into None: a parameter of another
        # algorithm is refused even when it holds the default
        algorithm = data.get("algorithm", "flat")
        given = {k: v for k, v in data.items() if k in ALGORITHM_PARAMS and v is not None}
        if isinstance(algorithm, str):
            problem = vector_param_problem(algorithm.lower(), given)
            if problem:
                raise RvlmError(f"{where}.attrs: {problem}")
    result: FieldAttrs = _structure(data or {}, cls, f"{where}.attrs")
    return result


FIELD_KEYS = ("name", "type", "path", "attrs", "unknown_attrs")


def field_from_dict(data: Any, where: str) -> Field:
    """One ``fields:`` entry as a :class:`Field`."""
    if not isinstance(data, Mapping):
        raise RvlmError(f"{where} must be a mapping with name and type")
    extra = sorted(set(map(str, data)) - set(FIELD_KEYS))
    if extra:
        raise RvlmError(f"{where}: unknown key {extra[0]!r} (a field has {', '.join(FIELD_KEYS)})")
    for key in ("name", "type"):
        if not isinstance(data.get(key), str) or not data.get(key):
            raise RvlmError(f"{where}.{key} is required and must be a string")
    name = data["name"]
    path = data.get("path")
    if path is not None and not isinstance(path, str):
        raise RvlmError(f"{where}.path must be a string")
    unknown = data.get("unknown_attrs") or ()
    if not isinstance(unknown, (list, tuple)):
        raise RvlmError(f"{where}.unknown_attrs must be a list")
    a = field_attrs_from_dict(data["type"], data.get("attrs"), f"{where}[{name}]")
    try:
        return Field(name=name, type=data["type"], path=path, attrs=a,
                     unknown_attrs=tuple(str(u) for u in unknown))
    except ValueError as exc:
        raise RvlmError(f"{where}: {exc}") from None


def field_to_dict(field: Field) -> dict[str, Any]:
    out: dict[str, Any] = {"name": field.name, "type": field.type}
    if field.path is not None:
        out["path"] = field.path
    out["attrs"] = _converter.unstructure(field.attrs)
    if field.unknown_attrs:
        out["unknown_attrs"] = list(field.unknown_attrs)
    return out


def attrs_to_dict(a: FieldAttrs) -> dict[str, Any]:
    """A field's attrs as the YAML mapping (defaults left out, vector basics always in)."""
    result: dict[str, Any] = _converter.unstructure(a)
    return result


def index_from_dict(data: Any, where: str) -> IndexDefinition:
    if isinstance(data, Mapping) and isinstance(data.get("stopwords"), list):
        data = {**data, "stopwords": tuple(data["stopwords"])}
    if isinstance(data, Mapping) and isinstance(data.get("prefix"), list):
        data = {**data, "prefix": tuple(data["prefix"])}
    elif isinstance(data, Mapping) and isinstance(data.get("prefix"), str):
        data = {**data, "prefix": (data["prefix"],)}
    if isinstance(data, Mapping) and isinstance(data.get("stopwords"), str):
        raise RvlmError(f"{where}.stopwords must be a list of words")
    result: IndexDefinition = _structure(data, IndexDefinition, where)
    return result


def index_to_dict(index: IndexDefinition) -> dict[str, Any]:
    out: dict[str, Any] = _converter.unstructure(index)
    prefixes = list(index.prefix)
    out["prefix"] = prefixes[0] if len(prefixes) == 1 else prefixes
    if index.stopwords is not None:
        out["stopwords"] = list(index.stopwords)
    order = ["name", "prefix", "storage_type", "key_separator"]
    return {k: out[k] for k in order if k in out} | {k: v for k, v in out.items() if k not in order}


SCHEMA_KEYS = ("version", "index", "fields", "rvlm")
#: What the top-level ``rvlm:`` key of a schema may hold (RedisVL's ``IndexSchema`` ignores it).
RVLM_SCHEMA_KEYS = ("unknown_attrs",)


def _top_level_unknowns(data: Any, names: list[str], source: str) -> dict[str, tuple[str, ...]]:
    """``rvlm: {unknown_attrs: {field: [attr, ...]}}`` checked against the schema's fields."""
    if data is None:
        return {}
    where = f"{source}: rvlm"
    if not isinstance(data, Mapping):
        raise RvlmError(f"{where} must be a mapping (it holds unknown_attrs)")
    extra = sorted(set(map(str, data)) - set(RVLM_SCHEMA_KEYS))
    if extra:
        raise RvlmError(f"{where}: unknown key {extra[0]!r} (it holds unknown_attrs)")
    unknown = data.get("unknown_attrs") or {}
    if not isinstance(unknown, Mapping):
        raise RvlmError(f"{where}.unknown_attrs must map field names to lists of attrs")
    out: dict[str, tuple[str, ...]] = {}
    for name, values in unknown.items():
        if str(name) not in names:
            raise RvlmError(f"{where}.unknown_attrs: no field named {name!r} in the schema")
        if not isinstance(values, list):
            raise RvlmError(f"{where}.unknown_attrs.{name} must be a list")
        out[str(name)] = tuple(str(v) for v in values)
    return out


def schema_from_dict(data: Any, source: str = "schema") -> IndexSchema:
    """A RedisVL-format schema mapping as an :class:`IndexSchema`; ``source`` names the file.

    A field's ``unknown_attrs`` may be given on the field or under the top-level ``rvlm:`` key
    (``rvlm: {unknown_attrs: {title: [phonetic_matcher]}}``), which RedisVL ignores.
    """
    if not isinstance(data, Mapping):
        raise RvlmError(f"{source}: a schema must be a mapping with 'index' and 'fields'")
    extra = sorted(set(map(str, data)) - set(SCHEMA_KEYS))
    if extra:
        raise RvlmError(f"{source}: unknown key {extra[0]!r} (a schema has index and fields)")
    if "index" not in data:
        raise RvlmError(f"{source}: 'index' is required")
    index = index_from_dict(data["index"], f"{source}: index")
    raw_fields = data.get("fields") or []
    if not isinstance(raw_fields, list):
        raise RvlmError(f"{source}: fields must be a list")
    fields = [field_from_dict(f, f"{source}: fields[{i}]") for i, f in enumerate(raw_fields)]
    unknown = _top_level_unknowns(data.get("rvlm"), [f.name for f in fields], source)
    fields = [f.evolve(unknown_attrs=(*f.unknown_attrs, *unknown[f.name]))
              if f.name in unknown else f for f in fields]
    try:
        return IndexSchema(index=index, fields=fields)
    except ValueError as exc:
        raise RvlmError(f"{source}: {exc}") from None


def schema_to_dict(schema: IndexSchema, *, redisvl: bool = False) -> dict[str, Any]:
    """The RedisVL-format mapping of a schema (YAML-safe plain values).

    ``redisvl=True``: a file RedisVL's ``IndexSchema`` loads too: fields hold only ``name``,
    ``type``, ``path`` and ``attrs``, and the ``unknown_attrs`` go under a top-level ``rvlm:``
    key (which RedisVL ignores and rvlm reads back), so the round trip stays exact.
    """
    fields = [field_to_dict(f) for f in schema.fields]
    out: dict[str, Any] = {"index": index_to_dict(schema.index), "fields": fields}
    if redisvl:
        for f in fields:
            f.pop("unknown_attrs", None)
        if schema.unknown_attrs():
            out["rvlm"] = {"unknown_attrs": {k: list(v) for k, v in
                                             schema.unknown_attrs().items()}}
    return out


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file, turning every failure into one line naming the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RvlmError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise RvlmError(f"{p}: is a directory, not a YAML file") from None
    except UnicodeDecodeError as exc:
        raise RvlmError(f"{p}: not a text file (byte {exc.start} is not UTF-8); give a YAML "
                        "file") from None
    except OSError as exc:
        raise RvlmError(f"{p}: cannot read ({exc.strerror})") from None
    try:
        # libyaml's safe loader when PyYAML has it (the same documents, about 10x faster)
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except RecursionError:
        raise RvlmError(f"{p}: malformed YAML: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RvlmError(f"{p}: malformed YAML{where}: {problem}") from None


def dump_yaml(data: Any) -> str:
    """Deterministic YAML text (keys in insertion order, no aliases)."""

    class _NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return yaml.dump(data, Dumper=_NoAliases, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=100)


def load_schema(path: str | Path) -> IndexSchema:
    """Read a target schema file."""
    return schema_from_dict(load_yaml(path), str(path))


def dump_schema(schema: IndexSchema, *, redisvl: bool = False) -> str:
    return dump_yaml(schema_to_dict(schema, redisvl=redisvl))


def evolve_attrs(a: FieldAttrs, updates: Mapping[str, Any], where: str) -> FieldAttrs:
    """``a`` with ``updates`` applied, validated like YAML input (unknown keys refused).

    When the update changes a vector field's algorithm, the old algorithm's parameters that the
    update does not set again are left behind (FLAT takes no ``m``); a parameter the update
    names for an algorithm that does not take it is refused."""
    current = attrs_to_dict(a)
    if isinstance(a, VectorAttrs) and isinstance(updates.get("algorithm"), str):
        takes = VECTOR_PARAMS.get(updates["algorithm"].lower(), ())
        current = {k: v for k, v in current.items()
                   if k not in ALGORITHM_PARAMS or k in takes}
    merged = {**current, **dict(updates)}
    ftype = next(t for t, c in ATTRS_BY_TYPE.items() if isinstance(a, c))
    return field_attrs_from_dict(ftype, merged, where)


__all__ = [
    "attrs",
    "dump_schema",
    "dump_yaml",
    "evolve_attrs",
    "field_from_dict",
    "field_to_dict",
    "load_schema",
    "load_yaml",
    "schema_from_dict",
    "schema_to_dict",
]
