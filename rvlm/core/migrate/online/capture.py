"""Change capture for one online run: the notification setting, the backlog, the subscribers,
and the copy engine that works them off.

:class:`CaptureSession` is what an apply, a resume and ``rvlm finalize`` start before reading
the first source key: it registers the run's need for keyspace notifications (CONFIG SET, or,
where CONFIG is refused, a probe that the events arrive: otherwise one line saying exactly
what to configure), opens the backlog (:class:`~rvlm.core.storage.pending.PendingKeys` in the
backup dir) and subscribes to the source prefixes (one
:class:`~rvlm.core.redis.capture.Subscriber`; a cluster needs one per primary, see
:mod:`rvlm.core.migrate.online.blue_green`). :meth:`CaptureSession.engine` builds the
:class:`~rvlm.core.migrate.online.copier.OnlineCopy` for the run.

:meth:`CaptureSession.stop` ends the subscription; :meth:`CaptureSession.leave` takes the
run's notification classes off again (only at the end of forwarding, finalize or rollback: a
stopped or crashed run that will resume keeps them).
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

import redis

from rvlm.core.errors import RvlmError
from rvlm.core.migrate.faults import fault
from rvlm.core.migrate.online.control import ControlChannel
from rvlm.core.migrate.online.copier import OnlineCopy
from rvlm.core.migrate.online.mirror import Mirror
from rvlm.core.migrate.online.options import OnlineOptions
from rvlm.core.migrate.online.throttle import Throttler
from rvlm.core.migrate.plan import Plan
from rvlm.core.migrate.run import Run
from rvlm.core.migrate.transform import transform_batch
from rvlm.core.redis.capture import Subscriber
from rvlm.core.redis.connection import connect
from rvlm.core.redis.notify import (
    ConfigRefused,
    NotifySetting,
    advice,
    missing,
    needed_flags,
    probe,
    read_setting,
)
from rvlm.core.storage.keyfile import KeyFileReader
from rvlm.core.storage.keylog import KeyLog
from rvlm.core.storage.pending import PendingKeys

#: Target keys created outside the key files are logged here (see the blue/green protocol).
WRITTEN_NAME = "written.keys"
PENDING_DIR = "backlog"


KEYS_PATTERN = "keys-*.rvk"


def key_files(directory: Path) -> list[Path]:
    """The key files of every copy (``keys-1.rvk``, ``keys-2.rvk``, ...), oldest first."""
    def epoch(p: Path) -> int:
        digits = p.stem.partition("-")[2]
        return int(digits) if digits.isdigit() else 0
    return sorted(Path(directory).glob(KEYS_PATTERN), key=epoch)


def copied_source_keys(directory: Path, chunk: int = 1000) -> Any:
    """Every source key a run copied or carried over (the key files, then the written
    log), in chunks; keys may repeat."""
    for path in key_files(directory):
        with KeyFileReader(path, verify=False) as reader:
            yield from reader.iter_batches(chunk)
    yield from KeyLog(Path(directory) / WRITTEN_NAME).iter_keys(chunk)


def run_id(plan: Plan, directory: Path) -> str:
    """The run's name in the notification registry: the plan and the backup dir."""
    where = hashlib.sha1(str(Path(directory).resolve()).encode()).hexdigest()[:10]
    return f"{plan.fingerprint[:16]}-{where}"


class CaptureSession:
    """See the module docstring."""

    def __init__(self, run: Run, options: OnlineOptions) -> None:
        self.run = run
        self.options = options
        plan = run.plan
        # pub/sub and the notification registry need a sync connection of their own (the
        # async API's bridge carries the run's other commands)
        self.owns_client = not isinstance(run.client, redis.Redis)
        self.client: redis.Redis = connect(run.url) if self.owns_client else run.client
        self.needed = needed_flags(plan.source_schema.storage_type)
        self.setting = NotifySetting(self.client, run_id(plan, run.dir), self.needed)
        self.config = True
        self.pending: PendingKeys | None = None
        self.subscribers: list[Subscriber] = []
        self.found: str | None = None

    def _watch(self) -> str | None:
        """Called by the subscriber: the setting still delivers what capture needs."""
        if not self.config:
            return None
        try:
            lack = missing(read_setting(self.client), self.needed)
        except Exception:  # the check itself failing is not a lost subscription
            return None
        if lack:
            return f"notify-keyspace-events no longer has {lack!r} (someone changed it)"
        return None

    def start(self) -> None:
        """Register the run, open the backlog and subscribe (confirmed before returning)."""
        client = self.client
        try:
            self.found = self.setting.enter()
        except ConfigRefused:
            self.config = False
            lacking = probe(client, self.needed)
            if lacking:
                raise RvlmError("change capture cannot start: CONFIG is refused and the "
                                f"server does not deliver the keyspace events {lacking!r}; "
                                + advice(None, self.needed)) from None
        self.pending = PendingKeys(self.run.dir / PENDING_DIR,
                                   max_keys=self.options.backlog_memory_keys)
        sub = Subscriber(client, list(self.run.plan.source_schema.index.prefix), self.pending,
                         watch=self._watch)
        sub.start()
        self.subscribers = [sub]

    def stop(self) -> None:
        """End the subscriptions and drop the backlog (idempotent)."""
        for sub in self.subscribers:
            sub.stop()
        self.subscribers = []
        if self.pending is not None:
            self.pending.close()

    def leave(self) -> None:
        """Take the run's notification classes off again (kept if another run needs them)."""
        if self.config:
            with contextlib.suppress(ConfigRefused):
                self.setting.leave()
        if self.owns_client:
            self.client.close()

    def engine(self, control: ControlChannel | None, throttler: Throttler | None) -> OnlineCopy:
        """The copy engine of this run (one writer; see :mod:`rvlm.core.migrate.online.copier`)."""
        run = self.run
        assert self.pending is not None, "start() first"
        mirror = Mirror(run.plan, run.host, run.ctx, transform_batch)
        return OnlineCopy(run.client, mirror, self.pending, self.subscribers,
                          KeyLog(run.dir / WRITTEN_NAME), throttler=throttler, control=control,
                          batch_size=run.batch_size, status_every=self.options.status_every,
                          on_status=self.options.on_status,
                          should_stop=self.options.should_stop, fault=fault)


def make_throttler(run: Run, options: OnlineOptions) -> Throttler:
    """The run's throttle, its options checked against the server (before any change)."""
    t = Throttler(run.client, max_load=options.max_load, critical_load=options.critical_load,
                  max_lag_ms=options.max_lag_ms, replicas=options.replicas)
    t.validate()
    return t
