"""The quality gate of one apply (or validate): the plan's side of :mod:`rvlm.core.quality.gate`.

A :class:`QualityGate` is built from the plan, the backup dir and the user's
:class:`~rvlm.core.quality.model.QualityOptions` (the floor defaults to the one the plan
recorded with ``rvlm plan --min-recall``). Every executor uses it the same way, through its
:class:`~rvlm.core.migrate.run.Run`:

* :meth:`QualityGate.ask_source` while the source still serves, before its first change (the
  drop, or the alias move): the source's answers go to ``source-answers.json`` in the backup
  dir; a resume re-uses them;
* :meth:`QualityGate.measure` once the target is indexed, as part of validation
  (:func:`rvlm.core.migrate.validate.validate_migration`): ``recall:<field>`` and the query
  checks join the validation's checks, so a field under the floor fails the validation, which
  keeps an online alias where it is (the check before the alias moves) and makes the result
  ``failed``.

Fields measured: those the plan's ``rvlm.quality`` names (datatype, metric, algorithm or graph
parameters change). Keys are compared where they live after the migration (the plan's prefix
renames); an executor that moves documents elsewhere passes its own ``key_map``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import redis

from rvlm.core.errors import RvlmError
from rvlm.core.migrate.plan import Plan
from rvlm.core.quality.defaults import SEED
from rvlm.core.quality.model import QualityOptions, QualityResult, Sides
from rvlm.core.redis.resp import to_bytes, to_str

if TYPE_CHECKING:
    from rvlm.core.quality.answers import SourceAnswers


def sides_of(plan: Plan, key_map: Callable[[str], str] | None = None) -> Sides:
    """The two sides of ``plan`` as the gate compares them."""

    def mapped(key: str) -> str:
        return to_str(plan.map_key(to_bytes(key)))

    return Sides(fingerprint=plan.fingerprint, source=plan.source_schema,
                 target=plan.target_schema, renames=plan.field_renames(),
                 schemes=plan.recorded_schemes(), key_map=key_map or mapped)


class QualityGate:
    """See the module docstring. ``options`` None: measure and report, with the plan's floor
    if it recorded one."""

    def __init__(self, plan: Plan, directory: str | Path | None,
                 options: QualityOptions | None = None,
                 key_map: Callable[[str], str] | None = None) -> None:
        options = options or QualityOptions()
        if options.min_recall is None and plan.min_recall is not None:
            options = attrs.evolve(options, min_recall=plan.min_recall)
        self.plan = plan
        self.dir = Path(directory) if directory is not None else None
        self.options = options
        self.sides = sides_of(plan, key_map)

    def use_key_map(self, key_map: Callable[[str], str]) -> None:
        """Compare keys through ``key_map`` (a source key -> where its document lives in the
        target): for an executor that copies documents to new keys."""
        self.sides = attrs.evolve(self.sides, key_map=key_map)

    @property
    def wanted(self) -> bool:
        """There is something to ask: a field whose answers can change, or query checks."""
        return bool(self.sides.fields()) or self.options.query_checks is not None

    def ask_source(self, client: redis.Redis, *, keep: bool = True) -> SourceAnswers | None:
        """Ask the source what is not stored yet (idempotent; nothing when the source is gone).
        Raises :class:`RvlmError` when the source refuses a query check. ``keep=False``: the
        answers are returned, not written (:meth:`keep` writes them once the apply goes on:
        a refused apply leaves none for a later run to compare with); None when nothing is
        asked."""
        if self.wanted and self.dir is not None:
            from rvlm.core.quality.gate import take_source_answers

            return take_source_answers(client, self.sides, self.dir, self.options, keep=keep)
        return None

    def keep(self, answers: SourceAnswers | None) -> None:
        """Write the answers :meth:`ask_source` returned with ``keep=False``."""
        if answers is not None and self.dir is not None:
            from rvlm.core.quality.gate import keep_answers

            keep_answers(self.dir, answers)

    def stored(self) -> SourceAnswers:
        from rvlm.core.quality.answers import SourceAnswers, read_answers

        found = read_answers(self.dir, self.plan.fingerprint) if self.dir is not None else None
        return found or SourceAnswers(plan_fingerprint=self.plan.fingerprint,
                                      index=self.plan.source_index, seed=SEED)

    def measure(self, client: redis.Redis) -> QualityResult:
        """Ask the target and compare with the stored answers (see the module docstring)."""
        if not self.wanted:
            return QualityResult()
        from rvlm.core.quality.gate import measure

        return measure(client, self.sides, self.stored(), self.options, directory=self.dir)


def gate_for_validate(plan: Plan, backup_dir: str | Path | None,
                      options: QualityOptions | None) -> QualityGate | None:
    """The gate of ``rvlm validate``: the answers stored in ``backup_dir`` (None without a
    backup dir: there is nothing to compare with). A floor or query checks asked for without
    a backup dir are refused."""
    if backup_dir is None:
        if options is not None and (options.min_recall is not None
                                    or options.query_checks is not None):
            raise RvlmError("--min-recall and --query-check-file compare with the source's "
                            "answers kept in the apply's backup dir: give --backup-dir")
        return None
    return QualityGate(plan, backup_dir, options)


__all__ = ["QualityGate", "gate_for_validate", "sides_of"]
