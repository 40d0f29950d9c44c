"""Typed attrs converters shared by the frozen models (mypy-friendly ``tuple``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def strings(value: Iterable[str]) -> tuple[str, ...]:
    """Any iterable of strings as a tuple."""
    return tuple(value)


def items(value: Iterable[Any]) -> tuple[Any, ...]:
    """Any iterable as a tuple."""
    return tuple(value)
