"""Schema patches without a server: parsing, self-contradiction, merge, target-schema mode,
likely renames and the diff's effective values."""

from __future__ import annotations

from pathlib import Path

import pytest

from rvlm.core.errors import RvlmError
from rvlm.core.schema.diff import differences, likely_renames
from rvlm.core.schema.patch import load_patch, merge, patch_from_dict, patch_from_target
from rvlm.core.schema.yaml_format import schema_from_dict

SOURCE = schema_from_dict({
    "index": {"name": "docs", "prefix": "doc:", "storage_type": "hash",
              "stopwords": ["a", "the"], "language": "german"},
    "fields": [
        {"name": "title", "type": "text", "attrs": {"weight": 2.0, "sortable": True}},
        {"name": "body", "type": "text"},
        {"name": "tags", "type": "tag", "attrs": {"separator": "|"}},
        {"name": "price", "type": "numeric", "attrs": {"sortable": True}},
        {"name": "raw", "type": "tag", "path": "raw_field"},
        {"name": "emb", "type": "vector",
         "attrs": {"dims": 4, "algorithm": "hnsw", "datatype": "float32",
                   "distance_metric": "cosine", "m": 8}},
    ],
})


def patch(changes: dict, **kw) -> object:
    return patch_from_dict({"version": 1, "changes": changes}, "p.yaml", **kw)


# -- bad input: one line naming the file and the key ----------------------------------------

@pytest.mark.parametrize("data, words", [
    ([1, 2], ["p.yaml", "mapping"]),
    ({"version": 1, "changes": {}, "extra": 1}, ["p.yaml", "'extra'"]),
    ({"version": 2, "changes": {}}, ["p.yaml", "version", "2"]),
    ({"changes": {"add_field": []}}, ["p.yaml", "changes.add_field", "unknown section"]),
    ({"changes": {"remove_fields": "title"}}, ["p.yaml", "changes.remove_fields", "list"]),
    ({"changes": {"remove_fields": [3]}}, ["p.yaml", "remove_fields[0]", "string"]),
    ({"changes": {"rename_fields": [{"old_name": "a"}]}}, ["p.yaml", "new_name"]),
    ({"changes": {"rename_fields": [{"old_name": "a", "new_name": "b", "x": 1}]}},
     ["p.yaml", "rename_fields[0]", "'x'"]),
    ({"changes": {"update_fields": [{"name": "emb", "attrz": {}}]}},
     ["p.yaml", "update_fields[0]", "'attrz'"]),
    ({"changes": {"update_fields": [{"name": "emb", "attrs": [1]}]}},
     ["p.yaml", "update_fields[0].attrs", "mapping"]),
    ({"changes": {"update_fields": [{"name": "emb", "path": 5}]}},
     ["p.yaml", "update_fields[0].path"]),
    ({"changes": {"add_fields": [{"name": "x"}]}}, ["p.yaml", "add_fields[0].type"]),
    ({"changes": {"add_fields": [{"name": "x", "type": "bogus"}]}},
     ["p.yaml", "add_fields[0]", "bogus"]),
    ({"changes": {"add_fields": [{"name": "x", "type": "numeric",
                                  "attrs": {"sortable": "no"}}]}},
     ["p.yaml", "add_fields[0]", "sortable"]),
    ({"changes": {"index": ["docs2"]}}, ["p.yaml", "changes.index", "mapping"]),
])
def test_malformed_patches_are_one_line_naming_the_key(data, words):
    with pytest.raises(RvlmError) as err:
        patch_from_dict(data, "p.yaml")
    text = str(err.value)
    assert "\n" not in text
    for w in words:
        assert w in text, (w, text)


@pytest.mark.parametrize("changes, words", [
    ({"rename_fields": [{"old_name": "title", "new_name": "headline"}],
      "add_fields": [{"name": "title", "type": "text"}]},
     ["add_fields", "'title'", "renamed away and added again"]),
    ({"rename_fields": [{"old_name": "title", "new_name": "x"},
                        {"old_name": "body", "new_name": "x"}]},
     ["rename_fields", "'title'", "'body'", "both renamed to 'x'"]),
    ({"remove_fields": ["title"], "update_fields": [{"name": "title", "attrs": {"weight": 3}}]},
     ["update_fields", "'title'", "remove_fields"]),
    ({"remove_fields": ["title"], "rename_fields": [{"old_name": "title", "new_name": "h"}]},
     ["rename_fields", "'title'", "remove_fields"]),
    ({"remove_fields": ["title", "title"]}, ["remove_fields", "twice"]),
    ({"rename_fields": [{"old_name": "a", "new_name": "b"}, {"old_name": "b", "new_name": "c"}]},
     ["rename_fields", "'b'", "two migrations"]),
    ({"rename_fields": [{"old_name": "a", "new_name": "a"}]}, ["rename_fields", "onto itself"]),
    ({"add_fields": [{"name": "x", "type": "tag"}, {"name": "x", "type": "tag"}]},
     ["add_fields", "added twice"]),
    ({"add_fields": [{"name": "x", "type": "tag"}],
      "update_fields": [{"name": "x", "attrs": {"sortable": True}}]},
     ["update_fields", "'x'", "add_fields"]),
    ({"rename_fields": [{"old_name": "title", "new_name": "h"}],
      "update_fields": [{"name": "title", "attrs": {"weight": 1}},
                        {"name": "h", "attrs": {"weight": 3}}]},
     ["update_fields", "twice"]),
])
def test_contradictory_patches_are_refused(changes, words):
    with pytest.raises(RvlmError) as err:
        patch(changes)
    text = str(err.value)
    assert text.startswith("p.yaml: changes.")
    for w in words:
        assert w in text, (w, text)


@pytest.mark.parametrize("changes, words", [
    ({"remove_fields": ["nope"]}, ["remove_fields", "'nope'", "fields: title"]),
    ({"rename_fields": [{"old_name": "nope", "new_name": "x"}]}, ["rename_fields", "'nope'"]),
    ({"update_fields": [{"name": "nope", "attrs": {}}]}, ["update_fields", "'nope'"]),
    ({"rename_fields": [{"old_name": "title", "new_name": "body"}]},
     ["rename_fields", "already has a field named 'body'"]),
    ({"add_fields": [{"name": "body", "type": "text"}]}, ["add_fields", "'body'"]),
    ({"update_fields": [{"name": "emb", "attrs": {"dims": "many"}}]}, ["update_fields", "dims"]),
    ({"update_fields": [{"name": "emb", "attrs": {"datatype": "float8"}}]},
     ["update_fields", "datatype", "float8"]),
    ({"update_fields": [{"name": "title", "attrs": {"dims": 3}}]}, ["update_fields", "dims"]),
    ({"index": {"nmae": "x"}}, ["changes.index", "nmae"]),
])
def test_merge_errors_name_the_key(changes, words):
    with pytest.raises(RvlmError) as err:
        merge(SOURCE, patch(changes))
    text = str(err.value)
    assert "\n" not in text and "p.yaml: changes." in text
    for w in words:
        assert w in text, (w, text)


def test_load_patch_reports_malformed_yaml_with_the_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nchanges:\n  add_fields: [\n")
    with pytest.raises(RvlmError) as err:
        load_patch(bad)
    assert str(bad) in str(err.value) and "malformed YAML" in str(err.value)
    with pytest.raises(RvlmError, match="no such file"):
        load_patch(tmp_path / "missing.yaml")


def test_plugin_sections_are_accepted_only_when_declared():
    with pytest.raises(RvlmError, match=r"changes\.hash_to_json: unknown section"):
        patch({"hash_to_json": {"x": 1}})
    p = patch({"hash_to_json": {"x": 1}}, plugin_sections=("hash_to_json",))
    assert p.sections == {"hash_to_json": {"x": 1}}
    assert p.requested_changes() == {"hash_to_json": {"x": 1}}


def test_merge_applies_every_section():
    p = patch({
        "remove_fields": ["body"],
        "rename_fields": [{"old_name": "title", "new_name": "headline"}],
        "update_fields": [{"name": "title", "attrs": {"weight": 3}},  # by its old name
                          {"name": "emb", "attrs": {"datatype": "float16", "m": 16}}],
        "add_fields": [{"name": "category", "type": "tag"}],
        "index": {"name": "docs_v2", "prefix": "d2:"},
    })
    t = merge(SOURCE, p)
    assert t.field_names() == ["headline", "tags", "price", "raw", "emb", "category"]
    assert t.field("headline").attrs.weight == 3.0
    assert t.field("emb").attrs.datatype == "float16" and t.field("emb").attrs.m is None
    assert t.index.name == "docs_v2" and t.index.prefix == ("d2:",)
    assert t.index.language == "german"  # untouched options survive


# -- target-schema mode -----------------------------------------------------------------------

def _by_name(schema):
    return sorted((f.name, f.evolve(unknown_attrs=())) for f in schema.fields)


TARGETS = [
    # options changed, one removed, one added, a vector reparametrised and quantized
    {"index": {"name": "docs", "prefix": "doc:", "storage_type": "hash",
               "stopwords": ["a", "the"], "language": "german"},
     "fields": [
         {"name": "title", "type": "text", "attrs": {"sortable": True}},  # weight back to default
         {"name": "tags", "type": "tag", "attrs": {"separator": ",", "case_sensitive": True}},
         {"name": "price", "type": "numeric"},
         {"name": "raw", "type": "tag"},  # AS raw_field removed: stored at 'raw'
         {"name": "emb", "type": "vector",
          "attrs": {"dims": 4, "algorithm": "flat", "datatype": "float16",
                    "distance_metric": "l2"}},
         {"name": "category", "type": "tag"},
     ]},
    # index options removed and renamed index; a type change
    {"index": {"name": "docs_v2", "prefix": ["a:", "b:"], "storage_type": "hash"},
     "fields": [
         {"name": "title", "type": "tag"},
         {"name": "body", "type": "text", "attrs": {"no_stem": True}},
         {"name": "emb", "type": "vector",
          "attrs": {"dims": 4, "algorithm": "hnsw", "datatype": "float32",
                    "distance_metric": "cosine", "m": 32, "ef_runtime": 20}},
     ]},
]


@pytest.mark.parametrize("target_dict", TARGETS)
def test_patch_from_target_reproduces_the_target(target_dict):
    target = schema_from_dict(target_dict)
    derived = patch_from_target(SOURCE, target)
    merged = merge(SOURCE, derived)
    assert merged.index == target.index
    assert _by_name(merged) == _by_name(target)
    # and the derived patch is itself a valid patch file
    again = patch_from_dict({"version": 1, "changes": derived.requested_changes()}, "derived")
    assert _by_name(merge(SOURCE, again)) == _by_name(target)
    assert merge(SOURCE, again).index == target.index


def test_patch_from_target_of_the_source_is_empty():
    assert patch_from_target(SOURCE, SOURCE).requested_changes() == {}


def test_likely_rename_hash_field():
    target = SOURCE.with_fields([f.evolve(name="headline") if f.name == "title" else f
                                 for f in SOURCE.fields])
    [s] = likely_renames(SOURCE, target, {})
    assert (s.old_name, s.new_name, s.new_path) == ("title", "headline", None)
    assert s.patch_text() == "rename_fields: [{old_name: title, new_name: headline}]"
    # the suggested entry, as a patch, gives exactly the target
    p = patch_from_dict({"version": 1, "changes": s.patch}, "s")
    assert merge(SOURCE, p).without_unknowns() == target.without_unknowns()


def test_likely_rename_json_keeps_the_path_when_the_target_does():
    """A JSON rename moves ``$.title`` to ``$.headline`` by itself; keeping the value where it
    is takes the path in update_fields."""
    src = schema_from_dict({"index": {"name": "j", "prefix": "j:", "storage_type": "json"},
                            "fields": [{"name": "title", "type": "text"},
                                       {"name": "n", "type": "numeric"}]})
    same_path = schema_from_dict({"index": {"name": "j", "prefix": "j:", "storage_type": "json"},
                                  "fields": [{"name": "headline", "type": "text",
                                              "path": "$.title"},
                                             {"name": "n", "type": "numeric"}]})
    [s] = likely_renames(src, same_path, {})
    assert s.new_path == "$.title"
    assert "update_fields: [{name: headline, path: '$.title'}]" in s.patch_text()
    moved = schema_from_dict({"index": {"name": "j", "prefix": "j:", "storage_type": "json"},
                              "fields": [{"name": "headline", "type": "text"},
                                         {"name": "n", "type": "numeric"}]})
    [s] = likely_renames(src, moved, {})
    assert s.new_path is None
    assert s.patch_text() == "rename_fields: [{old_name: title, new_name: headline}]"
    for tgt in (same_path, moved):
        [s] = likely_renames(src, tgt, {})
        p = patch_from_dict({"version": 1, "changes": s.patch}, "s")
        assert merge(src, p) == tgt


def test_no_likely_rename_when_attrs_differ():
    target = SOURCE.with_fields([f.evolve(name="headline").evolve(attrs=SOURCE.field("body")
                                                                  .attrs)
                                 if f.name == "title" else f for f in SOURCE.fields])
    assert likely_renames(SOURCE, target, {}) == []


def test_differences_show_values_the_index_uses_not_none():
    p = patch({"update_fields": [{"name": "emb", "attrs": {"m": 16, "ef_runtime": 50}}]})
    found = {d.key: d for d in differences(SOURCE, merge(SOURCE, p), {})}
    assert set(found) == {"m", "ef_runtime"}
    assert (found["m"].kind, found["m"].field, found["m"].before, found["m"].after) == (
        "field_attr", "emb", 8, 16)
    assert found["ef_runtime"].after == 50
