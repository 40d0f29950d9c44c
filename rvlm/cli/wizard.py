"""``rvlm wizard``: build a schema patch interactively, then (optionally) plan it.

The wizard stages changes in a :class:`Staging` (a pure object: no I/O) that always holds a
valid RedisVL schema patch: after every step the patch is checked with
:func:`rvlm.core.schema.patch.patch_from_dict` and :func:`rvlm.core.schema.patch.merge`
against the live schema, and a step that would make it invalid is refused with one line and
undone. What the wizard writes is therefore exactly what ``rvlm plan --schema-patch`` accepts.

Staged changes combine the way a person means them:

* rename ``a -> b`` then ``b -> c`` is ``a -> c``; renaming back to ``a`` cancels the rename;
* rename ``a -> b`` then remove ``b`` removes ``a``; removing an added field un-adds it;
* a removed (or renamed-away) field's name cannot be reused by a rename or an add;
* an update that sets an attribute back to its live value drops it from the patch.

Every prompt explains itself in one line, shows the current value, validates the answer and
asks again on a bad one. Only the datatypes and algorithms the server supports are offered.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rvlm.cli.common import ClusterOption, KeySampleOption, UrlOption, handle_errors

if TYPE_CHECKING:
    from rvlm.core.redis.capabilities import Capabilities
    from rvlm.core.schema.model import Field, IndexSchema
    from rvlm.core.schema.patch import SchemaPatch

# --------------------------------------------------------------------------- attribute help

#: One line per attribute, shown when the wizard asks for its value.
ATTR_HELP: dict[str, str] = {
    "weight": "relevance weight of this text field in full-text scoring (a number > 0)",
    "no_stem": "index words as written, without stemming (y/n)",
    "withsuffixtrie": "keep a suffix trie for fast *suffix and *contains* queries (y/n)",
    "phonetic_matcher": "phonetic matching: dm:en, dm:fr, dm:pt or dm:es ('none' to turn off)",
    "sortable": "keep the value in a sort key so SORTBY on it is fast (y/n)",
    "unf": "sort on the raw value, not the normalised (lower-cased) one (y/n)",
    "no_index": "store the value for sorting/returning but do not index it (y/n)",
    "index_missing": "make documents without this field findable with ismissing() (y/n)",
    "index_empty": "make documents with an empty value findable (y/n)",
    "separator": "the character that separates tags in one value ('none' for the default)",
    "case_sensitive": "keep the case of tags instead of lower-casing them (y/n)",
    "coord_system": "coordinates of shapes: spherical (lon/lat) or flat (cartesian)",
    "dims": "number of components of each vector (a whole number > 0)",
    "algorithm": "vector index algorithm: flat (exact), hnsw (graph), svs-vamana (compressed)",
    "datatype": "type of each vector component; changing it rewrites every stored vector",
    "distance_metric": "how vectors are compared: cosine, l2 (euclidean) or ip (inner product)",
    "initial_cap": "initial capacity of the vector index in vectors ('none' for the default)",
    "block_size": "FLAT: vectors per memory block ('none' for the default 1024)",
    "m": "HNSW: edges per node; more is more accurate and uses more memory ('none' for 16)",
    "ef_construction": "HNSW: candidates examined while building ('none' for 200)",
    "ef_runtime": "HNSW: candidates examined per query ('none' for 10)",
    "epsilon": "HNSW/SVS: range query boundary factor ('none' for 0.01)",
    "graph_max_degree": "SVS-VAMANA: maximum edges per node ('none' for the default)",
    "construction_window_size": "SVS-VAMANA: search window while building ('none' for default)",
    "search_window_size": "SVS-VAMANA: search window per query ('none' for the default)",
    "compression": "SVS-VAMANA: LVQ4, LVQ8, LVQ4x4, LVQ4x8, LeanVec4x8, LeanVec8x8 ('none' off)",
    "reduce": "SVS-VAMANA LeanVec: reduced dimensions ('none' for the default)",
    "training_threshold": "SVS-VAMANA: vectors collected before compression training",
}

#: Vector attributes that only mean something for one algorithm.
ALGORITHM_ATTRS: dict[str, tuple[str, ...]] = {
    "flat": ("initial_cap", "block_size"),
    "hnsw": ("initial_cap", "m", "ef_construction", "ef_runtime", "epsilon"),
    "svs-vamana": ("graph_max_degree", "construction_window_size", "search_window_size",
                   "compression", "reduce", "training_threshold", "epsilon"),
}
VECTOR_COMMON = ("dims", "algorithm", "datatype", "distance_metric", "index_missing")
PHONETIC = ("dm:en", "dm:fr", "dm:pt", "dm:es")
COMPRESSION = ("LVQ4", "LVQ8", "LVQ4x4", "LVQ4x8", "LeanVec4x8", "LeanVec8x8")
#: The number of components SVS-VAMANA supports (FLOAT16 and FLOAT32 only).
SVS_DATATYPES = ("float16", "float32")


class WizardAbort(Exception):
    """The user left (quit, end of input or Ctrl-C)."""


class StagingError(ValueError):
    """A staged change that cannot be made; the message is one line for the user."""


# --------------------------------------------------------------------------- staging


class Staging:
    """Changes staged against a live ``source`` schema, always a valid schema patch.

    Fields are addressed by their *current* name (after staged renames). The patch keeps
    source fields by their original name in ``remove_fields``/``update_fields``.
    """

    def __init__(self, source: IndexSchema) -> None:
        self.source = source
        self.renames: dict[str, str] = {}  # original -> current
        self.removed: list[str] = []  # originals
        self.updates: dict[str, dict[str, Any]] = {}  # original -> attrs
        self.adds: list[dict[str, Any]] = []
        self.index: dict[str, Any] = {}
        self.sections: dict[str, Any] = {}
        self._history: list[tuple[str, dict[str, Any]]] = []

    # -- state -----------------------------------------------------------------------
    def _snapshot(self) -> dict[str, Any]:
        return copy.deepcopy({k: getattr(self, k) for k in
                              ("renames", "removed", "updates", "adds", "index", "sections")})

    def _restore(self, snap: dict[str, Any]) -> None:
        for k, v in snap.items():
            setattr(self, k, v)

    def _step(self, label: str, action: Callable[[], None]) -> None:
        """Run ``action``; keep it only if the resulting patch is still valid."""
        snap = self._snapshot()
        try:
            action()
            self.target()
        except StagingError:
            self._restore(snap)
            raise
        except Exception as exc:
            from rvlm.core.errors import RvlmError

            self._restore(snap)
            if isinstance(exc, RvlmError):
                raise StagingError(str(exc).replace("wizard: ", "")) from None
            raise
        self._history.append((label, snap))

    def undo(self) -> str | None:
        """Undo the last staged step; returns its label (None when there is nothing)."""
        if not self._history:
            return None
        label, snap = self._history.pop()
        self._restore(snap)
        return label

    @property
    def history(self) -> list[str]:
        """Labels of the staged steps, oldest first."""
        return [label for label, _ in self._history]

    # -- names -----------------------------------------------------------------------
    def current_names(self) -> list[str]:
        """The target's field names, in order."""
        out = [self.renames.get(f.name, f.name) for f in self.source.fields
               if f.name not in self.removed]
        return out + [str(a["name"]) for a in self.adds]

    def _locate(self, name: str) -> tuple[str, Any]:
        """('source', original name) or ('added', index into adds)."""
        for f in self.source.fields:
            if f.name in self.removed:
                continue
            if self.renames.get(f.name, f.name) == name:
                return "source", f.name
        for i, a in enumerate(self.adds):
            if a["name"] == name:
                return "added", i
        raise StagingError(f"no field named {name!r} (fields: {', '.join(self.current_names())})")

    def field(self, name: str) -> Field:
        """The field ``name`` as it will be in the target."""
        found = self.target().field(name)
        if found is None:
            raise StagingError(f"no field named {name!r}")
        return found

    def check_new_name(self, new: str, original: str | None = None) -> None:
        """Refuse a name that is taken, removed or renamed away (``original`` may reuse its own)."""
        new = new.strip()
        if not new:
            raise StagingError("a field name cannot be empty")
        if any(c.isspace() for c in new):
            raise StagingError(f"{new!r}: a field name cannot contain spaces")
        if new in self.current_names():
            raise StagingError(f"the index already has a field named {new!r}")
        if new in self.removed:
            raise StagingError(f"{new!r} is a field staged for removal; its name cannot be reused "
                               "in the same migration (undo the removal, or update the field)")
        src_names = {f.name for f in self.source.fields}
        if new in src_names and new != original:
            raise StagingError(f"{new!r} is the old name of a renamed field; chained or swapped "
                               "renames need two migrations")

    # -- changes ---------------------------------------------------------------------
    def rename(self, name: str, new: str) -> None:
        """Rename the field currently called ``name`` to ``new``."""
        kind, key = self._locate(name)

        def act() -> None:
            if kind == "source":
                self.check_new_name(new, original=key)
                if new == key:
                    self.renames.pop(key, None)
                else:
                    self.renames[key] = new
            else:
                self.check_new_name(new)
                self.adds[key]["name"] = new
                if self.source.storage_type == "json" and self.adds[key].get("path") == f"$.{name}":
                    self.adds[key]["path"] = f"$.{new}"

        self._step(f"rename {name} -> {new}", act)

    def remove(self, name: str) -> None:
        """Remove the field currently called ``name`` (an added one is simply un-added)."""
        kind, key = self._locate(name)

        def act() -> None:
            if kind == "source":
                self.renames.pop(key, None)
                self.updates.pop(key, None)
                self.removed.append(key)
            else:
                del self.adds[key]

        self._step(f"remove {name}", act)

    def update(self, name: str, values: dict[str, Any]) -> None:
        """Set attributes of the field currently called ``name``."""
        kind, key = self._locate(name)

        def act() -> None:
            if kind == "added":
                merged = {**(self.adds[key].get("attrs") or {}), **values}
                self.adds[key]["attrs"] = {k: v for k, v in merged.items() if v is not None}
                return
            original = self.source.field(key)
            assert original is not None
            staged = {**self.updates.get(key, {}), **values}
            # A value equal to the live one is no change: keep the patch minimal.
            staged = {k: v for k, v in staged.items() if getattr(original.attrs, k, object()) != v}
            if staged:
                self.updates[key] = staged
            else:
                self.updates.pop(key, None)

        label = ", ".join(f"{k}={v}" for k, v in values.items())
        self._step(f"update {name}: {label}", act)

    def add(self, field: dict[str, Any]) -> None:
        """Add a field (a RedisVL field mapping: name, type, optional path, attrs)."""
        name = str(field.get("name", ""))

        def act() -> None:
            self.check_new_name(name)
            self.adds.append(dict(field))

        self._step(f"add {name} ({field.get('type')})", act)

    def rename_index(self, new: str, existing: Sequence[str] = ()) -> None:
        """Rename the index; ``existing`` are the server's index names (refused as targets)."""
        new = new.strip()

        def act() -> None:
            if not new or any(c.isspace() for c in new):
                raise StagingError("an index name must be non-empty and without spaces")
            if new != self.source.name and new in existing:
                raise StagingError(f"an index named {new!r} already exists on the server")
            if new == self.source.name:
                self.index.pop("name", None)
            else:
                self.index["name"] = new

        self._step(f"rename index -> {new}", act)

    def set_prefix(self, prefixes: Sequence[str]) -> None:
        """Change the key prefix(es) of the index."""
        clean = [p for p in (s.strip() for s in prefixes) if p]

        def act() -> None:
            if not clean:
                raise StagingError("give at least one non-empty prefix")
            if len(set(clean)) != len(clean):
                raise StagingError("a prefix is listed twice")
            if tuple(clean) == tuple(self.source.index.prefix):
                self.index.pop("prefix", None)
            else:
                self.index["prefix"] = clean[0] if len(clean) == 1 else clean

        self._step(f"prefix -> {', '.join(clean)}", act)

    # -- output ----------------------------------------------------------------------
    def changes(self) -> dict[str, Any]:
        """The ``changes:`` mapping (only non-empty sections)."""
        out: dict[str, Any] = {}
        if self.adds:
            out["add_fields"] = copy.deepcopy(self.adds)
        if self.removed:
            out["remove_fields"] = list(self.removed)
        if self.renames:
            out["rename_fields"] = [{"old_name": o, "new_name": n} for o, n in self.renames.items()]
        if self.updates:
            out["update_fields"] = [{"name": n, "attrs": dict(a)} for n, a in self.updates.items()]
        if self.index:
            out["index"] = dict(self.index)
        out.update(copy.deepcopy(self.sections))
        return out

    def patch_dict(self) -> dict[str, Any]:
        """The whole schema patch as a mapping (``version: 1``, ``changes:``)."""
        return {"version": 1, "changes": self.changes()}

    def patch(self) -> SchemaPatch:
        """The staged changes as a validated :class:`SchemaPatch`."""
        from rvlm.core.schema.patch import patch_from_dict

        return patch_from_dict(self.patch_dict(), "wizard", tuple(self.sections))

    def target(self) -> IndexSchema:
        """The schema the staged changes lead to (built-in sections only)."""
        from rvlm.core.schema.patch import merge

        return merge(self.source, self.patch())

    def to_yaml(self) -> str:
        from rvlm.core.schema.yaml_format import dump_yaml

        return dump_yaml(self.patch_dict())

    @property
    def empty(self) -> bool:
        return not self.changes()

    @classmethod
    def from_patch(cls, source: IndexSchema, patch: SchemaPatch) -> Staging:
        """Start from an existing patch (``--patch``), normalised to original names."""
        st = cls(source)
        st.removed = list(patch.remove_fields)
        st.renames = dict(patch.renames)
        back = {new: old for old, new in st.renames.items()}
        for u in patch.update_fields:
            if u.path is not None or u.type is not None:
                raise StagingError(f"{patch.source}: update_fields[{u.name}] changes the path or "
                                   "type; the wizard edits attrs only (edit that patch by hand)")
            key = back.get(u.name, u.name)
            st.updates[key] = {**st.updates.get(key, {}), **u.attrs}
        st.adds = [dict(a) for a in patch.add_fields]
        st.index = dict(patch.index)
        st.sections = dict(patch.sections)
        try:
            st.target()
        except Exception as exc:
            raise StagingError(str(exc)) from None
        return st


# --------------------------------------------------------------------------- prompting


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
        shown = f" [{current}]" if current is not None else ""
        while True:
            text = self.raw(f"{label}{shown}: ").strip()
            if not text:
                if current is not None:
                    text = current
                elif allow_empty:
                    return None
                else:
                    self.say("  ! an answer is required")
                    continue
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
        shown = f" [{current}]" if current is not None else ""
        while True:
            text = self.raw(f"{label}{shown}: ").strip()
            if not text:
                if current is not None:
                    return current
                if allow_empty:
                    return None
                self.say("  ! an answer is required")
                continue
            try:
                return parse(text)
            except ValueError as exc:
                self.say(f"  ! {exc}")

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


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if v <= 0:
        raise ValueError("must be greater than 0")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not v > 0:
        raise ValueError("must be greater than 0")
    return v


def _attr_kind(cls: type, name: str) -> str:
    """'bool', 'int', 'float' or 'str' from the attrs annotation; 'opt-' prefix when Optional."""
    import attrs

    a = attrs.fields_dict(cls)[name]
    t = str(a.type)
    base = "bool" if "bool" in t else "int" if "int" in t else "float" if "float" in t else "str"
    return ("opt-" if "None" in t else "") + base


# --------------------------------------------------------------------------- the wizard


MENU: tuple[tuple[str, str], ...] = (
    ("add", "add a new field"),
    ("update", "change attributes of a field"),
    ("remove", "remove a field"),
    ("rename", "rename a field"),
    ("index", "rename the index"),
    ("prefix", "change the key prefix"),
    ("show", "show the schema as it will be"),
    ("preview", "preview the patch and check it against the server"),
    ("undo", "undo the last staged change"),
    ("finish", "write the patch (and the plan if you want)"),
    ("quit", "leave without writing anything"),
)


class Wizard:
    """The interactive session; ``client`` is a bytes redis client."""

    def __init__(self, client: Any, staging: Staging, caps: Capabilities, io: Prompter, *,
                 index_names: Sequence[str], patch_out: Path, plan_out: Path | None,
                 target_schema_out: Path | None = None, key_sample_limit: int = 20) -> None:
        self.client = client
        self.st = staging
        self.caps = caps
        self.io = io
        self.index_names = list(index_names)
        self.patch_out = patch_out
        self.plan_out = plan_out
        self.target_schema_out = target_schema_out
        self.key_sample_limit = key_sample_limit

    # -- display -----------------------------------------------------------------------
    def describe_field(self, f: Field) -> str:
        from rvlm.core.schema.yaml_format import attrs_to_dict

        a = attrs_to_dict(f.attrs)
        opts = " ".join(f"{k}={v}" for k, v in a.items())
        path = f" path={f.path}" if f.path else ""
        return f"{f.name} ({f.type}){path}{'  ' + opts if opts else ''}"

    def show(self, schema: IndexSchema | None = None, title: str = "Schema") -> None:
        s = schema or self.st.target()
        idx = s.index
        self.io.say(f"{title}: index {idx.name} ({idx.storage_type}), prefix "
                    f"{', '.join(repr(p) for p in idx.prefix)}, {len(s.fields)} fields")
        for f in s.fields:
            self.io.say(f"    - {self.describe_field(f)}")

    def preview(self) -> None:
        if self.st.empty:
            self.io.say("No changes staged yet.")
            return
        self.io.say("Patch:")
        for line in self.st.to_yaml().rstrip().splitlines():
            self.io.say(f"    {line}")
        self.show(title="Target")
        try:
            plan = self._make_plan()
        except Exception as exc:
            self.io.say(f"  ! the planner refused this patch: {exc}")
            return
        if plan.supported:
            self.io.say(f"Plan check: supported ({len(plan.changes)} changes, "
                        f"{'rewrites documents' if plan.rewrites_documents else 'index only'}"
                        f"{', lossy' if plan.lossy else ''})")
        else:
            self.io.say("Plan check: BLOCKED")
            for r in plan.blocked_reasons:
                self.io.say(f"    - {r}")

    def _make_plan(self) -> Any:
        from rvlm.api import MigrationPlanner

        return MigrationPlanner(key_sample_limit=self.key_sample_limit).create_plan(
            self.st.source.name, schema_patch=self.st.patch(), redis_client=self.client)

    # -- field choice ------------------------------------------------------------------
    def pick_field(self, verb: str, kinds: Sequence[str] | None = None) -> str | None:
        names = [f.name for f in self.st.target().fields if kinds is None or f.type in kinds]
        if not names:
            self.io.say("  ! no field to " + verb)
            return None
        return self.io.choose(f"field to {verb}", f"which field to {verb} (empty to go back)",
                              names, allow_empty=True)

    # -- actions -----------------------------------------------------------------------
    def do_rename(self) -> None:
        name = self.pick_field("rename")
        if name is None:
            return

        def parse(text: str) -> str:
            kind, key = self.st._locate(name)
            self.st.check_new_name(text, original=key if kind == "source" else None)
            return text

        new = self.io.ask(f"new name for {name}", "the name queries use (@name); empty to go back",
                          current=None, parse=parse, allow_empty=True)
        if new is None:
            return
        self.st.rename(name, new)
        self.io.say(f"  staged: rename {name} -> {new}")

    def do_remove(self) -> None:
        name = self.pick_field("remove")
        if name is None:
            return
        if self.io.confirm(f"remove {name}", "the field leaves the index; documents keep their "
                           "values", default=False):
            self.st.remove(name)
            self.io.say(f"  staged: remove {name}")

    def _value_parser(self, ftype: str, attr: str, cls: type) -> tuple[Callable[[str], Any],
                                                                         Sequence[str] | None]:
        from rvlm.core.schema.model import DISTANCE_METRICS

        choices: Sequence[str] | None = {
            "algorithm": self.caps.algorithms,
            "datatype": self.caps.datatypes,
            "distance_metric": DISTANCE_METRICS,
            "coord_system": ("spherical", "flat"),
        }.get(attr)
        kind = _attr_kind(cls, attr)
        optional = kind.startswith("opt-")
        base = kind.removeprefix("opt-")

        def parse(text: str) -> Any:
            if optional and text.lower() == "none":
                return None
            if attr == "phonetic_matcher":
                if text.lower() not in PHONETIC:
                    raise ValueError(f"{text!r} is not one of: {', '.join(PHONETIC)}, none")
                return text.lower()
            if attr == "compression":
                for c in COMPRESSION:
                    if c.lower() == text.lower():
                        return c
                raise ValueError(f"{text!r} is not one of: {', '.join(COMPRESSION)}, none")
            if attr == "separator":
                if len(text) != 1:
                    raise ValueError("a separator is exactly one character")
                return text
            if base == "bool":
                return parse_bool(text)
            if base == "int":
                return _positive_int(text)
            if base == "float":
                return _positive_float(text)
            return text

        return parse, choices

    def ask_attr(self, field: Field, attr: str) -> Any:
        """Ask for one attribute of ``field`` (current value shown); returns the new value."""
        cls = type(field.attrs)
        value = getattr(field.attrs, attr)
        parse, choices = self._value_parser(field.type, attr, cls)
        help_line = ATTR_HELP.get(attr, attr)
        if choices is not None:
            if attr == "datatype" and field.type == "vector" and \
                    getattr(field.attrs, "algorithm", "") == "svs-vamana":
                choices = [c for c in choices if c in SVS_DATATYPES]
            current = str(value) if value in choices else None
            return self.io.choose(attr, help_line + " (supported by this server)", list(choices),
                                  current=current)
        if isinstance(value, bool):
            shown = "y" if value else "n"
        elif value is None:
            shown = "none"
        else:
            shown = str(value)
        return self.io.ask(attr, help_line, current=shown, parse=parse)

    def attrs_for(self, field: Field) -> list[str]:
        import attrs

        names = [a.name for a in attrs.fields(type(field.attrs))]
        if field.type == "vector":
            algo = getattr(field.attrs, "algorithm", "flat")
            wanted = set(VECTOR_COMMON) | set(ALGORITHM_ATTRS.get(algo, ()))
            names = [n for n in names if n in wanted]
        if self.st.source.storage_type == "json":
            names = [n for n in names if n not in ("unf",)]
        return names

    def do_update(self) -> None:
        name = self.pick_field("update")
        if name is None:
            return
        while True:
            field = self.st.field(name)
            self.io.say(f"  {self.describe_field(field)}")
            attr = self.io.choose("attribute", "which attribute to change (empty when done)",
                                  self.attrs_for(field), allow_empty=True)
            if attr is None:
                return
            value = self.ask_attr(field, attr)
            if value == getattr(field.attrs, attr):
                self.io.say(f"  {attr} unchanged")
                continue
            try:
                self.st.update(name, {attr: value})
            except StagingError as exc:
                self.io.say(f"  ! {exc}")
                continue
            self.io.say(f"  staged: {name}.{attr} = {value}")

    def do_add(self) -> None:
        from rvlm.core.schema.model import DISTANCE_METRICS, FIELD_TYPES

        def parse_name(text: str) -> str:
            self.st.check_new_name(text)
            return text

        name = self.io.ask("new field name", "the name queries use (@name); empty to go back",
                           parse=parse_name, allow_empty=True)
        if name is None:
            return
        types = [t for t in FIELD_TYPES if t != "geoshape" or self.caps.search_version >= 20800]
        ftype = self.io.choose("type", "what the field holds: text (full text), tag (exact "
                               "values), numeric, geo, geoshape, vector", types)
        assert ftype is not None
        field: dict[str, Any] = {"name": name, "type": ftype}
        json_storage = self.st.source.storage_type == "json"
        default_path = f"$.{name}" if json_storage else name
        help_path = ("JSON path of the value in each document" if json_storage else
                     "hash field that holds the value (differs from the name for an AS alias)")

        def parse_path(text: str) -> str:
            if json_storage and not text.startswith("$"):
                raise ValueError("a JSON path starts with $ (for example $.title)")
            return text

        path = self.io.ask("path", help_path, current=default_path, parse=parse_path)
        if path != default_path:
            field["path"] = path
        attrs_: dict[str, Any] = {}
        if ftype == "vector":
            attrs_["dims"] = self.io.ask("dims", ATTR_HELP["dims"], parse=_positive_int)
            attrs_["algorithm"] = self.io.choose("algorithm", ATTR_HELP["algorithm"] +
                                                 " (supported by this server)",
                                                 list(self.caps.algorithms), current="hnsw")
            dts = list(self.caps.datatypes)
            if attrs_["algorithm"] == "svs-vamana":
                dts = [d for d in dts if d in SVS_DATATYPES]
            attrs_["datatype"] = self.io.choose("datatype", "type of each vector component "
                                                "(supported by this server)", dts,
                                                current="float32")
            attrs_["distance_metric"] = self.io.choose("distance_metric",
                                                       ATTR_HELP["distance_metric"],
                                                       list(DISTANCE_METRICS), current="cosine")
        elif ftype in ("text", "tag", "numeric"):
            if self.io.confirm("sortable", ATTR_HELP["sortable"], default=False):
                attrs_["sortable"] = True
            if ftype == "tag" and not json_storage:
                sep = self.io.ask("separator", ATTR_HELP["separator"], current=",",
                                  parse=lambda t: t if len(t) == 1 else _bad_separator())
                if sep != ",":
                    attrs_["separator"] = sep
        field["attrs"] = attrs_
        self.st.add(field)
        self.io.say(f"  staged: add {name} ({ftype}); use 'update' for more attributes")

    def do_index(self) -> None:
        current = self.st.index.get("name", self.st.source.name)

        def parse(text: str) -> str:
            if any(c.isspace() for c in text):
                raise ValueError("an index name cannot contain spaces")
            if text != self.st.source.name and text in self.index_names:
                raise ValueError(f"an index named {text!r} already exists on the server")
            return text

        new = self.io.ask("new index name", "the index name queries use (FT.SEARCH name); "
                          "documents are kept", current=current, parse=parse)
        if new == current:
            self.io.say("  index name unchanged")
            return
        self.st.rename_index(new, self.index_names)
        self.io.say(f"  staged: rename index -> {new}")

    def do_prefix(self) -> None:
        current = self.st.index.get("prefix", list(self.st.source.index.prefix))
        shown = current if isinstance(current, str) else ",".join(current)

        def parse(text: str) -> list[str]:
            parts = [p.strip() for p in text.split(",")]
            if any(not p for p in parts):
                raise ValueError("a prefix cannot be empty")
            if any(c.isspace() for p in parts for c in p):
                raise ValueError("a prefix cannot contain spaces")
            if len(set(parts)) != len(parts):
                raise ValueError("a prefix is listed twice")
            return parts

        new = self.io.ask("key prefix", "keys the index covers start with this (several: "
                          "comma-separated); keys are renamed to match", current=shown,
                          parse=parse)
        if ",".join(new) == shown:
            self.io.say("  prefix unchanged")
            return
        self.st.set_prefix(new)
        self.io.say(f"  staged: prefix -> {', '.join(new)}")

    def do_undo(self) -> None:
        label = self.st.undo()
        self.io.say(f"  undone: {label}" if label else "  nothing to undo")

    # -- finishing ---------------------------------------------------------------------
    def _destination(self, path: Path, what: str) -> Path | None:
        """``path``, or another one, never overwriting without a yes. None: not written."""
        while True:
            if not path.exists():
                return path
            if path.is_dir():
                self.io.say(f"  ! {path} is a directory")
            elif self.io.confirm(f"{path} exists. Overwrite it", f"the {what} file already "
                                 "exists; n lets you choose another path", default=False):
                return path
            answer = self.io.ask(f"{what} path", f"where to write the {what} (empty to skip "
                                 "writing it)", allow_empty=True)
            if answer is None:
                return None
            path = Path(answer)

    def _write(self, path: Path, text: str) -> bool:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            self.io.say(f"  ! cannot write {path}: {exc.strerror or exc}")
            return False
        return True

    def finish(self) -> bool:
        """Write the patch (and the plan). True when the session is over."""
        if self.st.empty:
            self.io.say("  ! no changes staged; stage a change first, or quit")
            return False
        self.io.say("Patch to write:")
        for line in self.st.to_yaml().rstrip().splitlines():
            self.io.say(f"    {line}")
        dest = self._destination(self.patch_out, "patch")
        if dest is None:
            self.io.say("  patch not written; back to the menu")
            return False
        if not self._write(dest, self.st.to_yaml()):
            return False
        self.io.say(f"Patch written to {dest}")
        if self.target_schema_out is not None:
            from rvlm.core.schema.yaml_format import dump_schema

            schema_dest = self._destination(self.target_schema_out, "target schema")
            if schema_dest is not None and self._write(schema_dest,
                                                       dump_schema(self.st.target())):
                self.io.say(f"Target schema written to {schema_dest}")
        plan_path = self.plan_out
        if plan_path is None and self.io.confirm("make a plan now", "plan reads the server and "
                                                 "writes a reviewable plan (never writes to "
                                                 "Redis)", default=True):
            plan_path = Path(self.io.ask("plan path", "where to write the plan YAML",
                                         current="migration_plan.yaml"))
        if plan_path is None:
            self.io.say(f"Next: rvlm plan --index {self.st.source.name} --schema-patch {dest}")
            return True
        target = self._destination(plan_path, "plan")
        if target is None:
            self.io.say(f"Next: rvlm plan --index {self.st.source.name} --schema-patch {dest}")
            return True
        plan = self._make_plan()
        if not self._write(target, plan.to_yaml()):
            return True
        from rvlm.cli.render import print_plan

        print_plan(plan, target)
        return True

    # -- main loop -----------------------------------------------------------------------
    def run(self) -> None:
        self.show(self.st.source, title="Live schema")
        actions: dict[str, Callable[[], Any]] = {
            "add": self.do_add, "update": self.do_update, "remove": self.do_remove,
            "rename": self.do_rename, "index": self.do_index, "prefix": self.do_prefix,
            "show": self.show, "preview": self.preview, "undo": self.do_undo,
        }
        while True:
            staged = self.st.history
            self.io.say("")
            self.io.say(f"{len(staged)} change(s) staged" + (": " + "; ".join(staged)
                                                              if staged else ""))
            names = [m for m, _ in MENU]
            listing = "\n".join(f"  {i:>2}) {m:<8} {h}" for i, (m, h) in enumerate(MENU, 1))
            self.io.say(listing)
            choice = self.io.choose("action", "what to do next (number or name)", names,
                                    listed=True)
            if choice == "quit":
                if self.st.empty or self.io.confirm("discard the staged changes and quit",
                                                    "nothing is written", default=False):
                    raise WizardAbort("quit")
                continue
            if choice == "finish":
                if self.finish():
                    return
                continue
            assert choice is not None
            try:
                actions[choice]()
            except StagingError as exc:
                self.io.say(f"  ! {exc}")


def _bad_separator() -> str:
    raise ValueError("a separator is exactly one character")


def pick_index(io: Prompter, client: Any, names: Sequence[str]) -> str:
    """List the server's indexes (with document counts) and let the user pick one."""
    from rvlm.core.errors import RvlmError
    from rvlm.core.redis.connection import read_index

    if not names:
        raise RvlmError("no search indexes on this server; create one first")
    io.say("Indexes on this server:")
    for i, n in enumerate(names, 1):
        try:
            info = read_index(client, n)
            extra = f"{info.stats.num_docs} docs, {info.schema.storage_type}, " \
                    f"{len(info.schema.fields)} fields"
        except RvlmError:
            extra = "unreadable"
        io.say(f"  {i:>2}) {n}  ({extra})")
    choice = io.choose("index", "the index to migrate (number or name)", list(names))
    assert choice is not None
    return choice


# --------------------------------------------------------------------------- the command


def register(app: typer.Typer) -> None:
    app.command("wizard")(wizard)


def wizard(
    index: Annotated[str | None, typer.Option(
        "--index", "-i", help="Index to migrate (a list to pick from otherwise).")] = None,
    patch: Annotated[Path | None, typer.Option("--patch", "-p", help="Start from this schema "
                                                                     "patch.")] = None,
    plan_out: Annotated[Path | None, typer.Option(
        "--plan-out", "-o", help="Also write the plan here when done.")] = None,
    patch_out: Annotated[Path | None, typer.Option("--patch-out", help="Where to write the patch "
                                                   "(default: --patch, else schema_patch.yaml)."
                                                   )] = None,
    target_schema_out: Annotated[Path | None, typer.Option(
        "--target-schema-out", help="Also write the target schema (the source with the "
                                    "patch applied) here.")] = None,
    key_sample_limit: KeySampleOption = 20,
    url: UrlOption = None,
    cluster: ClusterOption = False,
) -> None:
    """Build a schema patch interactively: pick an index, stage changes, preview, write.

    Nothing is written to Redis; files are never overwritten without asking.
    """
    code = _run(index, patch, plan_out, patch_out, url, target_schema_out, key_sample_limit)
    if code:
        raise typer.Exit(code)


@handle_errors
def _run(index: str | None, patch: Path | None, plan_out: Path | None, patch_out: Path | None,
         url: str | None, target_schema_out: Path | None = None,
         key_sample_limit: int = 20) -> int:
    """The wizard; returns the exit code (1 when the user left without writing)."""
    from rvlm.core.plugins.host import get_host
    from rvlm.core.redis.capabilities import detect
    from rvlm.core.redis.connection import connect, list_indexes, read_index
    from rvlm.core.schema.patch import load_patch

    host = get_host()
    host.check()
    loaded = load_patch(patch, tuple(host.patch_sections())) if patch else None
    client = connect(url)
    caps = detect(client)
    names = list_indexes(client)
    io = Prompter()
    try:
        name = index if index is not None else pick_index(io, client, names)
        source = read_index(client, name).schema
        try:
            staging = Staging.from_patch(source, loaded) if loaded else Staging(source)
        except StagingError as exc:
            from rvlm.core.errors import RvlmError

            raise RvlmError(str(exc)) from None
        if loaded:
            io.say(f"Started from {patch}: {len(staging.changes())} section(s) staged")
        out = patch_out or patch or Path("schema_patch.yaml")
        Wizard(client, staging, caps, io, index_names=names, patch_out=out,
               plan_out=plan_out, target_schema_out=target_schema_out,
               key_sample_limit=key_sample_limit).run()
    except (WizardAbort, KeyboardInterrupt) as exc:
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        typer.echo(f"\nwizard ended ({why}); nothing written", err=True)
        return 1
    finally:
        sys.stdout.flush()
    return 0
