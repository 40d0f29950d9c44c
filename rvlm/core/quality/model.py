"""The quality gate's terms: its options, the two sides it compares, its result.

Light to import on purpose (issue #17, start-up): every apply builds a
:class:`QualityOptions` and asks whether there is anything to measure
(:meth:`Sides.fields`), but only a plan whose vector answers can change, or a run with query
checks, needs the gate itself (:mod:`rvlm.core.quality.gate`: probes, searches, stored
answers, query checks), so what the methods here need from it is imported when they run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from rvlm.core.convert import items
from rvlm.core.errors import RvlmError
from rvlm.core.quality.defaults import DEFAULT_K, DEFAULT_QUERIES, sized_queries
from rvlm.core.quality.planning import changed_vector_fields
from rvlm.core.schema.model import IndexSchema, VectorAttrs

if TYPE_CHECKING:  # numpy loads only where vectors are converted
    from rvlm.core import vectors
    from rvlm.core.plugins.checks import CheckResult
    from rvlm.core.quality.checks import QueryChecks
    from rvlm.core.quality.probes import Converter
    from rvlm.core.quality.recall import FieldQuality


@attrs.frozen(kw_only=True)
class QualityOptions:
    """``min_recall``: the floor of every measured field's mean recall@k (None: measure and
    report only). ``recall_queries`` (N) and ``recall_k`` (K): how many query vectors and how
    deep (N None: :data:`~rvlm.core.quality.defaults.DEFAULT_QUERIES`, fewer for a large index
    when there is no ``min_recall``: :meth:`queries_for`). ``query_checks``: the user's query
    check file, loaded."""

    min_recall: float | None = None
    recall_queries: int | None = None
    recall_k: int = DEFAULT_K
    query_checks: QueryChecks | None = None

    def __attrs_post_init__(self) -> None:
        r = self.min_recall
        if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float))
                              or math.isnan(r) or not 0.0 <= r <= 1.0):
            raise RvlmError(f"--min-recall must be a number from 0 to 1, not {r!r}")
        if self.recall_queries is not None and (
                isinstance(self.recall_queries, bool) or not isinstance(self.recall_queries, int)
                or self.recall_queries < 1):
            raise RvlmError(f"--recall-queries must be a positive integer, not "
                            f"{self.recall_queries!r}")
        if isinstance(self.recall_k, bool) or not isinstance(self.recall_k, int) \
                or self.recall_k < 1:
            raise RvlmError(f"--recall-k must be a positive integer, not {self.recall_k!r}")

    def queries_for(self, documents: Callable[[], int]) -> int:
        """The recall queries per vector field: the user's number, else
        :data:`~rvlm.core.quality.defaults.DEFAULT_QUERIES` when a ``min_recall`` decides on
        the result, else as many as the source's size (``documents()``, asked only then)
        makes worth their cost (:func:`~rvlm.core.quality.defaults.sized_queries`)."""
        if self.recall_queries is not None:
            return self.recall_queries
        if self.min_recall is not None:
            return DEFAULT_QUERIES
        return sized_queries(documents())


@attrs.frozen(kw_only=True)
class Sides:
    """The two sides of a migration as the gate compares them. ``renames`` maps a source field
    name to its target name; ``schemes`` a target field name to the conversion its vectors
    got; ``key_map`` a source key to where it lives afterwards."""

    fingerprint: str
    source: IndexSchema
    target: IndexSchema
    renames: Mapping[str, str] = attrs.field(factory=dict)
    schemes: Mapping[str, vectors.QuantizationScheme] = attrs.field(factory=dict)
    key_map: Callable[[str], str] | None = None

    def fields(self) -> list[tuple[str, str]]:
        """(source name, target name) of the vector fields whose answers can change."""
        return [(s.name, t.name) for s, t in
                changed_vector_fields(self.source, self.target, self.renames)]

    def converter(self, target_field: str) -> Converter | None:
        from rvlm.core.quality.probes import scheme_converter

        scheme = self.schemes.get(target_field)
        field = self.target.field(target_field)
        if scheme is None or field is None or not isinstance(field.attrs, VectorAttrs):
            return None
        return scheme_converter(scheme, field.attrs.dims)

    def target_encoder(self) -> Callable[[str, Any], bytes]:
        """Encode a query check's vector parameter for the target: as the documents were (the
        numbers in the source datatype, then the recorded conversion), else to the target's
        datatype."""
        from rvlm.core.quality.checks import encoder_for

        direct = encoder_for(self.target)
        source_of = {t: s for s, t in self.renames.items()}

        def encode(field: str, numbers: Any) -> bytes:
            convert = self.converter(field)
            original = source_of.get(field, field)
            if convert is None or self.source.field(original) is None:
                return direct(field, numbers)
            return convert([encoder_for(self.source)(original, numbers)])[0]

        return encode


@attrs.frozen(kw_only=True)
class QualityResult:
    """What :func:`measure` found: per field, and the checks that join the validation."""

    fields: tuple[FieldQuality, ...] = attrs.field(default=(), converter=items)
    checks: tuple[CheckResult, ...] = attrs.field(default=(), converter=items)

    @property
    def below_floor(self) -> list[FieldQuality]:
        return [f for f in self.fields if not f.passed]

    def to_dict(self) -> dict[str, Any]:
        """The report's ``quality`` section: field name -> its figures."""
        return {f.field: f.to_dict() for f in self.fields}


__all__ = ["QualityOptions", "QualityResult", "Sides"]
