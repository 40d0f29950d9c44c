"""Fault points for crash tests: the process dies at a named point of an apply.

``RVLM_FAULT=<point>[:<batch>]`` makes :func:`fault` exit the process at once with
``os._exit(137)`` (no cleanup, no ``finally``: what a ``kill -9`` leaves) when it reaches that
point (and batch). Tests then re-run the same apply and check that it resumes to the same
documents and bytes.

Points of a ``drop_recreate`` apply (:mod:`rvlm.core.migrate.drop_recreate`): ``after_checks``,
``after_drop``, ``after_backup:N`` (backup of batch N fsynced, not journaled),
``after_started:N`` (journaled, nothing written), ``mid_write:N`` (values written, keys not
yet renamed), ``mid_move:N`` (keys moved by DUMP/RESTORE are in place under their new names,
their sources not yet deleted), ``after_batch:N``, ``after_transform``, ``after_create``.

Points of an ``online`` apply of an index-only change
(:mod:`rvlm.core.migrate.online.executor`): ``online_after_checks``, ``online_after_create``,
``online_after_validate``, ``online_after_alias``, ``online_after_drop``.

Points of an ``online`` apply that copies documents (:mod:`rvlm.core.migrate.online.blue_green`,
one after each journaled phase): ``online_after_checks``, ``online_after_capture``,
``online_after_create``, ``online_after_copy``, ``online_after_indexed``,
``online_after_validate``, ``online_after_alias``, ``online_after_drop``,
``online_after_forwarding``; and ``online_copy:N`` (copy batch N written), ``online_forward``
(a batch of changes carried over). Of ``rvlm finalize``
(:mod:`rvlm.core.migrate.online.finalize`): ``finalize_backup:N`` (batch N backed up, not
journaled), ``finalize_delete:N`` (its keys deleted, not journaled as done),
``finalize_after_batches``.

Code that takes a fault callable (:data:`Fault`, e.g. the online copy engine) is given
:func:`fault` by its executor, and :func:`no_fault` where no crash test reaches it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

FAULT_ENV = "RVLM_FAULT"

#: a fault point as a callable: ``fault(point, batch)``
Fault = Callable[[str, "int | None"], None]


def fault(point: str, batch: int | None = None) -> None:
    """Exit at once (``os._exit(137)``) if ``RVLM_FAULT`` names this point (and batch)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    name, _, num = spec.partition(":")
    if name != point:
        return
    if num and (batch is None or int(num) != batch):
        return
    os._exit(137)


def no_fault(point: str, batch: int | None = None) -> None:
    """A :data:`Fault` that never stops the process."""


__all__ = ["FAULT_ENV", "Fault", "fault", "no_fault"]
