"""What a command loads before it does its work (issue #17: start-up of ``rvlm apply``).

A user-visible contract, checked without timing anything: ``rvlm --version`` needs no Redis
client, YAML, model or plugin; ``rvlm apply`` of a plan that converts no vector reaches its
first connection without numpy, without rich (its output is not a terminal) and without the
modules of the commands it does not run. What a process loaded is read from its
``sys.modules`` when it exits.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rvlm.cli.main import COMMAND_MODULES, COMMANDS, app, commands_of
from rvlm.embedded.server import free_port

runner = CliRunner()

#: The end of a ``python -c`` program that runs the ``rvlm`` command on its arguments.
RUN_RVLM = ("sys.argv = ['rvlm'] + sys.argv[1:]\n"
            "from rvlm.cli.main import main\n"
            "main()\n")

#: Command modules that ``rvlm apply`` has no use for.
OTHER_COMMANDS = ("rvlm.cli.plan", "rvlm.cli.batch", "rvlm.cli.index", "rvlm.cli.server",
                  "rvlm.cli.demo", "rvlm.cli.wizard", "rvlm.cli.plugins", "rvlm.cli.ctl")


def _imported(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``rvlm ARGS`` in a fresh process (stdout and stderr are pipes, not a terminal);
    the modules it had imported when it exited (``sys.modules``: unlike ``-X importtime``
    this also sees modules imported by ``importlib.import_module``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RVLM_DEBUG")}
    dump = tmp_path / "modules.txt"
    code = ("import atexit, sys\n"
            "def dump():\n"
            f"    open({str(dump)!r}, 'w').write('\\n'.join(sorted(sys.modules)))\n"
            "atexit.register(dump)\n" + RUN_RVLM)
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    modules = set(dump.read_text().split())
    assert "rvlm.cli.main" in modules, done.stderr[-2000:]
    return done, modules


def _loaded(modules: set[str], *roots: str) -> list[str]:
    """The modules in ``modules`` that are one of ``roots`` or inside one."""
    return sorted(m for m in modules if any(m == r or m.startswith(r + ".") for r in roots))


def test_command_table_names_what_each_module_registers() -> None:
    """:data:`COMMANDS` (which module a command line needs) is exactly what the modules
    register, so a command can never be missing from the lazy table."""
    for module in COMMAND_MODULES:
        named = {name for name, m in COMMANDS.items() if m == module}
        assert set(commands_of(module)) == named, module


def test_version_loads_no_command_and_no_library(tmp_path: Path) -> None:
    done, modules = _imported(tmp_path, "--version")
    assert done.returncode == 0 and done.stdout.startswith("rvlm ")
    # redis-py not imported (``redis.asyncio`` is only the deferral's placeholder)
    assert [m for m in _loaded(modules, "redis") if m != "redis.asyncio"] == []
    heavy = _loaded(modules, "numpy", "rich", "yaml", "cattrs", "pluggy", "attrs",
                    "importlib.metadata", *OTHER_COMMANDS, "rvlm.cli.apply", "rvlm.hookspecs")
    assert heavy == []
    # of the core only what the CLI's own modules need (the error classes, byte units, the
    # deferral of redis-py's asyncio client)
    assert _loaded(modules, "rvlm.core") == ["rvlm.core", "rvlm.core.errors", "rvlm.core.redis",
                                             "rvlm.core.redis.deferred", "rvlm.core.units"]


@pytest.fixture
def plans(redis_client: Any, redis_url: str, tmp_path: Path) -> dict[str, Path]:
    """Plans made against a live index (rename a field, add a field, float32 -> float16)."""
    index = "startup_idx"
    redis_client.execute_command(
        "FT.CREATE", index, "ON", "HASH", "PREFIX", "1", "startup:", "SCHEMA",
        "title", "TEXT", "tag", "TAG", "vec", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32",
        "DIM", "2", "DISTANCE_METRIC", "L2")
    patches = {
        "rename": "rename_fields:\n    - old_name: title\n      new_name: headline\n",
        "add": "add_fields:\n    - name: extra\n      type: tag\n",
        "quantize": "update_fields:\n    - name: vec\n      attrs:\n        datatype: float16\n",
    }
    out = {}
    try:
        for name, changes in patches.items():
            patch = tmp_path / f"{name}.yaml"
            patch.write_text(f"version: 1\nchanges:\n  {changes}")
            plan = tmp_path / f"{name}-plan.yaml"
            done = runner.invoke(app, [
                "plan", "--index", index, "--schema-patch", str(patch), "--plan-out", str(plan),
                "--url", redis_url])
            assert done.exit_code == 0, done.output
            out[name] = plan
    finally:
        redis_client.execute_command("FT.DROPINDEX", index)
    return out


@pytest.mark.parametrize("change", ["rename", "add", "quantize"])
def test_apply_reaches_its_first_connection_loading_only_what_it_needs(
        plans: dict[str, Path], tmp_path: Path, change: str) -> None:
    """``rvlm apply`` up to its first connection (nothing listens on the port: exit 2, one
    line): no numpy for a plan that converts no vector, no rich into a pipe, no other
    command's module, the plugins' entry points read once."""
    closed = f"redis://127.0.0.1:{free_port()}/0"
    done, modules = _imported(tmp_path, "apply", "--plan", str(plans[change]), "--backup-dir",
                              str(tmp_path / "backup"), "--url", closed, "--yes",
                              "--accept-data-loss")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "cannot reach Redis" in done.stderr
    assert _loaded(modules, *OTHER_COMMANDS) == []
    assert _loaded(modules, "rich") == []
    if change != "quantize":  # converting float32 to float16 is numpy's job
        assert _loaded(modules, "numpy") == []
    # the trace covers the plugins: the host loaded them before the connection
    assert "rvlm.plugins.builtin.rename_field" in modules


def test_apply_does_not_load_redis_asyncio_client(plans: dict[str, Path], tmp_path: Path) -> None:
    """redis-py's ``import redis`` imports its asyncio client; the rvlm command defers it
    (:mod:`rvlm.core.redis.deferred`) to the runs that use it (``apply --async``)."""
    closed = f"redis://127.0.0.1:{free_port()}/0"
    done, modules = _imported(tmp_path, "apply", "--plan", str(plans["rename"]), "--backup-dir",
                              str(tmp_path / "backup"), "--url", closed, "--yes")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "redis" in modules  # it did get as far as the client
    assert _loaded(modules, "redis.asyncio.client", "redis.asyncio.cluster",
                   "redis.asyncio.connection", "redis.asyncio.sentinel") == []


@pytest.mark.parametrize("first", [None, "redis.asyncio.cluster", "redis.asyncio.client",
                                   "redis.asyncio.connection"])
def test_deferred_redis_asyncio_is_redis_asyncio(first: str | None) -> None:
    """Whatever a program touches first (the package's names, or one of its submodules), the
    deferred ``redis.asyncio`` is the real one afterwards."""
    code = f"""
import importlib, sys
from rvlm.core.redis.deferred import defer_redis_asyncio
assert defer_redis_asyncio()
import redis
assert "redis.asyncio.client" not in sys.modules
first = {first!r}
if first:
    importlib.import_module(first)
import redis.asyncio as aioredis
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import RedisCluster as Cluster
assert aioredis.Redis is Redis is redis.asyncio.Redis is sys.modules["redis.asyncio"].Redis
assert RedisCluster is Cluster
assert Redis.__module__ == "redis.asyncio.client"
assert not defer_redis_asyncio()  # redis is imported: nothing to do
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]



def _holder(finalized: Path) -> str:
    """Source of a class ``Holder`` whose finalizer writes ``finalized`` into that file."""
    return ("class Holder:\n"
            "    def __del__(self):\n"
            "        open(" + repr(str(finalized)) + ", 'w').write('finalized')\n")


def _exit_state(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], str, str]:
    """Run ``rvlm ARGS`` through the command's entry point in a fresh process, with an object
    that only a garbage reference cycle holds when the command ends and whose finalizer writes
    a file; return the process, the number of objects frozen when the last ``atexit`` handler
    ran, and what the finalizer wrote (empty if it never ran)."""
    frozen, finalized = tmp_path / "frozen.txt", tmp_path / "finalized.txt"
    code = ("import atexit, gc, sys\n"
            "atexit.register(lambda: open(" + repr(str(frozen)) + ", 'w')"
            ".write(str(gc.get_freeze_count())))\n"
            "gc.disable()  # the cycle below stays until someone collects\n"
            + _holder(finalized) +
            "h = Holder()\n"
            "h.me = h\n"
            "del h\n" + RUN_RVLM)
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120, check=False)
    text = finalized.read_text() if finalized.exists() else ""
    return done, frozen.read_text(), text


@pytest.mark.parametrize(("args", "code"), [(("--version",), 0),
                                             (("apply", "--no-such-option"), 2)])
def test_exit_skips_the_shutdown_collections_and_keeps_finalizers(
        tmp_path: Path, args: tuple[str, ...], code: int) -> None:
    """How the ``rvlm`` command ends (issue #17: 0.2-0.35 s of an apply went to the
    interpreter's shutdown, several full collections over every live object): the objects
    alive when the command is over are frozen (out of the shutdown collections' reach),
    whatever the exit code; what was already garbage was collected first, so its finalizers
    ran as at a normal shutdown."""
    done, frozen, finalized = _exit_state(tmp_path, *args)
    assert done.returncode == code, done.stderr[-2000:]
    assert int(frozen) > 1000
    assert finalized == "finalized"


def test_whole_apply_into_a_pipe_prints_its_report_without_rich(
        redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    """A whole ``rvlm apply`` (plan, apply, report) with stdout and stderr into pipes: the
    report is printed (each check, the backup dir, the undo command) without rich's console
    (its import and console were 0.02-0.04 s of CPU at every exit; the text is the same, see
    tests/test_plain.py), and an add-field plan loads none of the quality gate's machinery
    (about 0.01 s)."""
    index = "startup_whole"
    redis_client.execute_command(
        "FT.CREATE", index, "ON", "HASH", "PREFIX", "1", "startup_whole:", "SCHEMA",
        "title", "TEXT")
    try:
        for i in range(5):
            redis_client.hset(f"startup_whole:{i}", mapping={"title": f"doc {i}"})
        patch = tmp_path / "patch.yaml"
        patch.write_text("version: 1\nchanges:\n  add_fields:\n    - name: extra\n"
                         "      type: tag\n")
        plan = tmp_path / "plan.yaml"
        made = runner.invoke(app, ["plan", "--index", index, "--schema-patch", str(patch),
                                   "--plan-out", str(plan), "--url", redis_url])
        assert made.exit_code == 0, made.output
        done, modules = _imported(tmp_path, "apply", "--plan", str(plan), "--backup-dir",
                                  str(tmp_path / "backup"), "--url", redis_url, "--yes")
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.startswith(f"apply {index}: succeeded\n")
        assert "    ok   doc_count_match: indexed 5 + failures 0 = 5, source had 5\n" in done.stdout
        assert "  roll back with:\n    rvlm rollback --backup-dir " in done.stdout
        # rich's console and text never; only the size formatter human_bytes uses
        # (rich.filesize, a module of plain functions) and the package it sits in
        assert _loaded(modules, "rich") == ["rich", "rich._extension", "rich.filesize"]
        # a plan whose vector answers cannot change, without query checks: the quality
        # gate's terms and its "anything to measure?" only, not its probes and searches
        assert _loaded(modules, "rvlm.core.quality") == [
            "rvlm.core.quality", "rvlm.core.quality.defaults", "rvlm.core.quality.model",
            "rvlm.core.quality.planning"]
    finally:
        redis_client.execute_command("FT.DROPINDEX", index)
        for i in range(5):
            redis_client.delete(f"startup_whole:{i}")


def test_the_run_collects_without_start_up_objects_and_finalizes_its_garbage(
        plans: dict[str, Path], tmp_path: Path) -> None:
    """The collector during ``rvlm apply`` (issue #17: each automatic full collection of a run
    traversed the ~45,000 objects start-up made, 15-50 ms each): when the run makes its first
    connection the collector is on and start-up's objects are frozen (out of every
    collection's reach); a garbage cycle made during the run is still collected at exit, its
    finalizer run. A CliRunner or library caller's collector is left alone (next test)."""
    state, finalized = tmp_path / "state.txt", tmp_path / "finalized.txt"
    code = ("import gc, socket, sys\n" + _holder(finalized) +
            "connect = socket.socket.connect\n"
            "def first_connect(self, *args):\n"
            "    if not hasattr(first_connect, 'seen'):\n"
            "        first_connect.seen = True\n"
            "        open(" + repr(str(state)) + ", 'w').write("
            "f'{gc.isenabled()} {gc.get_freeze_count()}')\n"
            "        h = Holder()\n"
            "        h.me = h\n"
            "    return connect(self, *args)\n"
            "socket.socket.connect = first_connect\n" + RUN_RVLM)
    closed = f"redis://127.0.0.1:{free_port()}/0"
    done = subprocess.run([sys.executable, "-c", code, "apply", "--plan", str(plans["rename"]),
                           "--backup-dir", str(tmp_path / "backup"), "--url", closed, "--yes"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    enabled, frozen = state.read_text().split()
    assert enabled == "True"
    assert int(frozen) > 20000  # start-up's modules, classes and functions
    assert finalized.read_text() == "finalized"


def test_cli_runner_leaves_the_collector_alone(plans: dict[str, Path], tmp_path: Path) -> None:
    import gc

    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    closed = f"redis://127.0.0.1:{free_port()}/0"
    done = runner.invoke(app, ["apply", "--plan", str(plans["rename"]), "--backup-dir",
                               str(tmp_path / "backup"), "--url", closed, "--yes"])
    assert done.exit_code == 2, done.output
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen
