"""What a migration changes, and what a plugin says about each change.

A :class:`Change` is one difference between the source and the target schema (or one
plugin-owned patch section), typed by a change type that exactly one plugin owns. The owning
plugin answers ``classify_change`` with a :class:`Classification`: supported or blocked (with
reasons), warnings, and the :class:`~rvlm.core.plugins.documents.DocumentOperation` list that
describes the document work the executor must do.
"""

from __future__ import annotations

from typing import Any

import attrs

from rvlm.core.convert import items, strings
from rvlm.core.plugins.documents import DocumentOperation


@attrs.frozen(kw_only=True)
class ChangeType:
    """A change type a plugin owns (declared through the ``rvlm_change_types`` hook).

    ``patch_section`` names a key under ``changes:`` in a schema patch that this plugin reads
    (for third-party changes; the built-in sections are handled by the core).
    """

    name: str
    description: str
    patch_section: str | None = None


@attrs.frozen(kw_only=True)
class Change:
    """One change, in YAML-safe values.

    ``field`` is the field's name in the source schema (None for index-level changes and for
    added fields), ``new_field`` its name in the target. ``details`` holds the type's own
    values: the before/after attrs, the patch section for plugin sections, ...
    """

    type: str
    field: str | None = None
    new_field: str | None = None
    details: dict[str, Any] = attrs.field(factory=dict)

    @property
    def label(self) -> str:
        """A short human name: ``rename_field title -> headline``."""
        if self.field and self.new_field and self.field != self.new_field:
            return f"{self.type} {self.field} -> {self.new_field}"
        name = self.field or self.new_field
        return f"{self.type} {name}" if name else self.type


@attrs.frozen(kw_only=True)
class Classification:
    """A plugin's verdict on one change."""

    supported: bool = True
    blocked_reasons: tuple[str, ...] = attrs.field(default=(), converter=strings)
    warnings: tuple[str, ...] = attrs.field(default=(), converter=strings)
    operations: tuple[DocumentOperation, ...] = attrs.field(default=(), converter=items)
    lossy: bool = False
    summary: str = ""
    details: dict[str, Any] = attrs.field(factory=dict)

    @classmethod
    def blocked(cls, *reasons: str) -> Classification:
        return cls(supported=False, blocked_reasons=reasons)
