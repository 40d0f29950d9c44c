"""``rvlm wizard`` driven in a real terminal (pexpect + pty) against the real server."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pexpect
import pytest
import yaml

from rvlm.cli.wizard import Staging, StagingError

RVLM = shutil.which("rvlm", path=str(Path(sys.executable).parent)) or "rvlm"


def make_index(client: Any) -> None:
    client.execute_command(
        "FT.CREATE", "docs", "ON", "HASH", "PREFIX", "1", "doc:", "SCHEMA", "title", "TEXT",
        "tag", "TAG", "n", "NUMERIC", "embedding", "VECTOR", "HNSW", "6", "TYPE", "FLOAT32",
        "DIM", "4", "DISTANCE_METRIC", "COSINE")
    for i in range(5):
        client.hset(f"doc:{i}", mapping={"title": f"t{i}", "tag": "a", "n": i,
                                         "embedding": b"\0" * 16})
    client.execute_command("FT.CREATE", "other", "ON", "HASH", "PREFIX", "1", "zz:", "SCHEMA",
                           "x", "TEXT")


def spawn(args: list[str], cwd: Path) -> pexpect.spawn:
    child = pexpect.spawn(RVLM, args, cwd=str(cwd), encoding="utf-8", timeout=20,
                          dimensions=(60, 200), env={"PATH": str(Path(sys.executable).parent),
                                                     "TERM": "dumb"})
    return child


def act(child: pexpect.spawn, action: str) -> None:
    child.expect(r"action: ")
    child.sendline(action)


def test_full_session_combines_renames_and_writes_what_plan_accepts(
        redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    make_index(redis_client)
    (tmp_path / "schema_patch.yaml").write_text("old: content\n")
    child = spawn(["wizard", "--url", redis_url], tmp_path)
    # no --index: the indexes are listed; a bad pick is refused and asked again
    child.expect("Indexes on this server")
    child.expect(r"index: ")
    child.sendline("missing")
    child.expect(r"'missing' is not one of: docs, other")
    child.expect(r"index: ")
    child.sendline("docs")
    child.expect("Live schema: index docs")
    act(child, "bogus")
    child.expect(r"'bogus' is not one of")
    # rename title -> headline -> name  ==  title -> name
    act(child, "rename")
    child.expect(r"field to rename: ")
    child.sendline("title")
    child.expect(r"new name for title: ")
    child.sendline("tag")  # taken: refused, asked again
    child.expect("already has a field named 'tag'")
    child.expect(r"new name for title: ")
    child.sendline("headline")
    child.expect("staged: rename title -> headline")
    act(child, "4")
    child.expect(r"field to rename: ")
    child.sendline("headline")
    child.expect(r"new name for headline: ")
    child.sendline("name")
    # remove n; a removed field's name cannot be renamed to
    act(child, "remove")
    child.expect(r"field to remove: ")
    child.sendline("n")
    child.expect(r"remove n \(y/n\) \[n\]: ")
    child.sendline("maybe")
    child.expect("answer y or n")
    child.sendline("y")
    child.expect("staged: remove n")
    act(child, "rename")
    child.expect(r"field to rename: ")
    child.sendline("tag")
    child.expect(r"new name for tag: ")
    child.sendline("n")
    child.expect("staged for removal")
    child.expect(r"new name for tag: ")
    child.sendline("")  # back to the menu
    # update the vector datatype: only the server's datatypes are offered
    act(child, "update")
    child.expect(r"field to update: ")
    child.sendline("embedding")
    child.expect(r"choices: (.*)\r\n")
    child.expect(r"attribute: ")
    child.sendline("datatype")
    child.expect(r"choices: ([^\r\n]*)")
    offered = child.match.group(1)
    assert "float16" in offered and "float32" in offered
    caps_int8 = _server_has_int8(redis_client)
    assert ("int8" in offered) == caps_int8
    child.expect(r"datatype \[float32\]: ")
    child.sendline("float99")
    child.expect("'float99' is not one of")
    child.sendline("float16")
    child.expect("staged: embedding.datatype = float16")
    child.expect(r"attribute: ")
    child.sendline("m")
    child.expect(r"m \[none\]: ")
    child.sendline("-3")
    child.expect("must be greater than 0")
    child.sendline("32")
    child.expect(r"attribute: ")
    child.sendline("")
    # rename the index onto an existing one: refused
    act(child, "index")
    child.expect(r"new index name \[docs\]: ")
    child.sendline("other")
    child.expect("already exists on the server")
    child.sendline("docs_v2")
    act(child, "preview")
    child.expect("Plan check: supported")
    # finish: the patch file exists, so it asks; 'n' lets us choose another path
    act(child, "finish")
    child.expect(r"schema_patch.yaml exists. Overwrite it \(y/n\) \[n\]: ")
    child.sendline("n")
    child.expect(r"patch path: ")
    child.sendline("out/patch.yaml")
    child.expect("Patch written to out/patch.yaml")
    child.expect(r"make a plan now \(y/n\) \[y\]: ")
    child.sendline("y")
    child.expect(r"plan path \[migration_plan.yaml\]: ")
    child.sendline("")
    child.expect("Plan written to migration_plan.yaml")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert (tmp_path / "schema_patch.yaml").read_text() == "old: content\n"
    patch = yaml.safe_load((tmp_path / "out/patch.yaml").read_text())
    assert patch == {"version": 1, "changes": {
        "remove_fields": ["n"],
        "rename_fields": [{"old_name": "title", "new_name": "name"}],
        "update_fields": [{"name": "embedding", "attrs": {"datatype": "float16", "m": 32}}],
        "index": {"name": "docs_v2"},
    }}
    # what it wrote is exactly what `rvlm plan` accepts
    done = subprocess.run([RVLM, "plan", "--url", redis_url, "--index", "docs",
                           "--schema-patch", "out/patch.yaml", "--plan-out", "p2.yaml"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def _server_has_int8(client: Any) -> bool:
    from rvlm.core.redis.capabilities import detect

    return detect(client).int8


def test_rename_then_remove_and_quit_writes_nothing(redis_client: Any, redis_url: str,
                                                    tmp_path: Path) -> None:
    make_index(redis_client)
    child = spawn(["wizard", "--url", redis_url, "--index", "docs"], tmp_path)
    act(child, "rename")
    child.expect(r"field to rename: ")
    child.sendline("2")  # by number: tag
    child.expect(r"new name for tag: ")
    child.sendline("labels")
    act(child, "remove")
    child.expect(r"choices: 1\) title, 2\) labels")
    child.sendline("labels")
    child.expect(r"\(y/n\) \[n\]: ")
    child.sendline("y")
    act(child, "preview")
    child.expect("remove_fields:")
    child.expect("- tag")
    act(child, "undo")
    child.expect("undone: remove labels")
    act(child, "quit")
    child.expect(r"discard the staged changes and quit \(y/n\) \[n\]: ")
    child.sendline("y")
    child.expect("nothing written")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert not list(tmp_path.iterdir())


def test_add_vector_field_validates_and_plan_out(redis_client: Any, redis_url: str,
                                                 tmp_path: Path) -> None:
    make_index(redis_client)
    (tmp_path / "plan.yaml").write_text("keep\n")
    # rvl's --target-schema-out and --key-sample-limit work as they do there
    child = spawn(["wizard", "--url", redis_url, "--index", "docs", "--patch-out", "p.yaml",
                   "--plan-out", "plan.yaml", "--target-schema-out", "target.yaml",
                   "--key-sample-limit", "3"], tmp_path)
    act(child, "add")
    child.expect(r"new field name: ")
    child.sendline("title")
    child.expect("already has a field named 'title'")
    child.sendline("vec2")
    child.expect(r"type: ")
    child.sendline("vector")
    child.expect(r"path \[vec2\]: ")
    child.sendline("")
    child.expect(r"dims: ")
    child.sendline("abc")
    child.expect("'abc' is not a whole number")
    child.sendline("8")
    child.expect(r"choices: ([^\r\n]*)")
    assert "svs-vamana" not in child.match.group(1) or _server_has_svs(redis_client)
    child.expect(r"algorithm \[hnsw\]: ")
    child.sendline("")
    child.expect(r"datatype \[float32\]: ")
    child.sendline("")
    child.expect(r"distance_metric \[cosine\]: ")
    child.sendline("l2")
    child.expect("staged: add vec2")
    act(child, "finish")
    child.expect("Patch written to p.yaml")
    child.expect("Target schema written to target.yaml")
    child.expect(r"plan.yaml exists. Overwrite it \(y/n\) \[n\]: ")
    child.sendline("y")
    child.expect("Plan written to plan.yaml")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    patch = yaml.safe_load((tmp_path / "p.yaml").read_text())
    assert patch["changes"]["add_fields"] == [{"name": "vec2", "type": "vector", "attrs": {
        "dims": 8, "algorithm": "hnsw", "datatype": "float32", "distance_metric": "l2"}}]
    plan = yaml.safe_load((tmp_path / "plan.yaml").read_text())
    assert len(plan["source"]["keyspace"]["key_sample"]) == 3
    target = yaml.safe_load((tmp_path / "target.yaml").read_text())
    assert target == plan["merged_target_schema"]
    assert [f["name"] for f in target["fields"]][-1] == "vec2"


def _server_has_svs(client: Any) -> bool:
    from rvlm.core.redis.capabilities import detect

    return detect(client).svs_vamana


def test_start_from_patch_and_errors(redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    make_index(redis_client)
    bad = subprocess.run([RVLM, "wizard", "--url", redis_url, "--index", "nope"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: no index named 'nope' on this server"
    (tmp_path / "in.yaml").write_text(yaml.safe_dump({"version": 1, "changes": {
        "rename_fields": [{"old_name": "title", "new_name": "headline"}]}}))
    child = spawn(["wizard", "--url", redis_url, "--index", "docs", "--patch", "in.yaml"],
                  tmp_path)
    child.expect("Started from in.yaml")
    act(child, "rename")
    child.expect(r"field to rename: ")
    child.sendline("headline")
    child.expect(r"new name for headline: ")
    child.sendline("title")  # back to its own name: the rename is cancelled
    act(child, "finish")
    child.expect("no changes staged")
    act(child, "quit")
    child.expect(pexpect.EOF)  # nothing staged: no confirmation needed
    child.close()
    assert child.exitstatus == 1
    # end of input mid-session: one line, nothing written
    child = spawn(["wizard", "--url", redis_url, "--index", "docs"], tmp_path)
    act(child, "rename")
    child.sendeof()
    child.expect("nothing written")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert "Traceback" not in (child.before or "")


# ---- the staging rules (pure) ------------------------------------------------------------


def _source() -> Any:
    from rvlm.core.schema.yaml_format import schema_from_dict

    return schema_from_dict({"index": {"name": "docs", "prefix": "doc:"}, "fields": [
        {"name": "a", "type": "text"}, {"name": "b", "type": "tag"},
        {"name": "v", "type": "vector", "attrs": {"dims": 4}}]})


def test_staging_rules() -> None:
    st = Staging(_source())
    st.rename("a", "x")
    st.rename("x", "y")
    assert st.changes()["rename_fields"] == [{"old_name": "a", "new_name": "y"}]
    st.remove("y")
    assert st.changes() == {"remove_fields": ["a"]}
    with pytest.raises(StagingError, match="staged for removal"):
        st.rename("b", "a")
    with pytest.raises(StagingError, match="staged for removal"):
        st.add({"name": "a", "type": "text"})
    st.add({"name": "c", "type": "numeric"})
    st.rename("c", "d")
    st.update("d", {"sortable": True})
    assert st.changes()["add_fields"] == [{"name": "d", "type": "numeric",
                                           "attrs": {"sortable": True}}]
    st.remove("d")
    assert "add_fields" not in st.changes()
    st.update("v", {"datatype": "float16"})
    st.update("v", {"datatype": "float32"})  # back to the live value: no update left
    assert "update_fields" not in st.changes()
    with pytest.raises(StagingError):
        st.update("v", {"datatype": "float99"})
    assert st.undo() == "update v: datatype=float32"
    assert st.changes()["update_fields"] == [{"name": "v", "attrs": {"datatype": "float16"}}]
    st.set_prefix(["doc:"])
    assert "index" not in st.changes()
    from rvlm.core.schema.patch import merge, patch_from_dict

    merge(_source(), patch_from_dict(st.patch_dict()))
