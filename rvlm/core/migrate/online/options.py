"""How an online apply that copies documents behaves while it runs (not part of the plan).

The plan says *what* changes; these say how gently and for how long: throttling thresholds,
when the alias may move, whether forwarding goes on after the cut-over, whether the source
keys are deleted at the end, and how progress is reported.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import attrs

from rvlm.core.migrate.online.control import Status

#: changed keys the backlog holds in memory before it spills to disk, unless told otherwise
BACKLOG_MEMORY_KEYS = 100_000
#: seconds finalize waits for the source prefixes to be quiet after its first pass
FINALIZE_SETTLE = 30.0


@attrs.frozen(kw_only=True)
class OnlineOptions:
    """``follow``: keep carrying writes to source keys over after the cut-over until
    ``rvlm finalize``, ``rvlm ctl stop`` or ``should_stop`` says so (without it, apply drains
    the backlog and ends). ``finalize``: back up and delete the source keys at the end.
    ``max_load`` / ``critical_load``: INFO thresholds (pause / stop); ``max_lag_ms`` and
    ``replicas``: replication lag throttle (replicas found in INFO when None).
    ``postpone_flag_file``: the alias moves only once this file does not exist (or
    ``rvlm ctl cut-over``). ``status_every``: seconds between ``on_status`` calls.
    ``should_stop``: polled; returns why to stop (a signal) or None. ``backlog_memory_keys``:
    changed keys held in memory before the backlog spills to disk. ``finalize_settle``:
    seconds finalize keeps passing over the source keys, after its first pass, while clients
    still write them (at least 3 passes); then it leaves what still changes in place."""

    follow: bool = False
    finalize: bool = False
    max_load: dict[str, float] = attrs.field(factory=dict)
    critical_load: dict[str, float] = attrs.field(factory=dict)
    max_lag_ms: float | None = None
    replicas: tuple[str, ...] | None = None
    postpone_flag_file: Path | None = None
    status_every: float = 5.0
    on_status: Callable[[Status], None] | None = None
    should_stop: Callable[[], str | None] | None = None
    backlog_memory_keys: int = BACKLOG_MEMORY_KEYS
    finalize_settle: float = FINALIZE_SETTLE


__all__ = ["BACKLOG_MEMORY_KEYS", "FINALIZE_SETTLE", "OnlineOptions"]
