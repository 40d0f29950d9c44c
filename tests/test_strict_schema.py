"""Strict types and bounds in patches and target schemas, on the real server (issue #12).

A bool is not a number, 16.9 is not 16, a parameter of another algorithm is refused, and
vector parameters stay inside what RediSearch 2.10 accepts *without crashing*: it takes HNSW
``M 1`` and ``M`` above 32767, then segfaults at the next FT.INFO (measured with
``bench/probe_vector_bounds.py``). Each bad value is one line on stderr, exit code 2, no plan
written and the index untouched; the extreme values rvlm allows are applied for real.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rvlm.cli.main import app
from rvlm.core.redis.connection import read_index

runner = CliRunner()


@pytest.fixture
def index(redis_client):
    redis_client.execute_command(
        "FT.CREATE", "docs", "ON", "HASH", "PREFIX", "1", "doc:", "SCHEMA",
        "title", "TEXT", "price", "NUMERIC",
        "emb", "VECTOR", "HNSW", "8", "TYPE", "FLOAT32", "DIM", "4", "DISTANCE_METRIC",
        "COSINE", "M", "8",
        "flat", "VECTOR", "FLAT", "6", "TYPE", "FLOAT32", "DIM", "4", "DISTANCE_METRIC", "L2")
    rng = np.random.default_rng(1)
    for i in range(20):
        redis_client.hset(f"doc:{i}", mapping={
            "title": f"t{i}", "price": i,
            "emb": rng.normal(size=4).astype(np.float32).tobytes(),
            "flat": rng.normal(size=4).astype(np.float32).tobytes()})
    return "docs"


def _patch(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "patch.yaml"
    p.write_text("version: 1\nchanges:\n" + body)
    return p


BAD = [
    ("update_fields: [{name: emb, attrs: {m: true}}]", "attrs.m: must be a whole number, not True"),
    ("update_fields: [{name: emb, attrs: {m: 1}}]", "m must be between 2 and 32767"),
    ("update_fields: [{name: emb, attrs: {m: 32768}}]", "m must be between 2 and 32767"),
    ("update_fields: [{name: emb, attrs: {m: 99999999999}}]", "m must be between 2 and 32767"),
    ("update_fields: [{name: emb, attrs: {m: 16.9}}]", "attrs.m: must be a whole number, not 16.9"),
    ("update_fields: [{name: emb, attrs: {m: '16'}}]", "must be a whole number, not '16'"),
    ("update_fields: [{name: emb, attrs: {dims: 8.9}}]", "attrs.dims: must be a whole number"),
    ("update_fields: [{name: emb, attrs: {ef_runtime: 0}}]", "ef_runtime must be at least 1"),
    ("update_fields: [{name: emb, attrs: {ef_construction: false}}]", "must be a whole number"),
    ("update_fields: [{name: emb, attrs: {epsilon: .nan}}]", "must be a finite number"),
    ("update_fields: [{name: emb, attrs: {epsilon: -0.5}}]", "epsilon must be 0 or more"),
    ("update_fields: [{name: emb, attrs: {block_size: 64}}]",
     "block_size does not apply to the HNSW algorithm (only to FLAT)"),
    ("update_fields: [{name: flat, attrs: {m: 16}}]",
     "m does not apply to the FLAT algorithm (only to HNSW)"),
    ("update_fields: [{name: flat, attrs: {ef_runtime: 20}}]",
     "ef_runtime does not apply to the FLAT algorithm"),
    ("update_fields: [{name: flat, attrs: {block_size: 0}}]", "block_size must be at least 1"),
    ("update_fields: [{name: flat, attrs: {algorithm: svs-vamana, reduce: 2}}]",
     "reduce applies only with a LeanVec compression"),
    ("update_fields: [{name: flat, attrs: {algorithm: svs-vamana, compression: zip}}]",
     "compression must be one of"),
    ("add_fields: [{name: v2, type: vector, attrs: {dims: 4, m: 32}}]",
     "m does not apply to the FLAT algorithm"),
    ("add_fields: [{name: v2, type: vector, attrs: {dims: 0}}]", "dims must be at least 1"),
    ("update_fields: [{name: title, attrs: {weight: true}}]", "attrs.weight: must be a number"),
    ("update_fields: [{name: title, attrs: {weight: .inf}}]", "must be a finite number"),
    ("index: {stopwords: [a, no]}", "must be a string, not False"),
    ("index: {prefix: [1]}", "must be a string, not 1"),
]


@pytest.mark.parametrize(("body", "words"), BAD)
def test_bad_value_is_one_line_exit_2_and_nothing_changes(index, redis_client, redis_url,
                                                         tmp_path, body, words):
    before = read_index(redis_client, index).schema
    out = tmp_path / "plan.yaml"
    r = runner.invoke(app, ["plan", "-i", index,
                            "--schema-patch", str(_patch(tmp_path, "  " + body)),
                            "--url", redis_url, "-o", str(out)])
    assert r.exit_code == 2, r.output
    assert r.stdout == "" and not out.exists()
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path}/patch.yaml"), lines
    assert words in lines[0], lines[0]
    assert read_index(redis_client, index).schema == before


def test_algorithm_change_leaves_the_old_parameters_behind(index, redis_url, tmp_path):
    """HNSW with M 8 -> FLAT: ``m`` is not carried over to FLAT (which would refuse it)."""
    out = tmp_path / "plan.yaml"
    r = runner.invoke(app, ["plan", "-i", index, "--schema-patch", str(_patch(
        tmp_path, "  update_fields: [{name: emb, attrs: {algorithm: flat, block_size: 64}}]\n")),
        "--url", redis_url, "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "m 8" not in out.read_text().split("merged_target_schema")[1].split("diff_class")[0]


@pytest.mark.parametrize("m", [2, 32767])
def test_the_extreme_m_values_allowed_apply_for_real(index, redis_client, redis_url, tmp_path,
                                                      m):
    """The bounds rvlm allows are safe: the rebuilt index answers FT.INFO and KNN queries."""
    out = tmp_path / "plan.yaml"
    r = runner.invoke(app, ["plan", "-i", index, "--schema-patch", str(_patch(
        tmp_path, f"  update_fields: [{{name: emb, attrs: {{m: {m}}}}}]\n")),
        "--url", redis_url, "-o", str(out)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["apply", "--plan", str(out), "--backup-dir", str(tmp_path / "b"),
                            "--url", redis_url, "--yes"])
    assert r.exit_code == 0, r.output
    live = read_index(redis_client, index)
    assert live.schema.field("emb").attrs.m == m
    assert live.stats.num_docs == 20
    vec = np.ones(4, dtype=np.float32).tobytes()
    reply = redis_client.execute_command("FT.SEARCH", index, "*=>[KNN 3 @emb $v]", "PARAMS", "2",
                                         "v", vec, "NOCONTENT", "DIALECT", "2")
    total = reply[b"total_results"] if isinstance(reply, dict) else reply[0]
    assert total == 3
