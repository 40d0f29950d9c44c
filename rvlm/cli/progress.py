"""Progress of a migration as the user sees it: named steps, bars in a terminal, lines elsewhere.

The library reports ``progress(step, done, total)`` (see
:data:`rvlm.core.migrate.executor.Progress`); :func:`progress_display` turns that into

* in a terminal (stderr is a TTY): one rich bar per step, named by what it does, with its
  count and unit, and a rate only where a rate means something (keys/s, batches/s; not for
  "indexed %");
* without one (CI, container logs, ``| tee``): one plain line when a step starts, then at most
  one every few seconds (``RVLM_PROGRESS_SECONDS``, default 5), and one when it ends;
* with ``--quiet``: nothing.

Everything goes to stderr, so stdout keeps only the result (``--json`` stays parseable).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs

from rvlm.cli import output

INTERVAL_ENV = "RVLM_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 5.0

ProgressCallback = Callable[[str, int, int], None]


@attrs.frozen
class Step:
    """How a step the library reports is shown: its label, the unit it counts, and whether a
    rate means something for it."""

    label: str
    unit: str
    rate: bool = True


#: The steps the executor and rollback report (the keys of the report's ``timings`` name the
#: same steps; the journal's *phases* are another thing), in the words the user reads.
STEPS: dict[str, Step] = {
    "keys": Step("keys", "keys"),
    "transform": Step("backup + transform", "batches"),
    "indexing": Step("indexing", "%", rate=False),
    "restore": Step("restore", "batches"),
}


def step_of(name: str) -> Step:
    return STEPS.get(name) or Step(name.replace("_", " "), "")


def count_text(step: Step, done: int, total: int) -> str:
    """``1,200/5,000 keys`` or, for a percentage, ``40%``."""
    if step.unit == "%":
        return f"{done}%"
    unit = f" {step.unit}" if step.unit else ""
    return f"{done:,}/{total:,}{unit}"


def rate_text(step: Step, per_second: float | None) -> str:
    if not step.rate or per_second is None or per_second <= 0:
        return ""
    unit = step.unit or "items"
    return f"{per_second:,.1f} {unit}/s"


def interval() -> float:
    try:
        return max(0.0, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


class LineReporter:
    """Plain progress lines for logs: a line when a step starts, at most one every
    ``every`` seconds while it runs, and one when it is complete."""

    def __init__(self, write: Callable[[str], None], every: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.write, self.every, self.clock = write, every, clock
        self.started: dict[str, tuple[float, int]] = {}  # step -> (start time, start count)
        self.last: dict[str, float] = {}
        self.finished: set[str] = set()

    def __call__(self, name: str, done: int, total: int) -> None:
        now = self.clock()
        step = step_of(name)
        first = name not in self.started
        if first:
            self.started[name] = (now, done)
        complete = total > 0 and done >= total
        if name in self.finished:
            return
        if not (first or complete or now - self.last.get(name, now) >= self.every):
            return
        self.last[name] = now
        if complete:
            self.finished.add(name)
        t0, d0 = self.started[name]
        elapsed = now - t0
        rate = (done - d0) / elapsed if elapsed > 0 and done > d0 else None
        parts = [count_text(step, done, total)]
        if step.unit != "%" and total > 0:
            parts.append(f"{done * 100 // total}%")
        rate_part = rate_text(step, rate)
        if rate_part:
            parts.append(rate_part)
        if elapsed >= 0.05:
            parts.append(f"{elapsed:.1f} s")
        state = "done" if complete else ("started" if first else "")
        self.write(f"{step.label}: {', '.join(parts)}" + (f" ({state})" if state else ""))


def _bars(console: Any) -> tuple[Any, ProgressCallback]:
    """A rich Progress with one bar per step; returns it and the callback feeding it."""
    from rich.progress import (
        BarColumn,
        Progress,
        ProgressColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.text import Text

    class CountColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            step = task.fields["step"]
            if step.unit == "%":
                return Text("")
            return Text(count_text(step, int(task.completed), int(task.total or 0)))

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(rate_text(task.fields["step"], task.finished_speed or task.speed))

    bars = Progress(TextColumn("{task.description:>18}"), BarColumn(), TaskProgressColumn(),
                    CountColumn(), RateColumn(), TimeElapsedColumn(), console=console)
    tasks: dict[str, Any] = {}

    def update(name: str, done: int, total: int) -> None:
        if name not in tasks:
            step = step_of(name)
            tasks[name] = bars.add_task(step.label, total=max(total, 1), completed=done,
                                        step=step)
        bars.update(tasks[name], completed=done, total=max(total, done, 1))

    return bars, update


@contextmanager
def progress_display() -> Iterator[ProgressCallback]:
    """The ``progress(step, done, total)`` callback for one command (see the module doc)."""
    if output.SETTINGS.quiet:
        yield lambda name, done, total: None
        return
    stderr_tty = sys.stderr.isatty()
    if stderr_tty:
        bars, update = _bars(output.err_console())
        with bars:
            yield update
        return
    yield LineReporter(output.err_line, interval())
