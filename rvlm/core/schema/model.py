"""The lossless model of a search index schema.

One frozen attrs class per field type's attributes, a :class:`Field` that holds a name, a type,
an optional path and those attributes, and an :class:`IndexSchema` with the index definition
(name, storage type, prefixes, options) and the fields.

Vocabulary (the same in YAML, code, CLI and docs):

* ``name`` is the attribute name queries use (``@name``);
* ``path`` is where the value lives in a document: a JSON path for JSON storage, or the hash
  field name when it differs from ``name`` (the ``AS`` form); ``None`` for hash means "same as
  name";
* ``attrs`` are the field's options, named like RedisVL's (``sortable``, ``no_stem``, ``dims``,
  ``distance_metric``, ...); datatypes, algorithms and metrics are lower-case.

Values FT.INFO does not report (for example ``ef_runtime`` or ``epsilon``) are ``None`` and the
field's ``unknown_attrs`` names them, so a plan can warn rather than invent a default.
Defaults are canonical: a value equal to the server default is stored as the default, so two
schemas that behave the same compare equal, exactly as FT.INFO reports them. In particular:

* stopwords are a sorted, lower-case, de-duplicated tuple (how the server keeps them);
* ``nooffsets`` implies ``nohl``; ``case_sensitive`` and ``sortable`` on a tag imply ``unf``;
  a numeric field's ``unf`` is always False (numeric sort values are never normalised);
* the HNSW/FLAT defaults (``m`` 16, ``ef_construction`` 200, ``ef_runtime`` 10, ``epsilon``
  0.01, ``block_size`` 1024) are stored as ``None``;
* inside an :class:`IndexSchema`: a hash field whose ``path`` equals its name has ``path``
  None, and a hash tag's ``,`` separator is None (the default); a JSON field always has its
  path (``$.name`` when none was given), and a sortable JSON text or tag field is ``unf`` (the
  server never normalises JSON sort values).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import attrs
from attrs import field as _attrs_field

from rvlm.core.convert import items

STORAGE_TYPES = ("hash", "json")
FIELD_TYPES = ("text", "tag", "numeric", "geo", "geoshape", "vector")
VECTOR_ALGORITHMS = ("flat", "hnsw", "svs-vamana")
VECTOR_DATATYPES = ("float64", "float32", "float16", "bfloat16", "int8", "uint8")
DISTANCE_METRICS = ("cosine", "l2", "ip")
DATATYPE_WIDTH = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "uint8": 1}


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def whole_number(value: Any) -> int:
    """``value`` as an int, strictly: a bool is not a number and 16.9 is not 16.

    Raises ValueError naming the value (the YAML loader and FT.INFO reader both come here)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"must be a whole number, not {value!r}")
    return int(value)


def real_number(value: Any) -> float:
    """``value`` as a finite float, strictly: a bool or a string is not a number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"must be a number, not {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"must be a finite number, not {value!r}")
    return out


def _opt_float(value: Any) -> float | None:
    return None if value is None else real_number(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else whole_number(value)


# Converters for vector parameters whose server default is stored as None (named functions,
# so mypy's attrs plugin understands them).
def _block_size(value: Any) -> int | None:
    v = _opt_int(value)
    return None if v == 1024 else v


def _m(value: Any) -> int | None:
    v = _opt_int(value)
    return None if v == 16 else v


def _ef_construction(value: Any) -> int | None:
    v = _opt_int(value)
    return None if v == 200 else v


def _ef_runtime(value: Any) -> int | None:
    v = _opt_int(value)
    return None if v == 10 else v


def _epsilon(value: Any) -> float | None:
    v = _opt_float(value)
    return None if v == 0.01 else v


#: The index parameters each vector algorithm takes, in FT.CREATE order; FT.CREATE refuses
#: the others (a ``m`` on FLAT is "Bad arguments for algorithm FLAT: M").
VECTOR_PARAMS: dict[str, tuple[str, ...]] = {
    "flat": ("initial_cap", "block_size"),
    "hnsw": ("initial_cap", "m", "ef_construction", "ef_runtime", "epsilon"),
    "svs-vamana": ("graph_max_degree", "construction_window_size", "search_window_size",
                   "compression", "reduce", "training_threshold", "epsilon"),
}
#: Every algorithm-specific parameter (the union of :data:`VECTOR_PARAMS`).
ALGORITHM_PARAMS: tuple[str, ...] = tuple(dict.fromkeys(
    p for params in VECTOR_PARAMS.values() for p in params))

#: Inclusive bounds of the whole-number vector parameters (None: no bound on that side).
#: Measured on Redis 8.2.3 with RediSearch 2.10.5 (``bench/probe_vector_bounds.py`` re-measures
#: them): the server refuses ``M`` 0, ``EF_CONSTRUCTION`` / ``EF_RUNTIME`` / ``BLOCK_SIZE`` /
#: ``DIM`` 0 and negative values, but *accepts* ``M`` 1 and ``M`` above 32767 and then crashes
#: (segfault in ``VecSimIndex_Info``: the vector library refused the index and RediSearch kept a
#: NULL) at the next FT.INFO. Upper bounds of ``INITIAL_CAP`` and ``BLOCK_SIZE`` depend on the
#: server's memory limit; the server refuses values above them at FT.CREATE, which the
#: executor's check of the exact target catches before anything is dropped. The SVS-VAMANA
#: bounds are the documented ones (this stack has no SVS-VAMANA to measure).
VECTOR_BOUNDS: dict[str, tuple[int | None, int | None]] = {
    "dims": (1, None),
    "m": (2, 32767),
    "ef_construction": (1, None),
    "ef_runtime": (1, None),
    "initial_cap": (0, None),
    "block_size": (1, None),
    "graph_max_degree": (1, None),
    "construction_window_size": (1, None),
    "search_window_size": (1, None),
    "reduce": (1, None),
    "training_threshold": (1, 102399),
}
#: SVS-VAMANA ``COMPRESSION`` values, as the server spells them.
SVS_COMPRESSIONS = ("LVQ8", "LVQ4", "LVQ4x4", "LVQ4x8", "LeanVec4x8", "LeanVec8x8")


def _compression(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {value!r}")
    for known in SVS_COMPRESSIONS:
        if value.lower() == known.lower():
            return known
    raise ValueError(f"compression must be one of {', '.join(SVS_COMPRESSIONS)}, not {value!r}")


def _bounded(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is None:
        return
    low, high = VECTOR_BOUNDS[attribute.name]
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            text = f"at least {low}"
        elif low is None:
            text = f"at most {high}"
        else:
            text = f"between {low} and {high}"
        why = (" (the server accepts other values, then crashes)"
               if attribute.name == "m" else "")
        raise ValueError(f"{attribute.name} must be {text}{why}, not {value!r}")


def _not_negative(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be 0 or more, not {value!r}")


def _one_of(choices: tuple[str, ...]) -> Any:
    def check(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value not in choices:
            raise ValueError(
                f"{attribute.name} must be one of {', '.join(choices)}, not {value!r}"
            )

    return check


@attrs.frozen(kw_only=True)
class TextAttrs:
    """TEXT options."""

    weight: float = attrs.field(default=1.0, converter=real_number)
    no_stem: bool = False
    withsuffixtrie: bool = False
    phonetic_matcher: str | None = None
    sortable: bool = False
    unf: bool = False
    no_index: bool = False
    index_missing: bool = False
    index_empty: bool = False


@attrs.frozen(kw_only=True)
class TagAttrs:
    """TAG options. ``separator`` None means the server default (',' on hash, none on JSON)."""

    separator: str | None = None
    case_sensitive: bool = False
    withsuffixtrie: bool = False
    sortable: bool = False
    unf: bool = False
    no_index: bool = False
    index_missing: bool = False
    index_empty: bool = False

    def __attrs_post_init__(self) -> None:
        if self.case_sensitive and self.sortable and not self.unf:
            # a case-sensitive tag's sort value is never normalised: the server sets UNF itself
            object.__setattr__(self, "unf", True)


def _never_normalised(value: bool) -> bool:
    return False


@attrs.frozen(kw_only=True)
class NumericAttrs:
    """NUMERIC options.

    A numeric sort value is never normalised (FT.INFO reports ``SORTABLE UNF`` for every
    sortable numeric field), so ``unf`` changes nothing: RedisVL writes ``unf: false`` for
    every numeric field and ``unf: true`` is just as valid; both are accepted and stored as
    False, so schemas that behave the same compare equal.
    """

    sortable: bool = False
    unf: bool = attrs.field(default=False, converter=_never_normalised)
    no_index: bool = False
    index_missing: bool = False


@attrs.frozen(kw_only=True)
class GeoAttrs:
    """GEO options."""

    sortable: bool = False
    no_index: bool = False
    index_missing: bool = False


@attrs.frozen(kw_only=True)
class GeoshapeAttrs:
    """GEOSHAPE options: ``coord_system`` is ``spherical`` (default) or ``flat``.

    The server accepts (and FT.INFO reports) SORTABLE and NOINDEX on a GEOSHAPE too.
    """

    coord_system: str = attrs.field(
        default="spherical", converter=_lower, validator=_one_of(("spherical", "flat"))
    )
    sortable: bool = False
    no_index: bool = False
    index_missing: bool = False


def vector_param_problem(algorithm: str, params: dict[str, Any]) -> str:
    """Why ``params`` (name -> value, the ones given) do not fit ``algorithm``, or ''.

    A parameter of another algorithm is refused (the server would refuse it at FT.CREATE, after
    a plan said ok); so are ``reduce`` without a LeanVec compression and ``training_threshold``
    without a compression (SVS-VAMANA ignores or refuses them)."""
    allowed = VECTOR_PARAMS.get(algorithm, ())
    wrong = [k for k in params if k in ALGORITHM_PARAMS and k not in allowed]
    if wrong:
        takes = [a.upper() for a, ps in VECTOR_PARAMS.items() if wrong[0] in ps]
        return (f"{wrong[0]} does not apply to the {algorithm.upper()} algorithm (only to "
                f"{' and '.join(takes)}); {algorithm.upper()} takes "
                f"{', '.join(allowed) or 'none'}")
    compression = params.get("compression")
    if params.get("reduce") is not None and not str(compression or "").lower().startswith(
            "leanvec"):
        return "reduce applies only with a LeanVec compression (LeanVec4x8 or LeanVec8x8)"
    if params.get("training_threshold") is not None and compression is None:
        return "training_threshold applies only with a compression"
    return ""


@attrs.frozen(kw_only=True)
class VectorAttrs:
    """VECTOR options for FLAT, HNSW and SVS-VAMANA; ``None`` means the server default or unknown.

    A value equal to the server's default (``m`` 16, ``ef_construction`` 200, ``ef_runtime``
    10, ``epsilon`` 0.01, ``block_size`` 1024) is stored as ``None``.
    """

    dims: int = attrs.field(converter=whole_number, validator=_bounded)
    algorithm: str = attrs.field(
        default="flat", converter=_lower, validator=_one_of(VECTOR_ALGORITHMS)
    )
    datatype: str = attrs.field(
        default="float32", converter=_lower, validator=_one_of(VECTOR_DATATYPES)
    )
    distance_metric: str = attrs.field(
        default="cosine", converter=_lower, validator=_one_of(DISTANCE_METRICS)
    )
    initial_cap: int | None = attrs.field(default=None, converter=_opt_int, validator=_bounded)
    block_size: int | None = attrs.field(default=None, converter=_block_size,
                                         validator=_bounded)
    m: int | None = attrs.field(default=None, converter=_m, validator=_bounded)
    ef_construction: int | None = attrs.field(default=None, converter=_ef_construction,
                                              validator=_bounded)
    ef_runtime: int | None = attrs.field(default=None, converter=_ef_runtime, validator=_bounded)
    epsilon: float | None = attrs.field(default=None, converter=_epsilon,
                                        validator=_not_negative)
    graph_max_degree: int | None = attrs.field(default=None, converter=_opt_int,
                                               validator=_bounded)
    construction_window_size: int | None = attrs.field(default=None, converter=_opt_int,
                                                       validator=_bounded)
    search_window_size: int | None = attrs.field(default=None, converter=_opt_int,
                                                 validator=_bounded)
    compression: str | None = attrs.field(default=None, converter=_compression)
    reduce: int | None = attrs.field(default=None, converter=_opt_int, validator=_bounded)
    training_threshold: int | None = attrs.field(default=None, converter=_opt_int,
                                                 validator=_bounded)
    index_missing: bool = False

    def __attrs_post_init__(self) -> None:
        problem = vector_param_problem(self.algorithm, {
            k: getattr(self, k) for k in ALGORITHM_PARAMS if getattr(self, k) is not None})
        if problem:
            raise ValueError(problem)
        if self.reduce is not None and self.reduce >= self.dims:
            raise ValueError(f"reduce must be less than dims ({self.dims}), not {self.reduce}")

    @property
    def width(self) -> int:
        """Bytes per component of the stored vector."""
        return DATATYPE_WIDTH[self.datatype]


#: Attributes a field type accepts (for RedisVL's files) that change nothing on the server:
#: not shown by ``rvlm index info`` nor offered by the wizard.
INERT_ATTRS: dict[str, tuple[str, ...]] = {"numeric": ("unf",)}

FieldAttrs = TextAttrs | TagAttrs | NumericAttrs | GeoAttrs | GeoshapeAttrs | VectorAttrs
ATTRS_BY_TYPE: dict[str, type] = {
    "text": TextAttrs,
    "tag": TagAttrs,
    "numeric": NumericAttrs,
    "geo": GeoAttrs,
    "geoshape": GeoshapeAttrs,
    "vector": VectorAttrs,
}


def _sorted_names(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(str(v) for v in value))


@attrs.frozen(kw_only=True)
class Field:
    """One indexed attribute: its name, type, where it lives, and its options."""

    name: str
    type: str = attrs.field(converter=_lower, validator=_one_of(FIELD_TYPES))
    path: str | None = None
    attrs: FieldAttrs
    # ``_attrs_field``: inside this class body the name ``attrs`` is the field above
    unknown_attrs: tuple[str, ...] = _attrs_field(default=(), converter=_sorted_names)

    def __attrs_post_init__(self) -> None:
        expected = ATTRS_BY_TYPE[self.type]
        if not isinstance(self.attrs, expected):
            raise ValueError(
                f"field {self.name!r}: attrs for a {self.type} field must be {expected.__name__}"
            )

    def identifier(self, storage_type: str) -> str:
        """Where the value lives: the JSON path, or the hash field name."""
        if self.path is not None:
            return self.path
        return f"$.{self.name}" if storage_type == "json" else self.name

    def evolve(self, **changes: Any) -> Field:
        """A copy with some values changed (attrs.evolve, typed)."""
        return attrs.evolve(self, **changes)


def _prefixes(value: Any) -> tuple[str, ...]:
    if value is None:
        return ("",)
    if isinstance(value, str):
        return (value,)
    return tuple(str(p) for p in value)


def _opt_stopwords(value: Any) -> tuple[str, ...] | None:
    """The server keeps stopwords lower-case, de-duplicated and sorted: so does the model."""
    if value is None:
        return None
    if isinstance(value, str):
        value = (value,)
    return tuple(sorted({str(w).lower() for w in value}))


def _score(value: Any) -> float | None:
    if value is None:
        return None
    f = real_number(value)
    return None if f == 1.0 else f


def _language(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).lower()
    return None if text == "english" else text


@attrs.frozen(kw_only=True)
class IndexDefinition:
    """The index itself: name, storage, key prefixes and FT.CREATE options.

    ``prefix`` is a tuple of every prefix, exactly as FT.CREATE receives them. ``key_separator``
    is not stored by Redis; it is kept for RedisVL compatibility and defaults to ``:``.
    ``stopwords`` None means the server's default list; an empty tuple means ``STOPWORDS 0``.
    """

    name: str
    prefix: tuple[str, ...] = attrs.field(default=("",), converter=_prefixes)
    storage_type: str = attrs.field(
        default="hash", converter=_lower, validator=_one_of(STORAGE_TYPES)
    )
    key_separator: str = ":"
    stopwords: tuple[str, ...] | None = attrs.field(default=None, converter=_opt_stopwords)
    filter: str | None = None
    language: str | None = attrs.field(default=None, converter=_language)
    language_field: str | None = None
    score: float | None = attrs.field(default=None, converter=_score)
    score_field: str | None = None
    payload_field: str | None = None
    maxtextfields: bool = False
    nooffsets: bool = False
    nohl: bool = False
    nofields: bool = False
    nofreqs: bool = False

    def __attrs_post_init__(self) -> None:
        if self.nooffsets and not self.nohl:
            # Without offsets there is nothing to highlight: the server sets NOHL itself.
            object.__setattr__(self, "nohl", True)


def _canonical_field(field: Field, storage_type: str) -> Field:
    """The field as the server keeps it for ``storage_type``.

    The path: None on hash when it equals the name, always set on JSON. On JSON a SORTABLE
    text or tag value is never normalised, so ``sortable`` implies ``unf`` there. On hash a
    tag separator of ``,`` is the default (None).
    """
    if storage_type == "json":
        if field.path is None:
            field = attrs.evolve(field, path=f"$.{field.name}")
        a = field.attrs
        if isinstance(a, (TextAttrs, TagAttrs)) and a.sortable and not a.unf:
            field = attrs.evolve(field, attrs=attrs.evolve(a, unf=True))
    else:
        if field.path == field.name:
            field = attrs.evolve(field, path=None)
        a = field.attrs
        if isinstance(a, TagAttrs) and a.separator == ",":
            field = attrs.evolve(field, attrs=attrs.evolve(a, separator=None))
    return field


@attrs.frozen(kw_only=True)
class IndexSchema:
    """An index definition and its fields, in order."""

    index: IndexDefinition
    fields: tuple[Field, ...] = attrs.field(converter=items)

    def __attrs_post_init__(self) -> None:
        canonical = tuple(_canonical_field(f, self.index.storage_type) for f in self.fields)
        if canonical != self.fields:
            object.__setattr__(self, "fields", canonical)
        seen: set[str] = set()
        for f in self.fields:
            if f.name in seen:
                raise ValueError(f"field {f.name!r} appears twice")
            seen.add(f.name)

    @property
    def name(self) -> str:
        return self.index.name

    @property
    def storage_type(self) -> str:
        return self.index.storage_type

    def field(self, name: str) -> Field | None:
        """The field called ``name``, or None."""
        for f in self.fields:
            if f.name == name:
                return f
        return None

    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def vector_fields(self) -> list[Field]:
        return [f for f in self.fields if f.type == "vector"]

    def with_fields(self, fields: Iterable[Field]) -> IndexSchema:
        return attrs.evolve(self, fields=tuple(fields))

    def with_index(self, **changes: Any) -> IndexSchema:
        return attrs.evolve(self, index=attrs.evolve(self.index, **changes))

    def unknown_attrs(self) -> dict[str, tuple[str, ...]]:
        """Field name -> attrs FT.INFO could not report, for fields that have any."""
        return {f.name: f.unknown_attrs for f in self.fields if f.unknown_attrs}

    def without_unknowns(self) -> IndexSchema:
        """The same schema with ``unknown_attrs`` cleared (for comparing behaviour)."""
        return self.with_fields(attrs.evolve(f, unknown_attrs=()) for f in self.fields)
