"""The report written without rich into a pipe or a file is rich's text (issue #17).

:class:`rvlm.cli.plain.PlainConsole` reproduces what rich does to a report that is not going to
a terminal (markup, word wrap, width); these tests print the same reports and the same markup
through both, at several widths, and compare every character.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Iterator
from contextlib import redirect_stdout
from typing import Any

import pytest
from rich.console import Console
from rich.errors import MarkupError
from rich.markup import escape as rich_escape

from rvlm.cli import output
from rvlm.cli.plain import PlainConsole, escape, rich_width
from rvlm.cli.render import print_command, print_report, print_wrapped
from rvlm.core.migrate.report import MigrationReport, ValidationResult
from rvlm.core.plugins.checks import CheckResult

WIDTHS = (20, 37, 80, 131)


@pytest.fixture(autouse=True)
def _not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    output.reset()


def _printed(write: Callable[[], None]) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        write()
    return out.getvalue()


def _both(width: int, monkeypatch: pytest.MonkeyPatch,
          write: Callable[[Any], None]) -> tuple[str, str]:
    """What ``write(console)`` prints through rich's console and through the plain one, both
    on a stdout that is not a terminal, ``COLUMNS`` = ``width``."""
    monkeypatch.setenv("COLUMNS", str(width))
    rich_text = _printed(lambda: write(output.console(data=True)))

    def plain() -> None:
        console = output.report_console(data=True)
        assert isinstance(console, PlainConsole)
        write(console)

    return rich_text, _printed(plain)


def _reports() -> Iterator[MigrationReport]:
    long_word = "x" * 70
    checks = [CheckResult(name="schema_match", passed=True),
              CheckResult(name="doc_count_match", passed=True,
                          details="indexed 2,000,000 + failures 0 = 2,000,000, source had "
                                  "2,000,000"),
              CheckResult(name="query:@tag:{a}", passed=False,
                          details="expected 12 results, got [bold]11[/bold]"),
              CheckResult(name=f"add_field:{long_word}", passed=True,
                          details="no sampled document holds a value")]
    validation = ValidationResult(checks=checks, errors=["documents: 3 differ", "other: bad"],
                                  quality={"vec": {"k": 10, "recall_at_k": 0.99871, "p5": 0.9,
                                                   "lost_first_neighbour": 2, "queries": 100,
                                                   "min_recall": 0.95, "passed": False}})
    yield MigrationReport(source_index="docs", target_index="docs", result="succeeded",
                          documents=50_000, documents_rewritten=50_000,
                          bytes_rewritten=25_600_000, batches=100,
                          validation=ValidationResult(checks=checks[:2]),
                          backup_dir="/tmp/backups/a rather long directory name/run-1",
                          downtime_duration_seconds=1.25)
    yield MigrationReport(source_index="idx[1]", target_index="idx\\[2]", result="failed",
                          documents=10, batches=1, validation=validation,
                          warnings=["dropping 'docs' removes every alias that points at it, "
                                    "and the server cannot list them: any other alias of "
                                    f"'docs' is lost; name each with --keep-alias {long_word}",
                                    "a [red]bracketed[/red] \\ backslash at the end\\"],
                          error="the target index did not finish indexing within 600 s "
                                "(indexed 41% of 50,000 documents)",
                          manual_actions=["resume: re-run the same command",
                                          "check the server's memory (used_memory)"],
                          backup_dir="bk", resumed=True, resumed_from="transformed")
    yield MigrationReport(mode="rollback", source_index="docs", target_index="docs_v2",
                          result="succeeded", restored_records=12_345, batches=25,
                          warnings=["the source index was never dropped; nothing to restore"],
                          validation=ValidationResult(checks=checks))
    yield MigrationReport(mode="online", source_index="docs", target_index="docs_b",
                          result="succeeded", documents=3, documents_rewritten=3,
                          online={"target_prefix": "docs_b:", "changes_carried_over": 17},
                          forward_lag_ms={"count": 5, "p50": 1.5, "p99": 9.0, "max": 12.0},
                          rolled_back=True, validation=validation)
    yield MigrationReport(source_index="índice", target_index="índice", result="succeeded",
                          warnings=["tab\there, and a wide 漢字 word in the text"])


@pytest.mark.parametrize("width", WIDTHS)
def test_plain_report_is_rich_report(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every report (successful, failed with a resume and an undo command, rollback, online,
    one with text the plain console hands to rich) reads the same, line for line."""
    for report in _reports():
        def write(console: Any, report: MigrationReport = report) -> None:
            print_report(report, console=console,
                         resume=f"rvlm apply --plan plan.yaml --backup-dir {'d' * 90}",
                         undo="rvlm rollback --backup-dir bk --url redis://localhost:6379/0")

        rich_text, plain_text = _both(width, monkeypatch, write)
        assert plain_text == rich_text, report
        assert plain_text.count("\n") >= 4


def _markup_samples(seed: int, count: int) -> Iterator[str]:
    """Random markup: words, spaces, tags (well and badly nested), escapes, backslashes, a few
    characters the plain console leaves to rich (tab, control code, non-ASCII, wide)."""
    rng = random.Random(seed)
    pieces = ["word", "a", "longerwordthanmostlinesallowhere" * 2, " ", "  ", "[bold]",
              "[/bold]", "[red]", "[/red]", "[/]", "[bold red]", "[/red bold]", "\\[bold]",
              "\\\\[red]", "\\", "[", "]", "[1, 2]", "[link=https://x.y/z]", "[@click]",
              "=", "-", ",", ".", "x" * 25]
    rare = ["\t", "\x07", "é", "漢", "\n"]
    for _ in range(count):
        parts = rng.choices(pieces, k=rng.randint(0, 30))
        if rng.random() < 0.1:
            parts.insert(rng.randint(0, len(parts)), rng.choice(rare))
        yield "".join(parts)


def _printed_or_error(write: Callable[[], None]) -> str:
    try:
        return _printed(write)
    except MarkupError as exc:
        return f"MarkupError: {exc}"


@pytest.mark.parametrize("width", WIDTHS)
def test_plain_print_and_wrap_match_rich_on_random_markup(
        width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``print`` (wrapped and soft-wrapped, markup on and off), the hanging-indent wrap and a
    command line: the same output as rich for 600 random markup strings, including rich's
    refusal (MarkupError) of a closing tag that closes nothing."""
    monkeypatch.setenv("COLUMNS", str(width))
    for n, text in enumerate(_markup_samples(width, 600)):
        soft, markup = n % 3 == 0, n % 5 != 0
        head = ["", "  ", "  [yellow]warning:[/yellow] ", "    [bold red]FAIL[/bold red] "][n % 4]
        writes: list[Callable[[Any], None]] = [
            lambda c, t=text, s=soft, m=markup: c.print(t, soft_wrap=s, markup=m),
            lambda c, h=head, t=text: print_wrapped(c, h, t),
            lambda c, t=text: print_command(c, t)]
        for write in writes:
            def via_rich(write: Callable[[Any], None] = write) -> None:
                write(output.console(data=True))

            def via_plain(write: Callable[[Any], None] = write) -> None:
                console = output.report_console(data=True)
                assert isinstance(console, PlainConsole)
                write(console)

            assert _printed_or_error(via_plain) == _printed_or_error(via_rich), repr(text)


def test_escape_is_rich_escape() -> None:
    for text in _markup_samples(7, 2000):
        assert escape(text) == rich_escape(text), repr(text)


def test_width_is_rich_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """``COLUMNS`` when it is a number; otherwise what rich finds (a terminal's, or 80)."""
    monkeypatch.setenv("COLUMNS", "57")
    assert rich_width() == 57 == Console(file=io.StringIO()).width
    monkeypatch.setenv("COLUMNS", "wide")
    assert rich_width() == Console(file=io.StringIO()).width
    monkeypatch.delenv("COLUMNS")
    assert rich_width() == Console(file=io.StringIO()).width


@pytest.mark.parametrize("env", [{"FORCE_COLOR": "1"}, {"TTY_COMPATIBLE": "1"}])
def test_colour_forced_keeps_rich(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Where rich would colour a pipe (``--color`` sets FORCE_COLOR), the report stays rich's."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with redirect_stdout(io.StringIO()):
        assert isinstance(output.report_console(), Console)


def test_quiet_prints_nothing_but_data(monkeypatch: pytest.MonkeyPatch) -> None:
    output.set_verbosity(output.QUIET)
    report = next(_reports())
    assert _printed(lambda: print_report(report, console=output.report_console())) == ""
    assert "succeeded" in _printed(
        lambda: print_report(report, console=output.report_console(data=True)))
