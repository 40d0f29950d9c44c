"""``rvlm plan`` and ``rvlm estimate`` as a user runs them: exit codes, one-line errors (no
traceback), nothing written on bad input, the summary, and the estimate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from rvlm.cli.main import app

runner = CliRunner()


@pytest.fixture
def index(redis_client):
    redis_client.execute_command(
        "FT.CREATE", "docs", "ON", "HASH", "PREFIX", "1", "doc:", "SCHEMA",
        "title", "TEXT", "price", "NUMERIC",
        "emb", "VECTOR", "HNSW", "8", "TYPE", "FLOAT32", "DIM", "4", "DISTANCE_METRIC",
        "COSINE", "M", "8")
    rng = np.random.default_rng(1)
    for i in range(20):
        redis_client.hset(f"doc:{i}", mapping={
            "title": f"t{i}", "price": i, "emb": rng.normal(size=4).astype(np.float32).tobytes()})
    return "docs"


def run(*args: str):
    return runner.invoke(app, list(args))


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_plan_writes_the_plan_and_prints_a_summary(index, redis_url, tmp_path):
    patch = write(tmp_path, "p.yaml", """
version: 1
changes:
  rename_fields: [{old_name: title, new_name: headline}]
  update_fields: [{name: emb, attrs: {datatype: float16, m: 16}}]
  remove_fields: [price]
  add_fields: [{name: category, type: tag}]
""")
    out = tmp_path / "plan.yaml"
    r = run("plan", "--index", index, "--schema-patch", str(patch), "--url", redis_url,
            "--plan-out", str(out))
    assert r.exit_code == 0, r.output
    text = r.stdout
    assert "Plan docs" in text and "20 documents" in text
    assert "Schema diff" in text
    assert "> title -> headline" in text and "- price" in text and "+ category" in text
    assert "~ emb" in text and "datatype float32 -> float16" in text and "m 8 -> 16" in text
    assert "None" not in text
    assert "Documents touched: 20 rewritten" in text and "lossy" in text
    assert "Downtime:" in text
    assert "Warnings" in text
    assert f"rvlm apply --plan {out} --backup-dir BACKUP_DIR" in text
    assert "--accept-data-loss" in text
    plan = yaml.safe_load(out.read_text())
    assert plan["diff_classification"]["supported"] is True
    # same inputs, same file
    out2 = tmp_path / "plan2.yaml"
    r = run("plan", "-i", index, "--schema-patch", str(patch), "--url", redis_url, "-o", str(out2))
    assert r.exit_code == 0 and out2.read_text() == out.read_text()


def test_blocked_plan_exits_1_and_still_writes_the_reasons(index, redis_url, tmp_path):
    patch = write(tmp_path, "p.yaml", "version: 1\nchanges:\n  update_fields:\n"
                                      "    - {name: emb, attrs: {dims: 8}}\n")
    out = tmp_path / "plan.yaml"
    r = run("plan", "--index", index, "--schema-patch", str(patch), "--url", redis_url,
            "--plan-out", str(out))
    assert r.exit_code == 1
    assert "BLOCKED" in r.stdout and "re-embed" in r.stdout and "Blocked:" in r.stdout
    assert "rvlm apply" not in r.stdout
    plan = yaml.safe_load(out.read_text())
    assert plan["diff_classification"]["supported"] is False
    assert "dims" in plan["diff_classification"]["blocked_reasons"][0]


def test_allow_shared_keys_is_recorded(index, redis_client, redis_url, tmp_path):
    redis_client.execute_command("FT.CREATE", "other", "ON", "HASH", "PREFIX", "1", "doc:",
                                 "SCHEMA", "title", "TEXT")
    patch = write(tmp_path, "p.yaml", "version: 1\nchanges:\n  update_fields:\n"
                                      "    - {name: emb, attrs: {datatype: float16}}\n")
    out = tmp_path / "plan.yaml"
    r = run("plan", "-i", index, "--schema-patch", str(patch), "--url", redis_url, "-o", str(out))
    assert r.exit_code == 1 and "--allow-shared-keys" in r.stdout
    r = run("plan", "-i", index, "--schema-patch", str(patch), "--url", redis_url, "-o", str(out),
            "--allow-shared-keys")
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(out.read_text())["rvlm"]["overrides"] == {
        "allow_shared_keys": ["other"]}


def test_target_schema_mode(index, redis_url, tmp_path):
    target = write(tmp_path, "t.yaml", """
index: {name: docs, prefix: "doc:", storage_type: hash}
fields:
  - {name: headline, type: text}
  - {name: price, type: numeric}
  - name: emb
    type: vector
    attrs: {dims: 4, algorithm: hnsw, datatype: float32, distance_metric: cosine, m: 8}
""")
    out = tmp_path / "plan.yaml"
    r = run("plan", "-i", index, "--target-schema", str(target), "--url", redis_url,
            "-o", str(out))
    assert r.exit_code == 0, r.output
    flat = " ".join(r.stdout.split())
    assert "rename_fields: [{old_name: title, new_name: headline}]" in flat


BAD_INPUTS = [
    ("malformed.yaml", "version: 1\nchanges: [\n", ["malformed.yaml", "malformed YAML"]),
    ("section.yaml", "version: 1\nchanges:\n  add_field: []\n",
     ["section.yaml", "changes.add_field", "unknown section"]),
    ("key.yaml", "version: 1\nchanges: {}\nextra: 1\n", ["key.yaml", "'extra'"]),
    ("field.yaml", "version: 1\nchanges:\n  remove_fields: [nope]\n",
     ["field.yaml", "changes.remove_fields", "'nope'"]),
    ("type.yaml", "version: 1\nchanges:\n  remove_fields: title\n",
     ["type.yaml", "changes.remove_fields", "must be a list"]),
    ("dims.yaml", "version: 1\nchanges:\n  update_fields: [{name: emb, attrs: {dims: many}}]\n",
     ["dims.yaml", "update_fields", "dims"]),
    ("contra.yaml", "version: 1\nchanges:\n  rename_fields: [{old_name: title, new_name: h}]\n"
                    "  add_fields: [{name: title, type: text}]\n",
     ["contra.yaml", "changes.add_fields", "'title'"]),
    ("two.yaml", "version: 1\nchanges:\n  rename_fields: [{old_name: title, new_name: x}, "
                 "{old_name: price, new_name: x}]\n",
     ["two.yaml", "changes.rename_fields", "both renamed to 'x'"]),
    ("upd.yaml", "version: 1\nchanges:\n  remove_fields: [price]\n"
                 "  update_fields: [{name: price, attrs: {sortable: true}}]\n",
     ["upd.yaml", "changes.update_fields", "'price'"]),
]


@pytest.mark.parametrize("name, text, words", BAD_INPUTS)
def test_bad_patch_is_one_line_exit_2_nothing_written(index, redis_url, tmp_path, name, text,
                                                      words):
    patch = write(tmp_path, name, text)
    out = tmp_path / "plan.yaml"
    r = run("plan", "-i", index, "--schema-patch", str(patch), "--url", redis_url, "-o", str(out))
    assert r.exit_code == 2, r.output
    assert not out.exists()
    assert "Traceback" not in r.output and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize("args, words", [
    (["-i", "nope", "--schema-patch", "{patch}"], ["no index named 'nope'"]),
    (["-i", "docs"], ["--schema-patch or --target-schema"]),
    (["-i", "docs", "--schema-patch", "{patch}", "-t", "{patch}"], ["exactly one"]),
    (["-i", "docs", "--schema-patch", "{missing}"], ["no such file"]),
    (["-i", "docs", "-t", "{badtarget}"], ["badtarget.yaml", "fields[0]", "'nmae'"]),
])
def test_other_bad_input(index, redis_url, tmp_path, args, words):
    patch = write(tmp_path, "ok.yaml", "version: 1\nchanges: {}\n")
    bad_target = write(tmp_path, "badtarget.yaml",
                       "index: {name: docs}\nfields: [{nmae: x, type: text}]\n")
    subst = {"{patch}": str(patch), "{missing}": str(tmp_path / "missing.yaml"),
             "{badtarget}": str(bad_target)}
    out = tmp_path / "plan.yaml"
    r = run("plan", *[subst.get(a, a) for a in args], "--url", redis_url, "-o", str(out))
    assert r.exit_code == 2, r.output
    assert not out.exists() and "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_estimate(index, redis_url, tmp_path, monkeypatch):
    patch = write(tmp_path, "p.yaml", "version: 1\nchanges:\n"
                                      "  update_fields: [{name: emb, attrs: {datatype: float16}}]\n"
                                      "  rename_fields: [{old_name: title, new_name: headline}]\n")
    out = tmp_path / "plan.yaml"
    assert run("plan", "-i", index, "--schema-patch", str(patch), "--url", redis_url, "-o",
               str(out)).exit_code == 0
    r = run("estimate", "--plan", str(out), "--url", redis_url, "--json")
    assert r.exit_code == 0, r.output
    e = json.loads(r.stdout)
    assert e["documents"] == 20 and e["documents_rewritten"] == 20
    assert e["vector_bytes_before"] == 20 * 4 * 4 and e["vector_bytes_after"] == 20 * 4 * 2
    # backup: the original vectors, the renamed values, and a record overhead per document
    assert e["backup_bytes"] > 20 * 16 + 20 * 2
    assert e["bytes_rewritten"] >= 20 * 8
    assert e["index_memory_before_bytes"] > e["index_memory_after_bytes"] > 0
    assert e["memory_before_bytes"] > e["memory_after_bytes"]
    assert e["expected_downtime_seconds"] is not None and e["expected_downtime_seconds"] >= 0
    # without a server the rename's value sizes are unknown, and said so
    monkeypatch.delenv("REDIS_URL", raising=False)
    r = run("estimate", "--plan", str(out))
    assert r.exit_code == 0, r.output
    assert "backup disk needed" in r.stdout and "unknown" in r.stdout
    assert "give --url" in r.stdout


def test_estimate_of_a_bad_plan_file(tmp_path):
    bad = write(tmp_path, "plan.yaml", "version: 1\nsource: {}\n")
    r = run("estimate", "--plan", str(bad))
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "plan.yaml" in r.stderr and len(r.stderr.strip().splitlines()) == 1
