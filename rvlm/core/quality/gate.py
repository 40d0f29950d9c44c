"""The quality gate of a migration: ask the source, ask the target, compare.

An apply (or a later ``rvlm validate``) hands in the two sides of the migration
(:class:`Sides`: schemas, index names, field renames, recorded conversions, where keys live
afterwards) and its :class:`QualityOptions`. Then:

1. :func:`take_source_answers`, while the source still serves: the recall queries of every
   vector field whose answers can change (the plan's ``rvlm.quality`` fields) and the user's
   query checks, asked of the source and kept in the backup dir (re-used on resume; what is
   missing is asked for only while the source still exists). A query check the source refuses
   stops the migration before anything changed.
2. :func:`measure`, once the target is indexed: the same queries asked of the target,
   compared. The result is per field (``quality`` in the report) and a list of
   :class:`~rvlm.core.plugins.checks.CheckResult` that join the validation: ``recall:<field>``
   (failed under ``min_recall``) and ``query_check:<name>`` / ``fetch:<id>`` / ``key:<key>``.
   Validation failing is what keeps an online alias where it is and makes the result
   ``failed``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import redis

from rvlm.core.convert import items
from rvlm.core.errors import RvlmError
from rvlm.core.plugins.checks import CheckResult
from rvlm.core.quality.answers import (
    ANSWERS_NAME,
    FieldProbes,
    SourceAnswers,
    StoredCheck,
    read_answers,
    write_answers,
)
from rvlm.core.quality.checks import (
    QueryChecks,
    compare_checks,
    encoder_for,
    run_checks,
    source_problems,
)
from rvlm.core.quality.planning import changed_vector_fields
from rvlm.core.quality.probes import (
    DEFAULT_K,
    DEFAULT_QUERIES,
    SEED,
    Converter,
    measure_field,
    probe_source,
    scheme_converter,
)
from rvlm.core.quality.recall import FieldQuality
from rvlm.core.redis.connection import index_exists
from rvlm.core.schema.model import IndexSchema, VectorAttrs

if TYPE_CHECKING:  # numpy loads only where vectors are converted
    from rvlm.core import vectors


@attrs.frozen(kw_only=True)
class QualityOptions:
    """``min_recall``: the floor of every measured field's mean recall@k (None: measure and
    report only). ``recall_queries`` (N) and ``recall_k`` (K): how many query vectors and how
    deep. ``query_checks``: the user's query check file, loaded."""

    min_recall: float | None = None
    recall_queries: int = DEFAULT_QUERIES
    recall_k: int = DEFAULT_K
    query_checks: QueryChecks | None = None

    def __attrs_post_init__(self) -> None:
        r = self.min_recall
        if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float))
                              or math.isnan(r) or not 0.0 <= r <= 1.0):
            raise RvlmError(f"--min-recall must be a number from 0 to 1, not {r!r}")
        if isinstance(self.recall_queries, bool) or not isinstance(self.recall_queries, int) \
                or self.recall_queries < 1:
            raise RvlmError(f"--recall-queries must be a positive integer, not "
                            f"{self.recall_queries!r}")
        if isinstance(self.recall_k, bool) or not isinstance(self.recall_k, int) \
                or self.recall_k < 1:
            raise RvlmError(f"--recall-k must be a positive integer, not {self.recall_k!r}")


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
        scheme = self.schemes.get(target_field)
        field = self.target.field(target_field)
        if scheme is None or field is None or not isinstance(field.attrs, VectorAttrs):
            return None
        return scheme_converter(scheme, field.attrs.dims)

    def target_encoder(self) -> Callable[[str, Any], bytes]:
        """Encode a query check's vector parameter for the target: as the documents were (the
        numbers in the source datatype, then the recorded conversion), else to the target's
        datatype."""
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


def _unanswered(checks: QueryChecks, answers: SourceAnswers) -> list[str]:
    """Checks without a stored source answer, or whose query changed since it was stored."""
    have = {c.name: c for c in answers.checks}
    out = []
    for name in checks.names():
        stored = have.get(name)
        if stored is None or (stored.check is not None and stored.check != checks.query(name)):
            out.append(name)
    return out


def take_source_answers(client: redis.Redis, sides: Sides, directory: str | Path,
                        options: QualityOptions, *, source_alive: bool = True
                        ) -> SourceAnswers:
    """The source's answers for this migration, kept in ``directory``: what is stored already
    (a resume), plus what is missing when ``source_alive`` (asked now and written). Raises
    :class:`RvlmError` when the source refuses a query check (nothing has changed yet)."""
    stored = read_answers(directory, sides.fingerprint)
    answers = stored or SourceAnswers(plan_fingerprint=sides.fingerprint,
                                      index=sides.source.name, seed=SEED)
    if not source_alive or not index_exists(client, sides.source.name):
        return answers
    fields = list(answers.fields)
    for s, t in sides.fields():
        if answers.field(s) is None:
            fields.append(probe_source(client, sides.source, s, target_field=t,
                                       queries=options.recall_queries, k=options.recall_k,
                                       seed=answers.seed))
    checks = list(answers.checks)
    wanted = options.query_checks
    if wanted is not None:
        missing = _unanswered(wanted, answers)
        if missing:
            subset = wanted.only(missing)
            got = run_checks(client, sides.source, subset)
            problems = source_problems(subset, got)
            if problems:
                raise RvlmError(f"{wanted.source}: " + "; ".join(problems) + "; nothing was "
                                "changed")
            checks = [c for c in checks if c.name not in missing]
            checks += [StoredCheck(name=n, check=subset.query(n), answer=got[n])
                       for n in subset.names()]
    fresh = attrs.evolve(answers, fields=fields, checks=checks)
    if fresh != stored:
        write_answers(directory, fresh)
    return fresh


def measure(client: redis.Redis, sides: Sides, answers: SourceAnswers,
            options: QualityOptions, *, directory: str | Path | None = None) -> QualityResult:
    """Ask the target the stored queries and compare (see the module docstring)."""
    where = f"{Path(directory) / ANSWERS_NAME}" if directory is not None else "the backup dir"
    floor = options.min_recall
    fields: list[FieldQuality] = []
    checks: list[CheckResult] = []
    for s, t in sides.fields():
        probes: FieldProbes | None = answers.field(s)
        if probes is None:
            if floor is not None:
                checks.append(CheckResult(
                    name=f"recall:{t}", passed=False,
                    details=f"no source answers for {s!r} in {where} (the source was gone "
                            "before they were taken): recall cannot be measured"))
            continue
        quality = measure_field(client, sides.target.name, probes, sides.converter(t),
                                sides.key_map, floor)
        fields.append(quality)
        checks.append(CheckResult(name=f"recall:{t}", passed=quality.passed,
                                  details=quality.summary(field=False)))
    wanted = options.query_checks
    if wanted is not None:
        gaps = _unanswered(wanted, answers)
        checks += [CheckResult(name=wanted.result_name(n), passed=False,
                               details=f"no source answer stored in {where} for this check "
                                       "(the apply ran without it, or it changed since)")
                   for n in gaps]
        ready = wanted.only(set(wanted.names()) - set(gaps))
        if len(ready):
            target = run_checks(client, sides.target, ready, encode=sides.target_encoder(),
                                key_map=sides.key_map)
            checks += compare_checks(ready, answers.check_answers(), target, sides.key_map)
    return QualityResult(fields=fields, checks=checks)
