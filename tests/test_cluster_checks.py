"""Plan-time cluster checks: an uncoordinated cluster needs index name, prefixes and aliases in
one hash tag; hash tags and slots; the layout detected from the server."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from rvlm.core.migrate.cluster_checks import layout_problems, migration_warning
from rvlm.core.redis.topology import (
    COORDINATED,
    STANDALONE,
    UNCOORDINATED,
    SlotMigration,
    cluster_migrations,
    detect_layout,
    hash_tag,
    prefix_slot,
    slot_of,
)
from rvlm.core.schema.model import Field, IndexDefinition, IndexSchema, TextAttrs


def schema(name: str, *prefixes: str) -> IndexSchema:
    return IndexSchema(index=IndexDefinition(name=name, prefix=prefixes or ("",)),
                       fields=[Field(name="title", type="text", attrs=TextAttrs())])


def test_hash_tags_and_prefix_slots() -> None:
    assert hash_tag("{t1}doc:") == b"t1" and hash_tag(b"a{b}c{d}") == b"b"
    assert hash_tag("doc:") is None and hash_tag("a{}b{c}") is None and hash_tag("{t") is None
    assert prefix_slot("{t1}doc:") == key_slot(b"t1") == slot_of("{t1}idx")
    assert prefix_slot("doc:") is None and prefix_slot("doc:{") is None


def test_hash_tagged_index_changes_pass() -> None:
    src = schema("{t1}idx", "{t1}doc:")
    for tgt in (src, schema("{t1}idx_v2", "{t1}doc:"), schema("{t1}idx", "{t1}item:")):
        assert layout_problems(UNCOORDINATED, src, tgt, aliases=("{t1}alias",)) == []


def test_prefix_change_to_another_tag_is_refused_with_the_reason() -> None:
    src = schema("{t1}idx", "{t1}doc:")
    [reason] = layout_problems(UNCOORDINATED, src, schema("{t1}idx", "{t2}doc:"))
    assert "'{t2}doc:' would move documents out of the index's slot" in reason
    assert f"slot {slot_of('{t2}')}" in reason and "no coordinator" in reason
    [reason] = layout_problems(UNCOORDINATED, src, schema("{t1}idx", "doc:"))
    assert "'doc:' would move documents out" in reason and "has no hash tag" in reason


def test_renamed_index_and_aliases_in_other_slots_are_refused() -> None:
    src = schema("{t1}idx", "{t1}doc:")
    [reason] = layout_problems(UNCOORDINATED, src, schema("idx_v2", "{t1}doc:"))
    assert "new index name 'idx_v2'" in reason and "same hash tag" in reason
    [reason] = layout_problems(UNCOORDINATED, src, src, aliases=("products",))
    assert "alias 'products'" in reason and "CROSSSLOT" in reason


def test_an_incomplete_source_index_is_refused() -> None:
    reasons = layout_problems(UNCOORDINATED, schema("idx", "doc:"), schema("idx", "doc:"))
    assert len(reasons) == 1 and "'idx' is not complete on this cluster" in reasons[0]
    assert "spread over every node" in reasons[0] and "'{t1}idx'" in reasons[0]
    reasons = layout_problems(UNCOORDINATED, schema("{a}idx", "{a}doc:", "{b}doc:"),
                              schema("{a}idx", "{a}doc:", "{b}doc:"))
    assert len(reasons) == 1 and "'{b}doc:' hashes to slot" in reasons[0]


def test_a_per_shard_set_is_refused_as_such() -> None:
    [reason] = layout_problems(UNCOORDINATED, schema("{a}idx", "doc:"), schema("{a}idx", "doc:"),
                               siblings=("{b}idx", "{c}idx"))
    assert "'{a}idx' is one of a per-shard set" in reason and "'{b}idx', '{c}idx'" in reason
    assert "rvlm does not migrate a per-shard set" in reason and "'{t1}{a}idx'" in reason
    # a complete index is not refused because other indexes share its prefixes
    src = schema("{t1}idx", "{t1}doc:")
    assert layout_problems(UNCOORDINATED, src, src, siblings=("{t2}idx",)) == []


def test_other_layouts_have_no_constraint() -> None:
    src, tgt = schema("idx", "doc:"), schema("other", "{x}item:")
    assert layout_problems(COORDINATED, src, tgt, aliases=("a",)) == []
    assert layout_problems(STANDALONE, src, tgt, aliases=("a",)) == []


def test_migration_warning() -> None:
    assert migration_warning([]) is None
    ms = [SlotMigration(s, "a" * 40, "b" * 40, "migrating") for s in range(7)]
    text = migration_warning(ms)
    assert text is not None and "slot 0 migrating (aaaaaaaa -> bbbbbbbb)" in text
    assert "(and 2 more)" in text and "apply refuses" in text


@pytest.mark.cluster
def test_layout_and_migrations_from_the_server(redis_cluster, cluster_client, redis_client,
                                               monkeypatch) -> None:
    assert detect_layout(cluster_client, cluster=True) == UNCOORDINATED  # this machine
    assert detect_layout(redis_client, cluster=False) == STANDALONE
    monkeypatch.setenv("RVLM_SEARCH_LAYOUT", "coordinated")
    assert detect_layout(cluster_client, cluster=True) == COORDINATED
    assert cluster_migrations(cluster_client) == [] == cluster_migrations(redis_client)
    slot = key_slot(b"{chk}")
    src = redis_cluster.owner_of(b"{chk}")
    dst = next(n for n in redis_cluster.primary_servers() if n.port != src.port)
    redis_cluster.begin_slot_migration(slot, dst.port)
    try:
        found = cluster_migrations(cluster_client)
    finally:
        redis_cluster.cancel_slot_migration(slot)
    assert [(m.slot, m.state) for m in found] == [(slot, "migrating")]
    assert cluster_migrations(cluster_client) == []


@pytest.mark.cluster
def test_cluster_flag_and_server_info(redis_cluster, redis_url, tmp_path) -> None:
    """``--cluster`` against one server is refused in one line (exit 2) before anything
    else; ``rvlm server info`` on any node of the cluster names the cluster and its layout."""
    from cluster_data import cli, write_patch

    patch = write_patch(tmp_path / "p.yaml", {"rename_fields": [
        {"old_name": "title", "new_name": "headline"}]})
    out = cli("plan", "--index", "idx", "--schema-patch", str(patch), "--url", redis_url,
              "--cluster")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "is not a Redis Cluster node" in out.stderr and out.stderr.count("\n") == 1
    out = cli("server", "info", "--url", redis_cluster.nodes[2].url)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "cluster without a search coordinator" in out.stdout and "hash tag" in out.stdout
