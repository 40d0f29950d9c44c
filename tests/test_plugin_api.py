"""Plugin authors import one module, ``rvlm.plugin``; the rest of ``rvlm.core`` may move.

An AST scan (nothing imported): the built-in changes, both example plugins and every Python
block of the plugin tutorial take from rvlm only ``rvlm.plugin`` (and ``rvlm`` itself, the
Python API). And ``rvlm.plugin`` really exports what it lists, ``rvlm.hookimpl`` included.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import rvlm
import rvlm.plugin

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {"rvlm", "rvlm.plugin"}
PLUGIN_FILES = sorted([*ROOT.glob("rvlm/plugins/builtin/*.py"),
                       *ROOT.glob("examples/plugins/*/rvlm_*/*.py")])
FENCE = re.compile(r"^```python([^\n`]*)\n(.*?)^```\s*$", re.S | re.M)


def rvlm_imports(source: str) -> list[str]:
    """Every rvlm module an ``import``/``from ... import`` names (TYPE_CHECKING included)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    return [m for m in found if m == "rvlm" or m.startswith("rvlm.")]


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_plugins_import_only_the_public_module(path: Path) -> None:
    assert set(rvlm_imports(path.read_text(encoding="utf-8"))) <= ALLOWED


def test_the_scan_covers_the_builtins_and_both_examples() -> None:
    names = {p.name for p in PLUGIN_FILES}
    assert {"move_path.py", "quantize.py", "plugin.py", "convert.py"} <= names
    assert any("computed_vector" in str(p) for p in PLUGIN_FILES)
    assert any("hash_to_json" in str(p) for p in PLUGIN_FILES)


def test_the_tutorial_imports_only_the_public_module() -> None:
    text = (ROOT / "docs" / "plugin-tutorial.md").read_text(encoding="utf-8")
    blocks = [code for _info, code in FENCE.findall(text)]
    assert len(blocks) >= 3
    imported = {m for code in blocks for m in rvlm_imports(code)}
    assert "rvlm.plugin" in imported and imported <= ALLOWED


def test_everything_listed_is_exported() -> None:
    for name in rvlm.plugin.__all__:
        assert getattr(rvlm.plugin, name) is not None, name
    assert rvlm.hookimpl is rvlm.plugin.hookimpl
    assert {"hookimpl", "ChangeType", "Change", "Classification", "Difference", "Document",
            "DocumentOperation", "DocumentUpdate", "MISSING", "NO_CHANGE", "OperationCost",
            "PlanContext", "ApplyContext", "CheckResult", "RvlmError",
            "PluginError"} <= set(rvlm.plugin.__all__)
