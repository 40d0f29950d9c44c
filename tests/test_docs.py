"""The documentation is tested: every code sample runs, every patch parses, and the generated
pages (CLI and hooks reference) are current.

Fenced blocks in ``docs/*.md``, by info string:

* ``python``: run. The blocks of one page run in order in one namespace, like a session, with
  ``REDIS_URL`` pointing at the test server (the database is cleaned once per page) and the
  working directory in a fresh temporary directory (also on ``sys.path``);
* ``shell``: the whole block runs with ``bash -e`` in the same directory and must exit 0;
* ``<lang> file=PATH``: not run; written to ``PATH`` (for later blocks to use);
* ``python compile``: hook signatures and fragments, which must compile;
* ``yaml patch``: must be a valid schema patch (built-in and installed plugin sections);
* anything whose info string contains ``notest`` is shown, not run.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.S | re.M)


def _load_build() -> Any:
    spec = importlib.util.spec_from_file_location("rvlm_docs_build", DOCS / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fenced(page: Path) -> list[tuple[int, list[str], str]]:
    """(line, info words, code) of every fenced block of a page."""
    text = page.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1).strip().split(), m.group(2))
            for m in FENCE.finditer(text)]


def _runnable(info: list[str]) -> bool:
    if not info or "notest" in info:
        return False
    if any(w.startswith("file=") for w in info):
        return True
    return info[0] in ("python", "shell") and "compile" not in info


def pages_with_samples() -> list[Any]:
    return [pytest.param(page, id=page.name) for page in sorted(DOCS.glob("*.md"))
            if any(_runnable(info) for _line, info, _code in fenced(page))]


def blocks(kind: str, word: str) -> list[Any]:
    """Blocks whose info string starts with ``kind`` and holds ``word``."""
    return [pytest.param(code, id=f"{page.name}:{line}")
            for page in sorted(DOCS.glob("*.md"))
            for line, info, code in fenced(page)
            if info[:1] == [kind] and word in info and "notest" not in info]


@pytest.mark.parametrize("page", pages_with_samples())
def test_page_samples_run(page: Path, redis_client: Any, redis_url: str, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    bindir = str(Path(sys.executable).parent)
    # A page's own pytest run shares this test's scratch server, which holds the page's data.
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(tmp_path), "RVLM_TEST_FLUSH_OK": "1"}
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    for line, info, code in fenced(page):
        if not _runnable(info):
            continue
        where = f"{page.name}:{line}"
        target = next((w[5:] for w in info if w.startswith("file=")), None)
        if target is not None:
            path = tmp_path / target
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(code, encoding="utf-8")
        elif info[0] == "python":
            exec(compile(code, where, "exec"), namespace)
        else:
            result = subprocess.run(["bash", "-e", "-c", code], env=env, capture_output=True,
                                    text=True, timeout=300)
            assert result.returncode == 0, f"{where}\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("code", blocks("python", "compile"))
def test_python_fragment_compiles(code: str) -> None:
    # ``f(a=1, ...)`` is how a fragment elides arguments: compile what it shows.
    compile(code.replace(", ...)", ")"), "<docs fragment>", "exec")


@pytest.mark.parametrize("code", blocks("yaml", "patch"))
def test_patch_sample_parses(code: str) -> None:
    from rvlm.core.plugins.host import get_host
    from rvlm.core.schema.patch import patch_from_dict

    sections = tuple(get_host().patch_sections())
    data = yaml.safe_load(code)
    unknown = set(data.get("changes") or {}) - {"add_fields", "remove_fields", "rename_fields",
                                                  "update_fields", "index", *sections}
    if unknown:
        pytest.skip(f"needs the plugin that owns {sorted(unknown)} (pip install it)")
    patch_from_dict(data, "sample", sections)


def test_generated_pages_are_current() -> None:
    build = _load_build()
    assert build.stale() == [], "run: python docs/build.py"


def test_build_renders_every_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build = _load_build()
    monkeypatch.setattr(build, "BUILD", tmp_path)
    written = build.render_html()
    assert {p.name for p in written} >= {"index.html", "cli.html", "hooks.html"}
    assert 'href="getting-started.html"' in (tmp_path / "index.html").read_text()


def test_every_page_is_listed_in_the_index() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    missing = [p.name for p in DOCS.glob("*.md") if p.name != "index.md" and p.name not in index]
    assert missing == []
