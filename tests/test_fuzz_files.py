"""Fuzzed patch and plan files against a real server (issue #12).

Whatever a patch or plan file holds, ``rvlm plan`` and ``rvlm apply`` end in one of:

* exit 0 (``plan``: a plan was written; ``apply``: the migration succeeded and validates);
* exit 1 from ``plan`` only: a blocked plan, written with its reasons;
* exit 2 with exactly one line on stderr, and nothing on the server changed.

``apply`` never exits 1 on a fuzzed file: a migration that drops the index and then fails
(FT.CREATE refusing the target, a bad value found mid-transform) is a failure that a check
before the drop must catch. The examples run on a server of their own, so one that crashes
the server (HNSW ``M 1`` did) fails here without taking the rest of the suite down.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rvlm.cli.main import app
from rvlm.embedded.server import EmbeddedServer, free_port

runner = CliRunner()
FIELDS = ["title", "tag", "price", "emb", "flat", "nope", "new", "Title", ""]
N = 12


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[str]:
    if (url := _external_url()) is not None:
        yield url
        return
    work = Path(tempfile.mkdtemp(prefix="rvlm-fuzz-"))
    server = EmbeddedServer(port=free_port(), directory=work)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def _external_url() -> str | None:
    return os.environ.get("REDIS_URL")


def _reset(client: redis.Redis) -> None:
    """The same small index and documents before every example."""
    client.flushall()
    for name in client.execute_command("FT._LIST") or []:
        client.execute_command("FT.DROPINDEX", name)
    for alias in ("live",):
        with contextlib.suppress(redis.ResponseError):
            client.execute_command("FT.ALIASDEL", alias)
    client.execute_command(
        "FT.CREATE", "idx", "ON", "HASH", "PREFIX", "1", "doc:", "SCHEMA",
        "title", "TEXT", "SORTABLE", "tag", "TAG", "price", "NUMERIC",
        "emb", "VECTOR", "HNSW", "8", "TYPE", "FLOAT32", "DIM", "4", "DISTANCE_METRIC", "COSINE",
        "M", "8",
        "flat", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32", "DIM", "4", "DISTANCE_METRIC", "L2")
    client.execute_command("FT.ALIASADD", "live", "idx")
    rng = np.random.default_rng(7)
    pipe = client.pipeline(transaction=False)
    for i in range(N):
        pipe.hset(f"doc:{i}", mapping={
            "title": f"hello {i}", "tag": "a,b" if i % 2 else "c", "price": i * 1.5,
            "emb": rng.normal(size=4).astype(np.float32).tobytes(),
            "flat": (rng.normal(size=4) * (1e6 if i == 5 else 1)).astype(np.float32).tobytes()})
    pipe.execute()
    for _ in range(200):
        info = client.execute_command("FT.INFO", "idx")
        flat = info if isinstance(info, list) else [x for kv in info.items() for x in kv]
        d = dict(zip(flat[::2], flat[1::2], strict=True))
        if int(d.get(b"indexing", d.get("indexing", 0))) == 0:
            break


def _state(client: redis.Redis) -> Any:
    """What a user could see changed: indexes with their definitions, aliases, every key."""
    indexes = sorted(client.execute_command("FT._LIST") or [])
    infos = {}
    for name in indexes:
        info = client.execute_command("FT.INFO", name)
        flat = info if isinstance(info, list) else [x for kv in info.items() for x in kv]
        d = dict(zip(flat[::2], flat[1::2], strict=True))
        infos[name] = (repr(d.get(b"index_definition")), repr(d.get(b"attributes")))
    alias = None
    with contextlib.suppress(redis.ResponseError):
        info = client.execute_command("FT.INFO", "live")
        flat = info if isinstance(info, list) else [x for kv in info.items() for x in kv]
        alias = dict(zip(flat[::2], flat[1::2], strict=True)).get(b"index_name")
    keys = sorted(k for k in client.scan_iter(count=1000) if not k.startswith(b"rvlm:"))
    docs = {k: (client.type(k), client.hgetall(k) if client.type(k) == b"hash" else None)
            for k in keys}
    return indexes, infos, alias, docs


# ---------------------------------------------------------------------------- strategies

NUMBERS = (st.integers(-3, 5) | st.integers(-(2**40), 2**40)
           | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([16.9, 8.9, 0.5]))
TEXTS = st.sampled_from([
    "hnsw", "flat", "svs-vamana", "float16", "bfloat16", "float64", "int8", "l2", "ip",
    "cosine", "doc:", "new:", "idx", "idx2", "live", "@price:[0 10]", "@price >>>> (",
    "@price > 3", ",", ";", "english", "klingon", "$.x", "", " ", "\x00", "é", "dm:en",
    "LVQ8", "true", "16",
]) | st.text(max_size=6)
SCALARS = st.none() | st.booleans() | NUMBERS | TEXTS
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(TEXTS, inner, max_size=3), max_leaves=6)
ATTR_NAMES = ["dims", "algorithm", "datatype", "distance_metric", "m", "ef_construction",
              "ef_runtime", "epsilon", "block_size", "initial_cap", "sortable", "no_stem",
              "weight", "separator", "case_sensitive", "unf", "no_index", "index_missing",
              "index_empty", "phonetic_matcher", "withsuffixtrie", "compression", "reduce",
              "training_threshold", "graph_max_degree", "bogus"]
SANE = {
    "dims": st.sampled_from([4, 4, 8, 8.9, True]),
    "algorithm": st.sampled_from(["flat", "hnsw", "svs-vamana", "FLAT", "annoy"]),
    "datatype": st.sampled_from(["float16", "bfloat16", "float32", "float64", "int8"]),
    "distance_metric": st.sampled_from(["l2", "ip", "cosine", "hamming"]),
    "m": st.sampled_from([1, 2, 8, 16, 32767, 32768, 99999999999, True, 16.9, "16"]),
    "ef_construction": st.sampled_from([0, 1, 200, 4294967295]),
    "ef_runtime": st.sampled_from([0, 1, 10, 50]),
    "epsilon": st.sampled_from([0.0, 0.01, -1.0, float("nan")]),
    "block_size": st.sampled_from([0, 1, 64, 1024]),
}


def _attr_value(name: str) -> st.SearchStrategy[Any]:
    sane = SANE.get(name)
    return VALUES if sane is None else (sane | sane | sane | VALUES)


ATTRS = st.lists(st.sampled_from(ATTR_NAMES), max_size=3, unique=True).flatmap(
    lambda names: st.fixed_dictionaries({n: _attr_value(n) for n in names}))
NAMES = st.sampled_from(FIELDS) | TEXTS | VALUES
TYPES = st.sampled_from(["text", "tag", "numeric", "geo", "vector", "geoshape", "blob"])


@st.composite
def patches(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 20)) == 0:
        return draw(VALUES)
    changes: dict[str, Any] = {}
    if draw(st.booleans()):
        changes["update_fields"] = draw(st.lists(st.fixed_dictionaries(
            {"name": NAMES}, optional={"attrs": ATTRS, "type": TYPES, "path": TEXTS}),
            max_size=2))
    if draw(st.integers(0, 3)) == 0:
        changes["rename_fields"] = draw(st.lists(st.fixed_dictionaries(
            {"old_name": NAMES, "new_name": NAMES}), max_size=2))
    if draw(st.integers(0, 3)) == 0:
        changes["remove_fields"] = draw(st.lists(NAMES, max_size=2))
    if draw(st.integers(0, 3)) == 0:
        changes["add_fields"] = draw(st.lists(st.fixed_dictionaries(
            {"name": NAMES, "type": TYPES}, optional={"attrs": ATTRS, "path": TEXTS}),
            max_size=2))
    if draw(st.integers(0, 2)) == 0:
        changes["index"] = draw(st.fixed_dictionaries({}, optional={
            "name": st.sampled_from(["idx", "idx2", "live", ""]) | TEXTS,
            "prefix": st.sampled_from(["doc:", "new:", ["doc:", "x:"]]) | VALUES,
            "filter": st.sampled_from(["@price > 3", "@price >>>> (", "@nope == 1"]) | TEXTS,
            "stopwords": st.lists(TEXTS, max_size=3) | VALUES,
            "language": TEXTS, "score": NUMBERS, "nooffsets": st.booleans(),
            "storage_type": st.sampled_from(["json", "hash", "xml"]),
            "key_separator": TEXTS,
        }))
    if draw(st.integers(0, 10)) == 0:
        changes[draw(TEXTS)] = draw(VALUES)
    patch: dict[str, Any] = {"version": draw(st.sampled_from([1, 1, 1, 2, "1"])),
                             "changes": changes}
    if draw(st.integers(0, 10)) == 0:
        patch[draw(TEXTS)] = draw(VALUES)
    return patch


def _dump(value: Any) -> str:
    try:
        return yaml.safe_dump(value, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError:
        return repr(value)


def _one_line_error(result: Any) -> None:
    assert "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert not lines[0].startswith("error: unexpected"), lines[0]


#: ``RVLM_FUZZ_EXAMPLES=2000`` fuzzes longer, with fresh random examples each run; by default
#: the suite runs the same 60 examples every time (derandomized, so CI is repeatable).
_LONG = int(os.environ.get("RVLM_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_LONG or 60, deadline=None, derandomize=not _LONG,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------------------- patches


@FUZZ
@given(patch=patches(), via_alias=st.booleans())
def test_fuzzed_patch(fuzz_server, patch, via_alias):
    client = redis.Redis.from_url(fuzz_server)
    _reset(client)
    before = _state(client)
    work = Path(tempfile.mkdtemp(prefix="rvlm-fuzz-patch-"))
    try:
        path = work / "patch.yaml"
        path.write_text(_dump(patch), encoding="utf-8")
        plan = work / "plan.yaml"
        r = runner.invoke(app, ["plan", "-i", "live" if via_alias else "idx",
                                "--schema-patch", str(path), "--url", fuzz_server, "-o", str(plan)])
        assert r.exit_code in (0, 1, 2), r.output
        event(f"plan exit {r.exit_code}")
        if r.exit_code == 2:
            _one_line_error(r)
            assert not plan.exists()
        assert _state(client) == before  # planning never writes
        if r.exit_code != 0:
            return
        r = runner.invoke(app, ["apply", "--plan", str(plan), "--backup-dir",
                                str(work / "backup"), "--url", fuzz_server, "--yes",
                                "--accept-data-loss", "--index-timeout", "60"])
        assert client.ping()
        event(f"apply exit {r.exit_code}")
        if r.exit_code == 2:
            _one_line_error(r)
            assert _state(client) == before, _dump(patch)
            return
        assert r.exit_code == 0, f"{_dump(patch)}\n{r.output}"
        backup = ["--backup-dir", str(work / "backup")] if (work / "backup").exists() else []
        v = runner.invoke(app, ["validate", "--plan", str(plan), *backup, "--url", fuzz_server])
        assert v.exit_code == 0, v.output
    finally:
        client.close()
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------- plans


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def plan_edits(draw: st.DrawFn, base: Any, text: str) -> str:
    """The plan's text after one edit: of its bytes, or of one node of its YAML tree."""
    kind = draw(st.sampled_from(["tree", "tree", "tree", "truncate", "flip"]))
    if kind == "truncate":
        return text[:draw(st.integers(0, len(text) - 1))]
    if kind == "flip":
        i = draw(st.integers(0, len(text) - 1))
        return text[:i] + draw(st.sampled_from(["x", "1", ":", "-", "\n", "'", " "])) + text[i+1:]
    import copy

    data = copy.deepcopy(base)
    path = draw(st.sampled_from(_paths(data)[1:]))
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
    if action == "delete":
        del parent[last]
    elif action == "add" and isinstance(parent, dict):
        parent[draw(TEXTS)] = draw(VALUES)
    elif action == "add":
        parent.insert(last, draw(VALUES))
    else:
        parent[last] = draw(VALUES)
    return _dump(data)


@pytest.fixture(scope="module")
def base_plan(fuzz_server, tmp_path_factory) -> tuple[Any, str]:
    client = redis.Redis.from_url(fuzz_server)
    _reset(client)
    work = tmp_path_factory.mktemp("base-plan")
    patch = work / "patch.yaml"
    patch.write_text("version: 1\nchanges:\n  rename_fields: [{old_name: title, new_name: h}]\n"
                     "  update_fields: [{name: emb, attrs: {datatype: float16, m: 12}}]\n")
    out = work / "plan.yaml"
    r = runner.invoke(app, ["plan", "-i", "idx", "--schema-patch", str(patch), "--url", fuzz_server,
                            "-o", str(out)])
    assert r.exit_code == 0, r.output
    client.close()
    text = out.read_text()
    return yaml.safe_load(text), text


@FUZZ
@given(data=st.data())
def test_fuzzed_plan(fuzz_server, base_plan, data):
    base, text = base_plan
    edited = data.draw(plan_edits(base, text))
    client = redis.Redis.from_url(fuzz_server)
    _reset(client)
    before = _state(client)
    work = Path(tempfile.mkdtemp(prefix="rvlm-fuzz-plan-"))
    try:
        plan = work / "plan.yaml"
        plan.write_text(edited, encoding="utf-8")
        for command in (["estimate"], ["validate"]):
            r = runner.invoke(app, [*command, "--plan", str(plan), "--url", fuzz_server])
            assert "Traceback" not in r.output and "error: unexpected" not in r.output, r.output
            if r.exit_code == 2:
                _one_line_error(r)
        assert _state(client) == before
        r = runner.invoke(app, ["apply", "--plan", str(plan), "--backup-dir",
                                str(work / "backup"), "--url", fuzz_server, "--yes",
                                "--accept-data-loss"])
        if r.exit_code == 2:
            _one_line_error(r)
            assert _state(client) == before
            return
        # only an edit that changes nothing the plan means (YAML formatting) may apply
        assert yaml.safe_load(edited) == base, edited
        assert r.exit_code == 0, r.output
    finally:
        client.close()
        shutil.rmtree(work, ignore_errors=True)
