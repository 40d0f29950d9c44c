"""The report's text without rich, where rich would only have wrapped it (issue #17).

Into a pipe or a file rich writes no colour and no cursor movement: what it does to rvlm's
report is parse the markup (``[bold]apply[/bold] docs: [green]succeeded[/green]``) and wrap
long lines at word boundaries to the console's width. Importing rich and building its console
costs more CPU than the rest of the report (0.02-0.04 s of the whole ``rvlm apply``), so
:func:`report_console` returns a :class:`PlainConsole` there: the same markup rules
(:func:`markup_text`, rich's tag pattern and escapes), the same word wrap (:func:`wrap`, rich's
``divide_line`` with every character one cell wide) and the same width (``COLUMNS``, else the
terminal of stdin, stdout or stderr, else 80).

It only writes text it can reproduce exactly: printable ASCII. A line holding anything else (a
tab, a control character, a character rich may count as zero or two cells wide), markup rich
would refuse or give a meaning (a closing tag that closes nothing, ``[@click]``), or an object
that is not a string goes to a rich console made on first use, so the output is rich's in
every case (tests/test_plain.py prints the same reports both ways and compares them).
"""

from __future__ import annotations

import builtins
import itertools
import os
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

#: rich.markup's tag (``[bold]``, ``[/]``, ``[link=...]``), with the backslashes before it.
TAG = re.compile(r"((\\*)\[([a-z#/@][^[]*?)])")
_ESCAPE = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")
_WORD = re.compile(r"\s*\S+\s*")


def escape(text: str) -> str:
    """``text`` as markup that shows it as it is (what ``rich.markup.escape`` returns)."""

    def backslashes(match: re.Match[str]) -> str:
        before, tag = match.groups()
        return f"{before}{before}\\{tag}"

    text = _ESCAPE.sub(backslashes, text)
    if text.endswith("\\") and not text.endswith("\\\\"):
        return text + "\\"
    return text


def markup_text(markup: str) -> str | None:
    """The text rich shows for ``markup``: tags left out, escaped brackets and backslashes
    resolved. None when rich would do more than style it: a closing tag that does not close
    an open one by its exact name (rich normalizes style names, or refuses the markup), or a
    ``[@...]`` handler tag."""
    if "[" not in markup:
        return markup
    parts: list[str] = []
    opened: list[str] = []
    position = 0
    for match in TAG.finditer(markup):
        full, escapes, tag = match.groups()
        start, end = match.span()
        if start > position:
            parts.append(markup[position:start])
        position = end
        if escapes:
            backslashes, escaped = divmod(len(escapes), 2)
            if backslashes:
                parts.append("\\" * backslashes)
            if escaped:  # \[tag] is the text [tag]
                parts.append(full[len(escapes):])
                continue
        name = tag.partition("=")[0]
        if name.startswith("@"):
            return None
        if not name.startswith("/"):
            opened.append(name)
            continue
        closing = name[1:].strip()
        if not closing:
            if not opened:
                return None
            opened.pop()
        elif closing in opened:
            del opened[len(opened) - 1 - opened[::-1].index(closing)]
        else:
            return None
    if position < len(markup):
        parts.append(markup[position:])
    return "".join(p.replace("\\[", "[") for p in parts)


def simple(text: str) -> bool:
    """Whether every character of ``text`` is printable ASCII (one cell wide for rich, no
    control code for it to strip, no tab to expand)."""
    return text.isascii() and text.isprintable()


def wrap(text: str, width: int) -> list[str]:
    """``text`` (:func:`simple`) word-wrapped to ``width`` columns as rich's ``Text.wrap``
    does it (a word longer than the width is folded), trailing spaces removed."""
    breaks: list[int] = []
    offset = 0
    for match in _WORD.finditer(text):
        start = match.start()
        word = match.group()
        length = len(word.rstrip())
        if width - offset >= length:
            offset += len(word)
        elif length > width:  # longer than a line: folded across lines
            chunks = [word[i:i + width] for i in range(0, len(word), width)]
            for n, chunk in enumerate(chunks):
                if start:
                    breaks.append(start)
                if n == len(chunks) - 1:
                    offset = len(chunk)
                else:
                    start += len(chunk)
        elif offset and start:
            breaks.append(start)
            offset = len(word)
    edges = [0, *breaks, len(text)]
    lines = []
    for a, b in itertools.pairwise(edges):
        line = text[a:b]
        if len(line) > width:  # rich crops the spaces beyond the width, then the line
            spaces = len(line) - len(line.rstrip())
            line = line[:len(line) - min(spaces, len(line) - width)][:width]
        lines.append(line.rstrip(" "))
    return lines


def rich_width() -> int:
    """The width rich gives a console on a stream that is not a terminal: ``COLUMNS`` when it
    is a number, else the size of the first of stdin, stdout and stderr that is a terminal,
    else 80."""
    columns = os.environ.get("COLUMNS")
    if columns is not None and columns.isdigit():
        return int(columns)
    width = None
    for fd in (0, 1, 2):
        try:
            width = os.get_terminal_size(fd).columns
        except (AttributeError, ValueError, OSError):
            continue
        break
    return width or 80


def rich_is_plain() -> bool:
    """Whether rich would write stdout's text as it is, unstyled: stdout is not a terminal
    and nothing (``FORCE_COLOR``, ``TTY_COMPATIBLE=1``, Jupyter, the legacy Windows console)
    makes rich treat it as one."""
    if sys.platform == "win32" or "get_ipython" in vars(builtins):
        return False
    compatible = os.environ.get("TTY_COMPATIBLE", "")
    if compatible == "1" or (compatible != "0" and os.environ.get("FORCE_COLOR")):
        return False
    try:
        return not sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


class PlainConsole:
    """What the report asks of a rich console (``print``, ``width``, ``quiet``), written as
    rich would write it into a pipe or a file, each line without trailing spaces; what it
    cannot reproduce goes to ``make_rich()``'s console."""

    def __init__(self, make_rich: Callable[[], Console], *, quiet: bool = False,
                 width: int | None = None) -> None:
        self._make_rich = make_rich
        self._rich: Console | None = None
        self.quiet = quiet
        self.width = rich_width() if width is None else width

    @property
    def rich(self) -> Console:
        """The rich console for what is not plain text (made on first use)."""
        if self._rich is None:
            self._rich = self._make_rich()
        return self._rich

    def print(self, text: Any, *, soft_wrap: bool = False, markup: bool = True) -> None:
        """``console.print(text, soft_wrap=..., markup=...)``."""
        plain = (markup_text(text) if markup else text) if isinstance(text, str) else None
        if plain is None or not simple(plain):
            self.rich.print(text, soft_wrap=soft_wrap, markup=markup)
            return
        self.write_lines([plain] if soft_wrap else wrap(plain, self.width))

    def wrapped_lines(self, head: str, body: str) -> list[str] | None:
        """``head`` then ``body`` (markup), the body wrapped to the width less the head's,
        continuation lines indented under its start (see ``render.print_wrapped``); None
        when rich must do it."""
        first, rest = markup_text(head), markup_text(body)
        if first is None or rest is None or not simple(first) or not simple(rest):
            return None
        indent = len(first)
        return [(first if n == 0 else " " * indent) + line
                for n, line in enumerate(wrap(rest, max(20, self.width - indent)))]

    def write_lines(self, lines: list[str]) -> None:
        if self.quiet:
            return
        sys.stdout.write("".join(line.rstrip(" ") + "\n" for line in lines))
        sys.stdout.flush()


__all__ = ["PlainConsole", "escape", "markup_text", "rich_is_plain", "rich_width", "simple",
           "wrap"]
