"""Line-based prompts: each explains itself in one line, shows the current value, validates
the answer and asks again on a bad one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rvlm.cli.wizard.staging import StagingError


class WizardAbort(Exception):
    """The user left (quit, end of input or Ctrl-C)."""


class Prompter:
    """Line-based prompts: explain in one line, show the current value, re-ask on bad input."""

    def __init__(self, read: Callable[[str], str] = input,
                 write: Callable[[str], None] = print) -> None:
        self._read = read
        self.say = write

    def raw(self, prompt: str) -> str:
        try:
            return self._read(prompt)
        except EOFError:
            raise WizardAbort("input ended") from None

    def ask(self, label: str, help_line: str, *, current: str | None = None,
            parse: Callable[[str], Any] | None = None, allow_empty: bool = False) -> Any:
        """Ask until ``parse`` accepts the answer. Empty: ``current`` if shown, else re-ask
        (or return None when ``allow_empty``)."""
        self.say(f"  {help_line}")
        return self._answer(label, current, parse, allow_empty=allow_empty, parse_current=True)

    def _answer(self, label: str, current: str | None, parse: Callable[[str], Any] | None, *,
                allow_empty: bool, parse_current: bool) -> Any:
        """Read answers until ``parse`` accepts one (each refusal said in one line). Empty:
        ``current`` if shown (through ``parse`` when ``parse_current``), else None when
        ``allow_empty``, else asked again."""
        shown = f" [{current}]" if current is not None else ""
        while True:
            text = self.raw(f"{label}{shown}: ").strip()
            if not text:
                if current is None:
                    if allow_empty:
                        return None
                    self.say("  ! an answer is required")
                    continue
                if not parse_current:
                    return current
                text = current
            if parse is None:
                return text
            try:
                return parse(text)
            except (ValueError, StagingError) as exc:
                self.say(f"  ! {exc}")

    def choose(self, label: str, help_line: str, choices: Sequence[str], *,
               current: str | None = None, allow_empty: bool = False,
               listed: bool = False) -> str | None:
        """Pick one of ``choices`` by number or name (case-insensitive)."""
        listing = ", ".join(f"{i}) {c}" for i, c in enumerate(choices, 1))

        def parse(text: str) -> str:
            if text.isdigit() and 1 <= int(text) <= len(choices):
                return choices[int(text) - 1]
            for c in choices:
                if c.lower() == text.lower():
                    return c
            raise ValueError(f"{text!r} is not one of: {', '.join(choices)}")

        self.say(f"  {help_line}")
        if not listed:
            self.say(f"  choices: {listing}")
        answer: str | None = self._answer(label, current, parse, allow_empty=allow_empty,
                                          parse_current=False)
        return answer

    def confirm(self, question: str, help_line: str, *, default: bool | None = None) -> bool:
        """A yes/no question; re-asks on anything but y/yes/n/no."""
        current = None if default is None else ("y" if default else "n")
        return bool(self.ask(question + " (y/n)", help_line, current=current, parse=parse_bool))


def parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("y", "yes", "true", "1", "on"):
        return True
    if t in ("n", "no", "false", "0", "off"):
        return False
    raise ValueError(f"{text!r}: answer y or n")


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if v <= 0:
        raise ValueError("must be greater than 0")
    return v


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not v > 0:
        raise ValueError("must be greater than 0")
    return v


def attr_kind(cls: type, name: str) -> str:
    """'bool', 'int', 'float' or 'str' from the attrs annotation; 'opt-' prefix when Optional."""
    import attrs

    a = attrs.fields_dict(cls)[name]
    t = str(a.type)
    base = "bool" if "bool" in t else "int" if "int" in t else "float" if "float" in t else "str"
    return ("opt-" if "None" in t else "") + base
