"""The interactive session: the menu, one method per action, and writing the patch (and the
plan)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rvlm.cli.wizard.attributes import (
    ATTR_HELP,
    COMPRESSION,
    PHONETIC,
    SVS_DATATYPES,
    VECTOR_COMMON,
)
from rvlm.cli.wizard.prompting import (
    Prompter,
    WizardAbort,
    attr_kind,
    parse_bool,
    positive_float,
    positive_int,
)
from rvlm.cli.wizard.staging import Staging, StagingError

if TYPE_CHECKING:
    from rvlm.core.redis.capabilities import Capabilities
    from rvlm.core.schema.model import Field, IndexSchema


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
        kind = attr_kind(cls, attr)
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
                return positive_int(text)
            if base == "float":
                return positive_float(text)
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

        from rvlm.core.schema.model import INERT_ATTRS, VECTOR_PARAMS

        inert = INERT_ATTRS.get(field.type, ())
        names = [a.name for a in attrs.fields(type(field.attrs)) if a.name not in inert]
        if field.type == "vector":
            algo = getattr(field.attrs, "algorithm", "flat")
            wanted = set(VECTOR_COMMON) | set(VECTOR_PARAMS.get(algo, ()))
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
            attrs_["dims"] = self.io.ask("dims", ATTR_HELP["dims"], parse=positive_int)
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
