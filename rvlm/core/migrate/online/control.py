"""Talking to a running online apply from another shell: its status, and commands.

A running apply keeps ``control/`` in its backup dir:

* ``status.json``: rewritten (atomically) every tick with progress, backlog, forwarding lag,
  throttle state, the process id and the time; ``rvlm ctl status`` and the periodic status
  line both come from a :class:`Status`.
* ``cmd-*.json``: a command dropped by :func:`send` (``rvlm ctl``); the apply takes it at its
  next tick (well under a second), acts, deletes it and leaves ``ack-<id>.json`` with its
  answer, which :func:`send` waits for and prints.

Commands (:data:`COMMANDS`): ``status``; ``throttle`` / ``unthrottle`` (a pause only the user
lifts; other reasons still apply); ``cut-over`` (do not wait for the postpone flag file any
longer); ``stop`` (stop cleanly, resumable: like SIGTERM); ``finalize`` (stop forwarding and
finalize, see ``rvlm finalize``); ``max-load=F=N,...``, ``critical-load=F=N,...``,
``max-lag-millis=N`` (change a threshold; ``max-load=?`` shows it).

Files rather than a socket: nothing to bind, works wherever the backup dir is reachable, and
the status stays readable after the apply ends (its ``state`` then says so).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import attrs

from rvlm.core.errors import RvlmError
from rvlm.core.redis.lock import pid_alive
from rvlm.core.storage.files import atomic_write_text

CONTROL_DIR = "control"
STATUS_NAME = "status.json"
#: A status older than this (seconds) is from an apply that is no longer running.
STALE_AFTER = 15.0
COMMANDS = ("status", "throttle", "unthrottle", "cut-over", "stop", "finalize",
            "max-load=", "critical-load=", "max-lag-millis=")
_ALIASES = {"no-throttle": "unthrottle", "unpostpone": "cut-over", "sup": "status"}


def _atomic_write(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, sort_keys=True))


def eta_seconds(done: int, total: int, elapsed: float) -> float | None:
    """Seconds left at the rate so far; None before 1% is done (too early to say)."""
    if total <= 0 or done <= 0 or done * 100 < total or elapsed <= 0:
        return None
    return max(0.0, (total - done) * elapsed / done)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "N/A"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s"
    return f"{s // 3600}h{s % 3600 // 60}m"


@attrs.define(kw_only=True)
class Status:
    """What a running online apply is doing (the status line and ``rvlm ctl status``)."""

    phase: str = "starting"
    copied: int = 0
    total: int = 0
    applied: int = 0
    backlog: int = 0
    lag_ms: dict[str, Any] = attrs.field(factory=dict)
    throttled: str | None = None
    postponed: str | None = None
    elapsed: float = 0.0
    eta: float | None = None
    pid: int = attrs.field(factory=os.getpid)
    host: str = attrs.field(factory=socket.gethostname)
    updated_at: float = attrs.field(factory=time.time)
    state: str = "running"
    note: str = ""

    def line(self) -> str:
        """One line: ``Copy: 12000/20000 60.0%; Applied: 340; Backlog: 12; Lag: p99 4.1ms;
        State: migrating; ETA: 8s`` (the state names the throttle reason or the postponement)."""
        pct = f" {100.0 * self.copied / self.total:.1f}%" if self.total else ""
        lag = (f"p50 {self.lag_ms.get('p50', 0):g}ms p99 {self.lag_ms.get('p99', 0):g}ms "
               f"max {self.lag_ms.get('max', 0):g}ms" if self.lag_ms.get("count") else "-")
        if self.state != "running":
            state = self.state
        elif self.throttled:
            state = f"throttled, {self.throttled}"
        elif self.postponed:
            state = f"cut-over postponed, {self.postponed}"
        else:
            state = self.phase
        return (f"Copy: {self.copied}/{self.total}{pct}; Applied: {self.applied}; "
                f"Backlog: {self.backlog}; Lag: {lag}; Time: {_duration(self.elapsed)}; "
                f"State: {state}; ETA: {_duration(self.eta)}")

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Status:
        names = {a.name for a in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def control_dir(backup_dir: str | Path) -> Path:
    return Path(backup_dir) / CONTROL_DIR


def read_status(backup_dir: str | Path) -> Status | None:
    """The last status the apply wrote, or None if it never wrote one."""
    path = control_dir(backup_dir) / STATUS_NAME
    try:
        return Status.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def _alive(status: Status) -> bool:
    if status.state != "running" or time.time() - status.updated_at > STALE_AFTER:
        return False
    return status.host != socket.gethostname() or pid_alive(status.pid)


def running(backup_dir: str | Path) -> Status | None:
    """The status of the apply running on ``backup_dir``, or None if none runs."""
    status = read_status(backup_dir)
    return status if status is not None and _alive(status) else None


def normalise(command: str) -> str:
    """The command as the apply understands it; raises :class:`RvlmError` for an unknown one."""
    text = command.strip()
    name, eq, value = text.partition("=")
    name = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if eq:
        if name + "=" not in COMMANDS:
            raise RvlmError(f"unknown command {text!r}; known: {', '.join(COMMANDS)}")
        return f"{name}={value.strip()}"
    if name not in COMMANDS:
        raise RvlmError(f"unknown command {text!r}; known: {', '.join(COMMANDS)}")
    return name


def send(backup_dir: str | Path, command: str, *, timeout: float = 10.0) -> str:
    """Hand ``command`` to the apply running on ``backup_dir`` and return its answer. Raises
    :class:`RvlmError` when no apply runs there or it does not answer within ``timeout``."""
    command = normalise(command)
    status = running(backup_dir)
    if status is None:
        last = read_status(backup_dir)
        when = (f" (its last status, {time.strftime('%H:%M:%S', time.localtime(last.updated_at))}"
                f": {last.line()})" if last else "")
        raise RvlmError(f"no online apply is running on {backup_dir}{when}")
    directory = control_dir(backup_dir)
    cid = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
    _atomic_write(directory / f"cmd-{cid}.json", {"id": cid, "command": command})
    ack = directory / f"ack-{cid}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ack.exists():
            try:
                answer = json.loads(ack.read_text(encoding="utf-8"))
            except ValueError:  # pragma: no cover - written atomically
                time.sleep(0.02)
                continue
            ack.unlink(missing_ok=True)
            return str(answer.get("answer", ""))
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        (directory / f"cmd-{cid}.json").unlink()
    raise RvlmError(f"the apply running on {backup_dir} (pid {status.pid}) did not answer "
                    f"{command!r} within {timeout:.0f}s")


class ControlChannel:
    """The apply's side: publishes :class:`Status` and takes commands (see the module
    docstring)."""

    def __init__(self, backup_dir: str | Path) -> None:
        self.dir = control_dir(backup_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob("cmd-*.json"):  # meant for an apply that is gone
            stale.unlink(missing_ok=True)
        self.status = Status()

    def publish(self, status: Status | None = None) -> None:
        """Write ``status`` (or the current one) with the time of now. Replaced atomically but
        not fsynced: a status is read by a running apply's neighbours, never after a crash,
        and an fsync (two, with the directory's) on the forwarding thread every tick was
        forwarding lag."""
        if status is not None:
            self.status = status
        self.status.updated_at = time.time()
        path = self.dir / STATUS_NAME
        tmp = path.with_name(f".{STATUS_NAME}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.status.to_dict(), sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)

    def commands(self) -> list[tuple[str, str]]:
        """``(id, command)`` of every command waiting, oldest first; each is removed."""
        out = []
        for path in sorted(self.dir.glob("cmd-*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            path.unlink(missing_ok=True)
            out.append((str(data.get("id", "")), str(data.get("command", ""))))
        return out

    def answer(self, cid: str, text: str) -> None:
        _atomic_write(self.dir / f"ack-{cid}.json", {"answer": text})

    def close(self, state: str) -> None:
        """Publish a final status whose ``state`` says how the apply ended."""
        self.status.state = state
        with contextlib.suppress(OSError):
            self.publish()
