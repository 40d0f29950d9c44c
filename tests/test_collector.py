"""The transform and the verification pass run with the garbage collector's first threshold
raised, and put the thresholds back afterwards, whatever happens."""

from __future__ import annotations

import gc

import pytest
from test_apply_helpers import make_hash_index, reset

from rvlm.core.migrate import drop_recreate, verify
from rvlm.core.migrate.collector import FIRST_GENERATION, fewer_collections
from rvlm.core.migrate.executor import apply_plan
from rvlm.core.migrate.planner import make_plan
from rvlm.core.plugins.host import get_host
from rvlm.core.schema.patch import patch_from_dict


@pytest.fixture
def thresholds():
    found = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*found)


def test_raised_inside_and_put_back_after_even_on_error(thresholds):
    with fewer_collections():
        assert gc.get_threshold() == (FIRST_GENERATION, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("boom")
    assert gc.get_threshold() == (700, 10, 10)


def test_never_lowered_nor_turned_on(thresholds):
    gc.set_threshold(90_000, 10, 10)
    with fewer_collections():
        assert gc.get_threshold() == (90_000, 10, 10)
    gc.set_threshold(0, 10, 10)  # collection by threshold off: left off
    with fewer_collections():
        assert gc.get_threshold() == (0, 10, 10)
    gc.set_threshold(700, 10, 10)
    gc.disable()
    try:
        with fewer_collections():
            assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.enable()


def test_the_transform_and_the_verification_run_with_it_and_the_apply_leaves_the_default(
        redis_client, redis_url, tmp_path, monkeypatch, thresholds):
    reset(redis_client)
    make_hash_index(redis_client, n=30)
    host = get_host()
    patch = patch_from_dict({"version": 1, "changes": {"rename_fields": [
        {"old_name": "t", "new_name": "title"}]}}, "test", tuple(host.patch_sections()))
    plan = make_plan(redis_client, "idx", patch=patch, host=host)
    seen: list[tuple[int, int, int]] = []
    plain = drop_recreate.DropRecreate._transform

    def spy(self, keyfile):
        seen.append(gc.get_threshold())
        plain(self, keyfile)

    monkeypatch.setattr(drop_recreate.DropRecreate, "_transform", spy)
    checked: list[tuple[int, int, int]] = []
    plain_check = verify.check_written

    def check_spy(*args, **kwargs):
        checked.append(gc.get_threshold())
        return plain_check(*args, **kwargs)

    monkeypatch.setattr(verify, "check_written", check_spy)
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=7,
                        accept_data_loss=True)
    assert report.succeeded, report.to_yaml()
    assert seen == [(FIRST_GENERATION, 10, 10)]
    assert checked == [(FIRST_GENERATION, 10, 10)] * 5  # every batch of 7 (of 30) checked
    assert gc.get_threshold() == (700, 10, 10)
    assert all(redis_client.hget(f"doc:{i}", "title") is not None for i in range(30))
