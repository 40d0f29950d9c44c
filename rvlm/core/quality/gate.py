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

from pathlib import Path

import attrs
import redis

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
from rvlm.core.quality.checks import QueryChecks, compare_checks, run_checks, source_problems
from rvlm.core.quality.defaults import SEED
from rvlm.core.quality.model import QualityOptions, QualityResult, Sides
from rvlm.core.quality.probes import measure_field, probe_source
from rvlm.core.quality.recall import FieldQuality
from rvlm.core.quality.search import count_documents
from rvlm.core.redis.connection import index_exists


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
                        options: QualityOptions, *, source_alive: bool = True,
                        keep: bool = True) -> SourceAnswers:
    """The source's answers for this migration, kept in ``directory``: what is stored already
    (a resume), plus what is missing when ``source_alive`` (asked now and written; with
    ``keep=False`` only returned: write them with :func:`keep_answers` once the migration
    goes on). Raises :class:`RvlmError` when the source refuses a query check (nothing has
    changed yet)."""
    stored = read_answers(directory, sides.fingerprint)
    answers = stored or SourceAnswers(plan_fingerprint=sides.fingerprint,
                                      index=sides.source.name, seed=SEED)
    if not source_alive or not index_exists(client, sides.source.name):
        return answers
    fields = list(answers.fields)
    for s, t in sides.fields():
        if answers.field(s) is None:
            queries = options.queries_for(lambda: count_documents(client, sides.source.name))
            fields.append(probe_source(client, sides.source, s, target_field=t,
                                       queries=queries, k=options.recall_k,
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
    if keep and fresh != stored:
        write_answers(directory, fresh)
    return fresh


def keep_answers(directory: str | Path, answers: SourceAnswers) -> None:
    """Write ``answers`` (from :func:`take_source_answers` with ``keep=False``) to
    ``directory`` unless it holds them already."""
    if read_answers(directory, answers.plan_fingerprint) != answers:
        write_answers(directory, answers)


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
