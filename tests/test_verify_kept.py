"""The verification pass reads what the apply wrote from memory where the apply kept it (up
to ``KEPT_DOCUMENTS``) and from the backup for the rest: a document someone changed between
its write and the pass fails the apply either way."""

from __future__ import annotations

from typing import Any

import pytest
from test_apply_helpers import make_hash_index, reset

from rvlm.core.migrate import drop_recreate, verify
from rvlm.core.migrate.executor import apply_plan
from rvlm.core.migrate.planner import make_plan
from rvlm.core.plugins.host import get_host
from rvlm.core.redis.docio import verify as docio_verify
from rvlm.core.schema.patch import patch_from_dict


def _rename_plan(client: Any) -> Any:
    host = get_host()
    patch = patch_from_dict({"version": 1, "changes": {"rename_fields": [
        {"old_name": "t", "new_name": "title"}]}}, "test", tuple(host.patch_sections()))
    return make_plan(client, "idx", patch=patch, host=host)


@pytest.mark.parametrize("on_server", [True, False], ids=["script", "hmget"])
@pytest.mark.parametrize("limit", [50_000, 25, 0])
def test_a_document_changed_before_the_pass_fails_the_apply(redis_client, redis_url,
                                                            tmp_path, monkeypatch, limit,
                                                            on_server):
    """Whichever side takes the digests (the server's script, or the client from HMGET)."""
    reset(redis_client)
    monkeypatch.setattr(docio_verify, "DIGESTS_ON_SERVER", on_server)
    make_hash_index(redis_client, n=90)
    plan = _rename_plan(redis_client)
    monkeypatch.setattr(verify, "KEPT_DOCUMENTS", limit)
    real = drop_recreate.verify_documents
    kept: list[int] = []

    def someone_writes_first(client: Any, plan: Any, directory: Any, **kw: Any) -> Any:
        kept.append(kw["kept"].count)
        for i in (3, 47, 88):  # after the apply wrote them, before the pass
            redis_client.hset(f"doc:{i}", "title", b"someone else")
        return real(client, plan, directory, **kw)

    monkeypatch.setattr(drop_recreate, "verify_documents", someone_writes_first)
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=10)
    assert kept == [min(limit // 10 * 10, 90)]  # whole batches, up to the limit
    assert not report.succeeded
    documents = next(c for c in report.validation.checks if c.name == "documents")
    assert not documents.passed
    assert "3 hold something else" in documents.details
    for key in ("'doc:3'", "'doc:47'", "'doc:88'"):
        assert key in documents.details


@pytest.mark.parametrize("on_server", [True, False], ids=["script", "hmget"])
def test_a_document_deleted_before_the_pass_is_named_gone(redis_client, redis_url, tmp_path,
                                                          monkeypatch, on_server):
    reset(redis_client)
    monkeypatch.setattr(docio_verify, "DIGESTS_ON_SERVER", on_server)
    make_hash_index(redis_client, n=30)
    plan = _rename_plan(redis_client)
    real = drop_recreate.verify_documents

    def someone_deletes_first(client: Any, plan: Any, directory: Any, **kw: Any) -> Any:
        redis_client.delete("doc:12")
        return real(client, plan, directory, **kw)

    monkeypatch.setattr(drop_recreate, "verify_documents", someone_deletes_first)
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=10)
    assert not report.succeeded
    documents = next(c for c in report.validation.checks if c.name == "documents")
    assert "1 are gone" in documents.details and "'doc:12'" in documents.details


def test_digests_are_taken_by_the_client_for_a_server_on_this_machine():
    import redis

    assert not docio_verify.digests_on_server(redis.Redis(host="127.0.0.1", port=1))
    assert not docio_verify.digests_on_server(redis.Redis(host="localhost", port=1))
    assert not docio_verify.digests_on_server(redis.Redis(unix_socket_path="/tmp/x.sock"))
    assert docio_verify.digests_on_server(redis.Redis(host="10.1.2.3", port=1))
