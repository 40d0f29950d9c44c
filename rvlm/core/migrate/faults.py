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

Points of an ``online`` apply (:mod:`rvlm.core.migrate.online`): ``online_after_checks``,
``online_after_create``, ``online_after_validate``, ``online_after_alias``,
``online_after_drop``.
"""

from __future__ import annotations

import os

FAULT_ENV = "RVLM_FAULT"


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


__all__ = ["FAULT_ENV", "fault"]
