"""Plan-wide checks against the real server: aliases, indexing failures, a building index,
values FT.INFO cannot report, downtime, the target-schema mode, and plugin patch sections."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
import yaml

from rvlm.core.errors import RvlmError
from rvlm.core.migrate import planner
from rvlm.core.migrate.plan import Plan
from rvlm.core.migrate.planner import make_plan, plan_inputs
from rvlm.core.plugins.changes import ChangeType, Classification
from rvlm.core.plugins.documents import DocumentOperation
from rvlm.core.schema.patch import load_patch, merge, patch_from_dict
from rvlm.core.schema.yaml_format import dump_schema, schema_from_dict, schema_to_dict
from rvlm.hookspecs import hookimpl


def make_index(client, n: int = 12) -> None:
    client.execute_command(
        "FT.CREATE", "docs", "ON", "HASH", "PREFIX", "1", "doc:", "SCHEMA",
        "title", "TEXT", "body", "TEXT", "price", "NUMERIC",
        "emb", "VECTOR", "HNSW", "6", "TYPE", "FLOAT32", "DIM", "4", "DISTANCE_METRIC", "L2")
    rng = np.random.default_rng(5)
    for i in range(n):
        client.hset(f"doc:{i}", mapping={"title": f"t{i}", "body": "b", "price": i,
                                         "emb": rng.normal(size=4).astype(np.float32).tobytes()})


def patch(changes: dict):
    return patch_from_dict({"version": 1, "changes": changes}, "patch.yaml")


def test_unknown_index_is_one_clear_error(redis_client):
    with pytest.raises(RvlmError, match="no index named 'nope'"):
        make_plan(redis_client, "nope", patch=patch({}))


def test_alias_plans_the_real_index_and_says_what_happens_to_the_alias(redis_client):
    make_index(redis_client)
    redis_client.execute_command("FT.ALIASADD", "current", "docs")
    p = make_plan(redis_client, "current", patch=patch({"index": {"name": "docs_v2"}}))
    assert p.source_index == "docs" and p.target_index == "docs_v2"
    assert p.source_alias == "current"
    d = yaml.safe_load(p.to_yaml())
    assert d["source"]["index_name"] == "docs" and d["rvlm"]["source_alias"] == "current"
    [w] = [w for w in p.warnings if "is an alias of" in w]
    assert "'current' is an alias of 'docs'" in w and "FT.ALIASUPDATE current docs_v2" in w
    # and any other alias is lost, with the flag that keeps it
    [lost] = [w for w in p.warnings if "every alias" in w]
    assert "any other alias of 'docs' is lost" in lost and "--keep-alias NAME" in lost
    assert Plan.from_dict(d).source_alias == "current"
    # planning by the real name records no alias
    assert make_plan(redis_client, "docs", patch=patch({})).source_alias is None


def test_indexing_failures_are_warned(redis_client):
    make_index(redis_client)
    redis_client.hset("doc:bad", mapping={"title": "broken", "emb": b"\x01\x02\x03"})
    p = make_plan(redis_client, "docs", patch=patch({"remove_fields": ["body"]}))
    assert p.source_stats.indexing_failures == 1
    [w] = [w for w in p.warnings if "indexing failures" in w]
    assert "1 indexing failures" in w and "wrong byte length" in w
    # the downtime counts them: they are documents the new index tries again
    [dt] = [w for w in p.warnings if w.startswith("downtime")]
    assert "13 documents" in dt


def test_a_building_index_is_warned(redis_client, monkeypatch):
    make_index(redis_client)
    real = planner.read_index

    def building(client, name):
        info = real(client, name)
        return attrs.evolve(info, stats=attrs.evolve(info.stats, indexing=True,
                                                     percent_indexed=0.4))

    monkeypatch.setattr(planner, "read_index", building)
    p = make_plan(redis_client, "docs", patch=patch({"remove_fields": ["body"]}))
    [w] = [w for w in p.warnings if "still building" in w]
    assert "40% indexed" in w and "plan again" in w


def test_values_ft_info_cannot_report_are_named_with_what_the_new_index_uses(redis_client):
    make_index(redis_client)
    p = make_plan(redis_client, "docs", patch=patch({"remove_fields": ["body"]}))
    [w] = [w for w in p.warnings if w.startswith("FT.INFO cannot report")]
    assert "emb.ef_runtime 10 (server default)" in w
    assert "emb.epsilon 0.01 (server default)" in w
    assert "update_fields" in w
    # set explicitly by the patch: no longer warned about
    p = make_plan(redis_client, "docs", patch=patch({"update_fields": [
        {"name": "emb", "attrs": {"ef_runtime": 50, "epsilon": 0.02}}]}))
    [w] = [w for w in p.warnings if w.startswith("FT.INFO cannot report")]
    assert "ef_runtime" not in w and "epsilon" not in w
    [c] = p.changes
    assert c.summary == "vector index of 'emb': ef_runtime unknown -> 50, epsilon unknown -> " \
                        "0.02 (vectors unchanged)"


def test_downtime_estimate_comes_from_the_stats(redis_client):
    make_index(redis_client)
    p = make_plan(redis_client, "docs", patch=patch({"update_fields": [
        {"name": "emb", "attrs": {"datatype": "float16"}}]}))
    [w] = [w for w in p.warnings if w.startswith("downtime")]
    assert "queries on 'docs' fail" in w and "12 documents" in w
    assert "of indexing plus" in w and "document rewrite" in w


# -- target-schema mode ----------------------------------------------------------------------

def test_target_schema_mode_plans_exactly_the_target(redis_client, tmp_path):
    make_index(redis_client)
    source = planner.read_index(redis_client, "docs").schema
    target = schema_from_dict({
        "index": {"name": "docs", "prefix": "doc:", "storage_type": "hash"},
        "fields": [
            {"name": "title", "type": "text", "attrs": {"weight": 2.0}},
            {"name": "headline", "type": "text"},     # body, renamed: identical attrs
            {"name": "price", "type": "numeric", "attrs": {"sortable": True}},
            {"name": "emb", "type": "vector",
             "attrs": {"dims": 4, "algorithm": "hnsw", "datatype": "float16",
                       "distance_metric": "l2", "m": 32}},
        ]})
    path = tmp_path / "target.yaml"
    path.write_text(dump_schema(target))
    p = plan_inputs(target_schema=str(path)).plan(redis_client, "docs")
    assert p.target_schema == target
    # the derived patch, applied to the live source, gives the same target
    derived = patch_from_dict({"version": 1, "changes": p.requested_changes}, "derived")
    merged = merge(source, derived)
    assert sorted(f.name for f in merged.fields) == sorted(f.name for f in target.fields)
    for f in target.fields:
        assert merged.field(f.name).evolve(unknown_attrs=()) == f
    assert p.requested_changes["remove_fields"] == ["body"]
    assert [f["name"] for f in p.requested_changes["add_fields"]] == ["headline"]
    # the likely rename, with the exact entry to use
    [w] = [w for w in p.warnings if "likely" in w or "if this is a rename" in w]
    assert "'body' disappears and an identical field 'headline' appears" in w
    assert "rename_fields: [{old_name: body, new_name: headline}]" in w
    # and the suggestion works: the same target, with the rename
    pf = tmp_path / "rename.yaml"
    pf.write_text("version: 1\nchanges:\n  rename_fields: [{old_name: body, new_name: headline}]\n")
    renamed = make_plan(redis_client, "docs", patch=load_patch(pf))
    # the attribute is renamed, and the hash field with it (a move_path change)
    assert [c.type for c in renamed.changes] == ["rename_field", "move_path"]
    assert renamed.target_schema.field("headline").evolve(unknown_attrs=()) == \
        target.field("headline")
    # deterministic in this mode too
    assert plan_inputs(target_schema=str(path)).plan(redis_client, "docs").to_yaml() == \
        p.to_yaml()


def test_target_schema_equal_to_source_changes_nothing(redis_client, tmp_path):
    make_index(redis_client)
    source = planner.read_index(redis_client, "docs").schema
    path = tmp_path / "same.yaml"
    path.write_text(yaml.safe_dump(schema_to_dict(source.without_unknowns())))
    p = plan_inputs(target_schema=str(path)).plan(redis_client, "docs")
    assert not p.changes and p.requested_changes == {}


# -- a plugin-owned patch section ------------------------------------------------------------

class TagAllPlugin:
    """Adds a tag field named by its section and rewrites every document to hold it."""

    name = "tag_all"
    version = "9.9"

    @hookimpl
    def rvlm_change_types(self):
        return [ChangeType(name="tag_all", description="tag every document",
                           patch_section="tag_all")]

    @hookimpl
    def merge_patch_section(self, section, value, target, context):
        if section != "tag_all":
            return None
        if not isinstance(value, dict) or not isinstance(value.get("field"), str):
            raise RvlmError("patch.yaml: changes.tag_all.field must be a string")
        from rvlm.core.schema.model import Field, TagAttrs

        return target.with_fields([*target.fields,
                                   Field(name=value["field"], type="tag", attrs=TagAttrs())])

    @hookimpl
    def classify_change(self, change, context):
        if change.type != "tag_all":
            return None
        field = change.details["value"]["field"]
        docs = context.sample([field])
        return Classification(
            summary=f"tag {len(docs)} sampled documents with {field}",
            warnings=[f"every document gets {field}"],
            operations=[DocumentOperation(plugin="tag_all", kind="set_tag", writes=(field,),
                                          params={"field": field})])


def test_plugin_patch_section_is_merged_and_classified(redis_client, rvlm_plugin, tmp_path):
    make_index(redis_client)
    rvlm_plugin(TagAllPlugin())
    pf = tmp_path / "p.yaml"
    pf.write_text("version: 1\nchanges:\n  tag_all: {field: team}\n"
                  "  remove_fields: [body]\n")
    p = plan_inputs(schema_patch=str(pf)).plan(redis_client, "docs")
    assert p.supported
    assert p.target_schema.field_names() == ["title", "price", "emb", "team"]
    d = yaml.safe_load(p.to_yaml())
    assert d["requested_changes"]["tag_all"] == {"field": "team"}
    [c] = [c for c in d["rvlm"]["changes"] if c["type"] == "tag_all"]
    assert c["plugin"] == "tag_all" and c["plugin_version"] == "9.9"
    assert c["details"] == {"section": "tag_all", "value": {"field": "team"}}
    assert c["summary"] == "tag 12 sampled documents with team"
    assert "every document gets team" in d["warnings"]
    assert d["rvlm"]["operations"] == [{"plugin": "tag_all", "kind": "set_tag",
                                        "writes": ["team"], "params": {"field": "team"}}]
    # its own validation error is one line naming the key
    pf.write_text("version: 1\nchanges:\n  tag_all: {field: 3}\n")
    with pytest.raises(RvlmError, match=r"changes\.tag_all\.field"):
        plan_inputs(schema_patch=str(pf)).plan(redis_client, "docs")


def test_plugin_section_without_the_plugin_is_an_unknown_section(redis_client, tmp_path):
    make_index(redis_client)
    pf = tmp_path / "p.yaml"
    pf.write_text("version: 1\nchanges:\n  tag_all: {field: team}\n")
    with pytest.raises(RvlmError, match=r"p\.yaml: changes\.tag_all: unknown section"):
        plan_inputs(schema_patch=str(pf)).plan(redis_client, "docs")
