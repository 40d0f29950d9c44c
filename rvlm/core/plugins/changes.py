"""What a migration changes, and what a plugin says about each change.

A :class:`Difference` is one fact about how the target schema differs from the source (a field
added, an attribute's value, the prefix, ...), found by the core. Plugins turn differences into
a :class:`Change` each (``detect_changes``: the change lists the differences it ``claims``),
typed by a change type that exactly one plugin owns; a plugin-owned patch section is a change
too. The owning plugin answers ``classify_change`` with a :class:`Classification`: supported or
blocked (with reasons), warnings, and the
:class:`~rvlm.core.plugins.documents.DocumentOperation` list that describes the document work
the executor must do.
"""

from __future__ import annotations

from typing import Any

import attrs

from rvlm.core.convert import items, strings
from rvlm.core.plugins.documents import DocumentOperation

#: The kinds of :class:`Difference` the core reports (see :mod:`rvlm.core.schema.diff`).
DIFFERENCE_KINDS: tuple[str, ...] = (
    "field_removed", "field_renamed", "field_added", "field_type", "field_attr", "field_path",
    "index_name", "index_prefix", "index_option",
)


@attrs.frozen(kw_only=True)
class Difference:
    """One way the target schema differs from the source, before any plugin gave it a type.

    ``kind`` is one of :data:`DIFFERENCE_KINDS`; ``field`` is the field's name in the source
    and ``new_field`` in the target (None where there is none); ``key`` names the attribute
    or index option of a ``field_attr`` or ``index_option``. ``before`` and ``after`` are
    YAML-safe values: the field's mapping for ``field_removed``/``field_added``, the hash
    field or JSON path for ``field_renamed``/``field_path``, the value the index uses (its
    server default when left out) for an attribute or option.
    """

    kind: str
    field: str | None = None
    new_field: str | None = None
    key: str | None = None
    before: Any = None
    after: Any = None

    @property
    def label(self) -> str:
        """One line for people: ``field 'title' path: $.title -> $.meta.title``."""
        name = self.field or self.new_field
        what = {"field_removed": f"field {name!r} removed",
                "field_added": f"field {name!r} added",
                "field_renamed": f"field {self.field!r} renamed to {self.new_field!r}",
                }.get(self.kind)
        if what is not None:
            return what
        subject = f"field {name!r}" if self.kind.startswith("field_") else "index"
        aspect = self.key or self.kind.split("_", 1)[1]
        return f"{subject} {aspect}: {self.before!r} -> {self.after!r}"


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
    ``claims`` are the :class:`Difference` items this change accounts for (set by the
    ``detect_changes`` hook that made it; not written to the plan).
    """

    type: str
    field: str | None = None
    new_field: str | None = None
    details: dict[str, Any] = attrs.field(factory=dict)
    claims: tuple[Difference, ...] = attrs.field(default=(), converter=items, eq=False,
                                                 repr=False)

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
