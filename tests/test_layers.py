"""The floor plan holds: layers, no import cycles, no private names across modules.

A pure AST scan of every module under ``rvlm/`` (nothing is imported, so it takes a fraction of
a second). Every ``import``/``from ... import`` counts, at module level and inside functions
(a function-level import is still a dependency, and a cycle through one only waits for the
first call to bite). Imports under ``if TYPE_CHECKING:`` do not count: they never run, they
only name types for annotations.

The rules (the house style, /work/shared/style.md):

* **Layers.** Every module belongs to a layer of :data:`LAYERS` and imports only from its own
  layer or lower ones: ``cli`` -> ``api``/``aio`` (and the public ``rvlm.plugin``, the
  built-in plugins, the embedded server) -> ``core.multi`` (multi-index runs) ->
  ``core.migrate`` (the jobs: plan, apply, rollback, validate) -> ``core.schema``/
  ``core.redis``/``core.storage``/``core.plugins``/``core.quality`` -> ``core.errors``/
  ``core.convert``/``core.vectors``. Nothing in ``rvlm.core`` imports ``rvlm.cli``, ``rvlm.api`` or
  ``rvlm.aio``. ``from rvlm import __version__`` is allowed anywhere (a constant).
* **No cycles** among rvlm modules.
* **No private names across modules**: ``from m import _x`` and ``m._x`` (``m`` an imported rvlm
  module) are refused when ``m`` is another module; make the name public in the module that
  owns it, or move it one layer down.

A failure names the offending import (file, line, what it imports) and what to do.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "rvlm"

#: (module prefix, layer): a module is in the layer of its longest matching prefix (the two
#: packages themselves, ``rvlm`` and ``rvlm.core``, match only exactly). A module may import
#: from its own layer and lower ones.
LAYERS: tuple[tuple[str, int], ...] = (
    ("rvlm.core.errors", 0),
    ("rvlm.core.convert", 0),
    ("rvlm.core.vectors", 0),
    ("rvlm.core.units", 0),
    ("rvlm.core.schema", 1),
    ("rvlm.core.redis", 1),
    ("rvlm.core.storage", 1),
    ("rvlm.core.plugins", 1),
    ("rvlm.core.quality", 1),
    ("rvlm.hookspecs", 1),
    ("rvlm.core.migrate", 2),
    ("rvlm.core.multi", 3),
    ("rvlm.api", 4),
    ("rvlm.aio", 4),
    ("rvlm.plugin", 4),
    ("rvlm.plugins", 4),
    ("rvlm.embedded", 4),
    ("rvlm.cli", 5),
    ("rvlm.testing", 5),
    ("rvlm.__main__", 6),
)
#: the packages' own ``__init__`` modules
PACKAGE_LAYERS = {"rvlm": 4, "rvlm.core": 3}
LAYER_NAMES = {0: "core base", 1: "core parts", 2: "core.migrate", 3: "core.multi",
               4: "public API", 5: "cli/testing", 6: "__main__"}

@attrs.frozen
class Import:
    """One import statement's dependency: ``module`` (file ``path``, ``line``) imports
    ``target`` (an rvlm module), taking ``names`` from it; ``nested`` when inside a function."""

    module: str
    path: str
    line: int
    target: str
    names: tuple[str, ...]
    nested: bool

    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def text(self) -> str:
        names = f" ({', '.join(self.names)})" if self.names else ""
        how = " inside a function" if self.nested else ""
        return f"{self.where()}: {self.module} imports {self.target}{names}{how}"


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _resolve(module: str, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([name] if name else [])])


class _Scanner(ast.NodeVisitor):
    """One pass over a module: its rvlm imports (marked when inside a function; skipped under
    ``if TYPE_CHECKING:``) and its ``name._private`` attribute uses."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.path = str(MODULES[module].relative_to(ROOT))
        self.imports: list[Import] = []
        self.aliases: dict[str, str] = {}  # local name -> rvlm module it is bound to
        self.private_uses: list[tuple[int, str, str]] = []  # line, local name, attribute
        self.depth = 0  # functions we are inside

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:  # only the annotations-only branch is skipped
                self.visit(child)
            return
        self.generic_visit(node)

    def _add(self, line: int, target: str, names: tuple[str, ...]) -> None:
        self.imports.append(Import(self.module, self.path, line, target, names, self.depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _resolve(self.module, node.level, node.module)
        if base != "rvlm" and not base.startswith("rvlm."):
            return
        plain: list[str] = []
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if sub in MODULES:  # from package import module
                self._add(node.lineno, sub, ())
                self.aliases[alias.asname or alias.name] = sub
            else:
                plain.append(alias.name)
        if plain:
            self._add(node.lineno, base, tuple(plain))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name == "rvlm" or alias.name.startswith("rvlm."):
                self._add(node.lineno, alias.name, ())
                if alias.asname:
                    self.aliases[alias.asname] = alias.name

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name) and _private(node.attr):
            self.private_uses.append((node.lineno, node.value.id, node.attr))
        self.generic_visit(node)


def _scan(module: str) -> tuple[list[Import], list[tuple[int, str, str]]]:
    """The module's rvlm imports, and its ``alias._private`` uses of imported rvlm modules
    (line, module, attribute)."""
    path = MODULES[module]
    scanner = _Scanner(module)
    scanner.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    uses = [(line, scanner.aliases[name], attr) for line, name, attr in scanner.private_uses
            if name in scanner.aliases]
    return scanner.imports, uses


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


SCANS = {m: _scan(m) for m in MODULES}


def _all_imports() -> Iterator[Import]:
    for imports, _uses in SCANS.values():
        yield from imports


def layer_of(module: str) -> int | None:
    if module in PACKAGE_LAYERS:
        return PACKAGE_LAYERS[module]
    matches = [(len(prefix), layer) for prefix, layer in LAYERS
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1] if matches else None


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in _all_imports():
        if imp.target in MODULES and imp.target != imp.module:
            graph[imp.module].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return found


def test_every_module_has_a_layer() -> None:
    missing = sorted(m for m in MODULES if layer_of(m) is None)
    assert not missing, (
        f"modules in no layer: {', '.join(missing)}; add their package to LAYERS in "
        "tests/test_layers.py at the layer it belongs to")


def test_no_import_reaches_a_higher_layer() -> None:
    bad = []
    for imp in _all_imports():
        if imp.target == "rvlm" and set(imp.names) <= {"__version__"}:
            continue  # a constant
        mine, theirs = layer_of(imp.module), layer_of(imp.target)
        if mine is None or theirs is None:
            continue  # reported by test_every_module_has_a_layer
        if theirs > mine:
            bad.append(f"{imp.text()}: layer '{LAYER_NAMES[mine]}' may not import layer "
                       f"'{LAYER_NAMES[theirs]}'; move the shared piece down a layer")
    assert not bad, "imports that reach up a layer:\n" + "\n".join(bad)


def test_core_never_imports_cli_or_api() -> None:
    bad = [imp.text() for imp in _all_imports()
           if imp.module.startswith("rvlm.core")
           and any(imp.target == top or imp.target.startswith(top + ".")
                   for top in ("rvlm.cli", "rvlm.api", "rvlm.aio"))]
    assert not bad, "rvlm.core imports a higher layer:\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    cycles = _cycles()
    lines = []
    for cycle in cycles:
        members = set(cycle)
        lines.append("cycle among " + ", ".join(cycle) + ":")
        lines += ["  " + imp.text() for imp in _all_imports()
                  if imp.module in members and imp.target in members
                  and imp.target != imp.module]
    assert not cycles, ("import cycles (break each by moving the shared piece one layer "
                        "down):\n" + "\n".join(lines))


def test_no_private_name_crosses_a_module() -> None:
    bad = []
    for module, (imports, uses) in SCANS.items():
        for imp in imports:
            if imp.target == module:
                continue
            bad += [f"{imp.where()}: {module} imports private {name!r} from {imp.target}"
                    for name in imp.names if _private(name)]
        path = MODULES[module].relative_to(ROOT)
        bad += [f"{path}:{line}: {module} uses private {target}.{attr}"
                for line, target, attr in uses if target != module]
    assert not bad, ("private names used across modules (make them public where they live, "
                     "or move them one layer down):\n" + "\n".join(bad))


def test_the_scan_sees_what_it_checks() -> None:
    """The scanner itself: it finds module- and function-level imports, relative imports,
    ``from package import module`` and private uses, and skips TYPE_CHECKING blocks."""
    imports, _ = SCANS["rvlm.api"]
    targets = {i.target for i in imports}
    assert "rvlm.core.errors" in targets  # module level
    assert "rvlm.core.migrate.executor" in targets  # inside a function
    assert all(i.nested for i in imports if i.target == "rvlm.core.migrate.executor")
    read, _ = SCANS["rvlm.core.redis.docio.read"]
    assert "rvlm.core.redis.wire" in {i.target for i in read}  # from rvlm.core.redis import wire
    assert "rvlm.core.schema.model" not in targets  # only under TYPE_CHECKING
    assert _resolve("rvlm.core.migrate.run", 1, "plan") == "rvlm.core.migrate.plan"
    assert _resolve("rvlm.core.migrate", 2, "redis") == "rvlm.core.redis"
    assert layer_of("rvlm.core.migrate.run") == 2 and layer_of("rvlm.cli.plan") == 5
