"""The engine of an online migration that rewrites documents: copy, carry changes over, drain.

:class:`OnlineCopy` runs in one thread (one writer: two writes of one target key are never
reordered) and owns the loop of :mod:`rvlm.core.migrate.online.blue_green`:

* :meth:`OnlineCopy.copy` goes through a key file batch by batch: read the sources whole,
  transform (:class:`~rvlm.core.migrate.online.mirror.Mirror`), write the targets (compared
  first when ``compare`` is on: a resume writes only what differs), then forget the backlog
  entries the read already covered, then carry over one batch of the backlog;
* :meth:`OnlineCopy.forward` carries over one pass of changed keys (as many as take about
  ``step_seconds``, :class:`StepSize`): logged first
  (:class:`~rvlm.core.storage.keylog.KeyLog`), then read, transformed and written (or their
  targets deleted), each one's lag recorded;
* :meth:`OnlineCopy.forward_during` runs a long read-only check (the validation before the
  cut-over, the check of every document) in another thread while this one keeps forwarding;
* :meth:`OnlineCopy.drain` waits for a capture barrier, then forwards until the backlog is
  empty;
* :meth:`OnlineCopy.sweep` deletes target keys whose source key is gone (a resume, a
  finalize: :mod:`rvlm.core.migrate.online.sweep`);
* :meth:`OnlineCopy.tick` (called between batches, and while waiting) checks the capture
  subscriptions, the throttle and critical load, takes commands from another shell, publishes
  the status and calls ``on_status`` every ``status_every`` seconds.

While throttled nothing is copied or forwarded; capture keeps listening (the backlog grows,
spilling to disk beyond its memory bound). Critical load and a stop request raise
:class:`Stopped` (the run stops cleanly; the same command resumes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import redis

from rvlm.core.errors import MigrationFailed
from rvlm.core.migrate.faults import Fault, no_fault
from rvlm.core.migrate.online.control import ControlChannel, Status, eta_seconds
from rvlm.core.migrate.online.lag import LagStats
from rvlm.core.migrate.online.mirror import Mirror
from rvlm.core.migrate.online.throttle import Throttler, format_thresholds, parse_thresholds
from rvlm.core.redis import wire
from rvlm.core.redis.capture import Subscriber
from rvlm.core.redis.copyio import TargetDoc, read_targets, same, write_targets
from rvlm.core.redis.resp import to_int
from rvlm.core.storage.keyfile import KeyFileReader
from rvlm.core.storage.keylog import KeyLog
from rvlm.core.storage.pending import PendingKeys

_MIN_STEP = 10
T = TypeVar("T")
#: Seconds between two status files (``rvlm ctl status`` reads them).
PUBLISH_EVERY = 1.0


class StepSize:
    """How many keys one step takes so that it lasts about ``seconds``: shrunk by 30% after a
    step that took longer, doubled after one that took under half (between ``least`` and
    ``most``). Large vectors, or a server busy building an index, make a key slower; the
    steps follow, so a change never waits long behind one."""

    def __init__(self, seconds: float, most: int, start: int = 100, least: int = _MIN_STEP
                 ) -> None:
        self.seconds = seconds
        self.most = max(1, most)
        self.least = max(1, min(least, self.most))
        self.size = max(self.least, min(start, self.most))

    def took(self, seconds: float, keys: int | None = None) -> None:
        """Record how long the last step took (of ``keys`` keys; default :attr:`size`): a
        slow one shrinks the size, a fast full one grows it."""
        keys = self.size if keys is None else keys
        if seconds > self.seconds:
            self.size = max(self.least, int(min(self.size, keys) * 0.7))
        elif seconds < self.seconds / 2 and keys >= self.size:
            self.size = min(self.most, self.size * 2)


class Stopped(MigrationFailed):
    """The run stopped cleanly on request (critical load, ``rvlm ctl stop``, a signal)."""

    def __init__(self, why: str, message: str) -> None:
        self.why = why
        super().__init__(message)


class OnlineCopy:
    """See the module docstring."""

    def __init__(self, client: redis.Redis, mirror: Mirror, pending: PendingKeys,
                 subscribers: Sequence[Subscriber], written: KeyLog, *,
                 throttler: Throttler | None = None, control: ControlChannel | None = None,
                 batch_size: int = 500, status_every: float = 5.0,
                 on_status: Callable[[Status], None] | None = None,
                 should_stop: Callable[[], str | None] | None = None,
                 fault: Fault = no_fault,
                 on_tick: Callable[[], None] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.client = client
        self.mirror = mirror
        self.pending = pending
        self.subscribers = list(subscribers)
        self.written = written
        self.throttler = throttler
        self.control = control
        self.batch_size = batch_size
        self.status_every = status_every
        self.on_status = on_status
        self.should_stop = should_stop
        self.fault = fault
        #: called at every tick (the run checks its lock leases there)
        self.on_tick = on_tick
        #: ``progress(copied, total)`` after each copied batch
        self.progress = progress
        #: write each target in one MULTI/EXEC (on once the target index serves)
        self.serving = False
        #: compare with the target before writing (a resume)
        self.compare = False
        self.lag = LagStats()
        self.phase = "copy"
        self.copied = 0
        self.total = 0
        self.applied = 0
        self.skipped_same = 0
        self.deleted = 0
        self.bytes_written = 0
        #: set by ``rvlm ctl cut-over``: stop waiting for the postpone flag file
        self.cut_over_now = False
        #: set by ``rvlm ctl finalize``
        self.finalize_requested = False
        #: why another shell asked to stop (``rvlm ctl stop`` / ``finalize``)
        self.stop_requested: str | None = None
        #: what postpones the cut-over right now (for the status)
        self.postponed: str | None = None
        self.started = time.monotonic()
        #: seconds one copy step should take (see :meth:`copy`)
        self.step_seconds = 0.04
        #: keys per copy step and per forward pass, each sized to take about
        #: :attr:`step_seconds`
        self.copy_step = StepSize(self.step_seconds, batch_size)
        self.forward_step = StepSize(self.step_seconds, batch_size, start=batch_size)
        self._copy_started: float | None = None
        self._last_tick = 0.0
        self._last_status = 0.0
        self._last_publish = 0.0
        self._throttled: str | None = None

    # -- status and control --------------------------------------------------------------
    def status(self) -> Status:
        now = time.monotonic()
        eta = None
        if self.phase == "copy" and self._copy_started is not None:
            eta = eta_seconds(self.copied, self.total, now - self._copy_started)
        return Status(phase=self.phase, copied=self.copied, total=self.total,
                      applied=self.applied, backlog=len(self.pending),
                      lag_ms=self.lag.to_dict(), throttled=self._throttled,
                      postponed=self.postponed, elapsed=now - self.started, eta=eta)

    def _command(self, command: str) -> str:
        name, _, value = command.partition("=")
        t = self.throttler
        if name == "status":
            return self.status().line()
        if name in ("throttle", "unthrottle"):
            if t is None:
                return "this apply has no throttle"
            t.forced = name == "throttle"
            t.check(now=float("inf"))  # re-evaluate at once
            return "throttled (commanded by user)" if t.forced else "unthrottled"
        if name == "cut-over":
            self.cut_over_now = True
            return "the cut-over goes ahead as soon as the target is ready"
        if name == "stop":
            self.stop_requested = "rvlm ctl stop"
            return "stopping"
        if name == "finalize":
            self.finalize_requested = True
            self.stop_requested = "rvlm finalize"
            return "stopping forwarding for finalize"
        if t is None:
            return "this apply has no throttle"
        if name in ("max-load", "critical-load"):
            if value != "?":
                parsed = parse_thresholds(value, f"--{name}")
                if name == "max-load":
                    t.max_load = parsed
                else:
                    t.critical_load = parsed
            return format_thresholds(t.max_load if name == "max-load" else t.critical_load)
        if name == "max-lag-millis":
            if value != "?":
                t.set_max_lag(float(value) if value else None)
            return "" if t.max_lag_ms is None else f"{t.max_lag_ms:g}"
        return f"unknown command {command!r}"  # pragma: no cover - normalised by send()

    def tick(self, force: bool = False) -> None:
        """Everything done between batches (see the module docstring); cheap when called
        often (the work runs at most every 0.1 s)."""
        now = time.monotonic()
        if not force and now - self._last_tick < 0.1:
            return
        self._last_tick = now
        if self.on_tick is not None:
            self.on_tick()
        for sub in self.subscribers:
            sub.check()
        if self.control is not None:
            for cid, command in self.control.commands():
                try:
                    answer = self._command(command)
                except MigrationFailed:
                    raise
                except Exception as exc:
                    answer = f"error: {exc}"
                self.control.answer(cid, answer)
        if self.throttler is not None:
            state = self.throttler.check(now)
            if state.critical:
                raise Stopped("critical-load", f"critical-load reached ({state.critical}); "
                              "stopped cleanly")
            self._throttled = state.reason
        why = self.stop_requested or (self.should_stop() if self.should_stop else None)
        if why and not self.finalize_requested and self.phase in ("copy", "catch-up"):
            raise Stopped(why, f"stopped by {why}")
        if self.control is not None and (force or now - self._last_publish >= PUBLISH_EVERY):
            self._last_publish = now
            self.control.publish(self.status())
        if self.on_status is not None and (force or now - self._last_status >= self.status_every):
            self._last_status = now
            self.on_status(self.status())

    @property
    def throttled(self) -> str | None:
        """Why the run is throttled now (None: it is not); set by :meth:`tick`."""
        return self._throttled

    def wait_while_throttled(self) -> None:
        """Return once no throttle reason applies (ticking meanwhile)."""
        self.tick()
        while self._throttled is not None:
            time.sleep(0.05)
            self.tick()

    def stop_reason(self) -> str | None:
        """Why the run should stop now (another shell, a signal), or None."""
        return self.stop_requested or (self.should_stop() if self.should_stop else None)

    # -- copy ----------------------------------------------------------------------------
    def write(self, docs: list[TargetDoc], deletes: list[bytes]) -> int:
        """Write target documents (those that differ, in compare mode) and delete target
        keys; returns how many documents were written."""
        if self.compare and docs:
            have = read_targets(self.client, self.mirror.target_storage, [d.key for d in docs])
            keep = [d for d, h in zip(docs, have, strict=True) if not same(d, h)]
            self.skipped_same += len(docs) - len(keep)
            docs = keep
        if docs or deletes:
            self.bytes_written += write_targets(self.client, docs, deletes, atomic=self.serving)
        self.deleted += len(deletes)
        return len(docs)

    def copy_keys(self, keys: Sequence[bytes]) -> None:
        """Copy one batch of source keys (read at a time after which the backlog's older
        entries for them are covered)."""
        t_read = time.monotonic()
        sources = self.mirror.read(self.client, keys)
        docs, deletes = self.mirror.targets(sources)
        self.write(docs, deletes)
        self.pending.covered(keys, t_read)

    def copy(self, keyfile: Path, *, fault_point: str = "online_copy") -> None:
        """Copy every key of ``keyfile``, carrying changes over between steps.

        A batch is copied in steps sized to take about :attr:`step_seconds` each (a step's
        writes include the target index's work, which a vector index makes slow), so a
        change carried over never waits long behind the copy."""
        self.phase = "copy"
        with KeyFileReader(keyfile, verify=False) as reader:
            self.total = reader.count
            self.copied = 0
            self._copy_started = time.monotonic()
            for n, keys in enumerate(reader.iter_batches(self.batch_size)):
                i = 0
                while i < len(keys):
                    self.wait_while_throttled()
                    chunk = keys[i:i + self.copy_step.size]
                    started = time.monotonic()
                    self.copy_keys(chunk)
                    self.copy_step.took(time.monotonic() - started)
                    i += len(chunk)
                    self.copied += len(chunk)
                    self.tick()
                    self.forward()
                if self.progress is not None:
                    self.progress(self.copied, self.total)
                self.fault(fault_point, n)
        self.tick(force=True)

    # -- forwarding ----------------------------------------------------------------------
    def forward(self, limit: int | None = None) -> int:
        """Carry over up to ``limit`` changed keys (default: as many as take about
        :attr:`step_seconds`, at most a batch); returns how many."""
        if self._throttled is not None:
            return 0
        taken = self.pending.take(limit or self.forward_step.size)
        if not taken:
            return 0
        started = time.monotonic()
        keys = list(dict.fromkeys(k for k, _ in taken))
        # the keys are logged (fsynced) before their targets are written; the fsync runs in
        # a thread meanwhile the sources are read and transformed, off the lag's path
        logged: _Background[int] = _Background(self.written.add, keys)
        try:
            sources = self.mirror.read(self.client, keys)
            docs, deletes = self.mirror.targets(sources)
        finally:
            logged.result()
        self.write(docs, deletes)
        now = time.monotonic()
        if limit is None:
            self.forward_step.took(now - started, len(taken))
        for _k, at in taken:
            self.lag.add((now - at) * 1000.0)
        self.applied += len(taken)
        self.fault("online_forward", None)
        return len(taken)

    def drain(self, *, timeout: float | None = None) -> None:
        """Forward until the backlog is empty as of a capture barrier (every change published
        before the call is carried over). Throttling pauses it; ``timeout`` bounds it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for sub in self.subscribers:
            sub.barrier()
        while len(self.pending):
            self.wait_while_throttled()
            self.forward()
            self.tick()
            if deadline is not None and time.monotonic() > deadline:
                raise MigrationFailed(f"the backlog ({len(self.pending)} keys) did not drain "
                                      f"within {timeout:.0f}s")

    def forward_during(self, fn: Callable[[], T], *, between: Callable[[], None] | None = None,
                       stop: threading.Event | None = None) -> T:
        """``fn()`` (which must only read: this thread stays the one writer of target keys)
        in a thread of its own, while this one keeps carrying changes over (and calls
        ``between()`` between two forward passes); returns its result or raises its error.
        So a long check (round trips of validation, queries of the quality gate, the check
        of every document) does not hold changes back. If this thread fails, ``stop`` is
        set before waiting for ``fn`` to end."""
        job: _Background[T] = _Background(fn, name="rvlm-check")
        try:
            while not job.done():
                self.tick()
                if between is not None:
                    between()
                if not self.forward():
                    self.idle(0.005)
        except BaseException:
            if stop is not None:
                stop.set()
            job.wait()  # nothing of it runs on once the run stops
            raise
        return job.result()

    def idle(self, seconds: float) -> None:
        """Wait up to ``seconds`` for a change to arrive (at once if one waits); while
        throttled, just wait (the backlog is left alone)."""
        if self._throttled is not None:
            time.sleep(seconds)
        else:
            self.pending.wait(seconds)

    def follow(self, until: Callable[[], bool], idle: float = 0.05) -> None:
        """Keep forwarding until ``until()`` is true (checked between steps); an arriving
        change wakes it at once."""
        while not until():
            self.tick()
            if not self.forward():
                self.idle(idle)

    # -- resume --------------------------------------------------------------------------
    def sweep(self, source_keys: Iterable[list[bytes]],
              keep: Callable[[list[bytes]], set[bytes]] | None = None) -> int:
        """Delete the target of every source key in ``source_keys`` that is gone (or is no
        document any more), except those ``keep`` returns when given the gone keys of a
        chunk; returns how many targets were deleted."""
        n = 0
        for keys in source_keys:
            self.tick()
            types = wire.execute(self.client, [(b"TYPE", k) for k in keys])
            want = b"ReJSON-RL" if self.mirror.source_storage == "json" else b"hash"
            gone = [k for k, t in zip(keys, types, strict=True)
                    if not isinstance(t, Exception) and _type_name(t) != want]
            if gone and keep is not None:
                stay = keep(gone)
                gone = [k for k in gone if k not in stay]
            if gone:
                targets = [self.mirror.target_key(k) for k in gone]
                replies = wire.execute(self.client, [(b"DEL", t) for t in targets])
                n += sum(to_int(r) for r in replies if not isinstance(r, Exception))
        self.deleted += n
        return n


class _Background(Generic[T]):
    """``fn(*args)`` in a thread of its own; :meth:`result` waits for it and returns its
    value or re-raises."""

    def __init__(self, fn: Callable[..., T], *args: Any, name: str = "rvlm-keylog") -> None:
        self._error: BaseException | None = None
        self._value: T | None = None

        def run() -> None:
            try:
                self._value = fn(*args)
            except BaseException as exc:  # handed to result()
                self._error = exc

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def _type_name(reply: Any) -> bytes:
    if isinstance(reply, bytes):
        return reply
    return str(reply).encode()
