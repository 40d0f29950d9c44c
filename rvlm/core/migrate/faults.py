"""Fault points for crash tests: the process dies at a named point of an apply.

``RVLM_FAULT=<point>[:<batch>]`` makes :func:`fault` exit the process at once with
``os._exit(137)`` (no cleanup, no ``finally``: what a ``kill -9`` leaves) when it reaches that
point (and batch). Tests then re-run the same apply and check that it resumes to the same
documents and bytes.

Points of a ``drop_recreate`` apply (:mod:`rvlm.core.migrate.drop_recreate`): ``after_checks``,
``after_drop``, ``backup_unsynced:N`` (batch N's backup frame written to the OS, not
fsynced), ``after_backup:N`` (backup of batch N fsynced, not journaled),
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

Two threads at once: ``RVLM_FAULT_AFTER=<point>[:<batch>]`` (with ``RVLM_FAULT``) makes the
thread that reaches *that* point stop there (it never returns), and the process exit at
``RVLM_FAULT`` only once it did: e.g. ``RVLM_FAULT=mid_write:4 RVLM_FAULT_AFTER=
backup_unsynced:5`` crashes while batch 4 is half written and batch 5's backup is written, not
fsynced (the drop_recreate executor overlaps them). If the awaited point is not reached within
:data:`AFTER_TIMEOUT` seconds of the fault point, the process exits with 138 instead (that
state never happened).

Code that takes a fault callable (:data:`Fault`, e.g. the online copy engine) is given
:func:`fault` by its executor, and :func:`no_fault` where no crash test reaches it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

FAULT_ENV = "RVLM_FAULT"
AFTER_ENV = "RVLM_FAULT_AFTER"
#: How long the fault point waits for ``RVLM_FAULT_AFTER``'s point (seconds).
AFTER_TIMEOUT = 30.0

_reached = threading.Event()

#: a fault point as a callable: ``fault(point, batch)``
Fault = Callable[[str, "int | None"], None]


def _names(spec: str, point: str, batch: int | None) -> bool:
    name, _, num = spec.partition(":")
    if name != point:
        return False
    return not num or (batch is not None and int(num) == batch)


def fault(point: str, batch: int | None = None) -> None:
    """Exit at once (``os._exit(137)``) if ``RVLM_FAULT`` names this point (and batch); with
    ``RVLM_FAULT_AFTER``, stop the thread at that point, and exit at ``RVLM_FAULT``'s only
    once a thread stopped there."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    after = os.environ.get(AFTER_ENV)
    if after and _names(after, point, batch):
        _reached.set()
        threading.Event().wait(AFTER_TIMEOUT * 2)  # the process exits meanwhile
        os._exit(139)  # the fault point was never reached
    if not _names(spec, point, batch):
        return
    if after and not _reached.wait(AFTER_TIMEOUT):
        os._exit(138)
    os._exit(137)


def no_fault(point: str, batch: int | None = None) -> None:
    """A :data:`Fault` that never stops the process."""


__all__ = ["FAULT_ENV", "Fault", "fault", "no_fault"]
