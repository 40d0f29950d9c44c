"""The documentation is tested: every code sample runs, every patch parses, and the generated
pages (CLI and hooks reference) are current.

A page's samples run **as a reader would run them**: in order, from a clean state, in one
terminal session. Fenced blocks in ``docs/*.md``, by info string:

* ``shell``: run in **one** ``bash -e`` session per page (what a block exports, its ``cd`` and
  its shell variables carry over to the next block, as in a terminal) and must succeed;
* ``python``: run in one namespace per page (like one interpreter session), in the environment
  and working directory the shell session has reached at that point;
* ``<lang> file=PATH``: not run; written to ``PATH`` (for later blocks to use);
* ``python compile``: hook signatures and fragments, which must compile;
* ``yaml patch``: must be a valid schema patch (built-in and installed plugin sections);
* anything whose info string contains ``notest`` is shown, not run.

The clean state: a fresh empty working directory, a fresh ``HOME`` (so ``~/.rvlm`` is empty),
no ``REDIS_URL``, and a virtual environment of the page's own first on ``PATH``
(:func:`page_venv`: it sees rvlm and everything installed with it, and what a page installs
with ``pip`` stays in it). A page that starts a server does it the way it tells the reader to
(``rvlm server start`` then ``export REDIS_URL=$(rvlm server url)``); the test only sets
``RVLM_SERVER_PORT`` to a free port, so two runs never share one, and stops whatever server
the page left running. A reference page that assumes the reader already has a server says so
with the comment ``<!-- docs-test: REDIS_URL -->``: it gets ``REDIS_URL`` pointing at an
empty test server.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.S | re.M)
NEEDS_SERVER = "<!-- docs-test: REDIS_URL -->"
BLOCK_TIMEOUT = 300.0


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


class ShellSession:
    """One ``bash -e`` process for a whole page, fed one block at a time (like a reader's
    terminal). After each block it records its exported environment and working directory,
    which the page's Python blocks then run in."""

    def __init__(self, cwd: Path, env: dict[str, str], state: Path) -> None:
        self.state = state
        state.mkdir()
        self.out = (state / "output.log").open("w+b")
        self.proc = subprocess.Popen(["bash", "--noprofile", "--norc", "-e"], cwd=cwd, env=env,
                                     stdin=subprocess.PIPE, stdout=self.out,
                                     stderr=subprocess.STDOUT)
        self.env, self.cwd, self.count = dict(env), cwd, 0

    def run(self, code: str, where: str) -> None:
        self.count += 1
        script = self.state / f"block-{self.count}.sh"
        script.write_text(code, encoding="utf-8")
        done = self.state / f"done-{self.count}"
        start = os.fstat(self.out.fileno()).st_size
        assert self.proc.stdin is not None
        self.proc.stdin.write(
            f'source "{script}"\nenv -0 > "{self.state}/env"; pwd > "{self.state}/cwd"; '
            f'touch "{done}"\n'.encode())
        self.proc.stdin.flush()
        deadline = time.monotonic() + BLOCK_TIMEOUT
        while not done.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{where}: the block failed (exit {self.proc.poll()}); its "
                            f"output:\n{self.output(start)}", pytrace=False)
            time.sleep(0.05)
        raw = (self.state / "env").read_bytes().split(b"\0")
        self.env = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
        self.cwd = Path((self.state / "cwd").read_text().strip())

    def output(self, start: int = 0) -> str:
        self.out.flush()
        self.out.seek(start)
        text = self.out.read().decode(errors="replace")
        self.out.seek(0, os.SEEK_END)
        return text

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.out.close()


def page_venv(root: Path) -> Path:
    """A virtual environment of the page's own: it sees every package of the test's
    environment (rvlm, its dependencies, pytest), and what the page installs with ``pip``
    stays in it. Its ``bin`` holds ``python``, ``pip`` and ``rvlm``; returns that ``bin``."""
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True,
                   timeout=120)
    python = root / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; "
                           "print(sysconfig.get_paths()['purelib'])"], capture_output=True,
                          text=True, check=True).stdout.strip()
    parents = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    # an "import" line of a .pth runs: addsitedir also reads the parent's .pth files
    # (editable installs)
    (Path(site) / "parent-environment.pth").write_text(
        "".join(f"import site; site.addsitedir({d!r})\n" for d in parents))
    for name, module in (("pip", "pip"), ("rvlm", "rvlm")):
        script = root / "bin" / name
        script.write_text(f'#!/bin/sh\nexec "{python}" -m {module} "$@"\n')
        script.chmod(0o755)
    return root / "bin"


def _stop_servers(home: Path) -> None:
    """Stop every embedded server a page started under its ``HOME`` and left running."""
    from rvlm.embedded.server import EmbeddedServer

    for directory in (home / ".rvlm").glob("server-*"):
        port = directory.name.split("-", 1)[1]
        if port.isdigit():
            EmbeddedServer(port=int(port), directory=directory).stop()


@pytest.mark.parametrize("page", pages_with_samples())
def test_page_samples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          request: pytest.FixtureRequest) -> None:
    from rvlm.embedded.server import free_port

    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    bindir = page_venv(tmp_path / "venv")
    ours = str(Path(sys.executable).parent)
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != ours]
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "RVLM_HOME", "RVLM_TEST_FLUSH_OK", "PYTHONPATH")
           and not k.startswith("PYTEST_")}
    env.update(HOME=str(home), PATH=os.pathsep.join([str(bindir), *path]),
               VIRTUAL_ENV=str(bindir.parent), RVLM_SERVER_PORT=str(free_port()))
    if NEEDS_SERVER in page.read_text(encoding="utf-8"):
        request.getfixturevalue("redis_client")  # an empty database
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
        # the reader's scratch server: the page's own pytest run may flush it
        env["RVLM_TEST_FLUSH_OK"] = "1"
    shell = ShellSession(work, env, tmp_path / "shell")
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    try:
        for line, info, code in fenced(page):
            if not _runnable(info):
                continue
            where = f"{page.name}:{line}"
            target = next((w[5:] for w in info if w.startswith("file=")), None)
            if target is not None:
                path = shell.cwd / target
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(code, encoding="utf-8")
            elif info[0] == "python":
                for key in set(os.environ) - set(shell.env):
                    monkeypatch.delenv(key)
                for key, value in shell.env.items():
                    monkeypatch.setenv(key, value)
                monkeypatch.chdir(shell.cwd)
                monkeypatch.syspath_prepend(str(shell.cwd))
                exec(compile(code, where, "exec"), namespace)
            else:
                shell.run(code, where)
    finally:
        shell.close()
        _stop_servers(home)


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
