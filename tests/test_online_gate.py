"""The gate before the cut-over of an online copy, when changes carried over while it runs make
a try fail: it is tried again (forwarding goes on during each try), up to ``GATE_TRIES`` times,
and the last try holds forwarding. Driven by a plugin's ``validate`` hook that writes a source
key during each call and fails its first calls."""

from __future__ import annotations

from typing import Any

from online_helpers import GateProbe, contents, copy_plan, dumps, points_at, renamed_quantized
from test_apply_helpers import make_hash_index

from rvlm.core.migrate.executor import apply_plan
from rvlm.core.migrate.online.blue_green import GATE_TRIES
from rvlm.core.storage.journal import Journal, RunState, phase_data


def _targets_right(client: Any) -> None:
    sources = contents(client, "doc:*")
    assert len(sources) == 150
    for k, (fields, expiry) in sources.items():
        target = b"new:" + k[4:]
        assert (client.hgetall(target), client.execute_command("PEXPIRETIME", target)) \
            == (renamed_quantized(fields), expiry), k


def test_a_try_failed_by_carried_over_changes_is_tried_again_and_the_run_cuts_over(
        redis_client, redis_url, tmp_path, notify):
    make_hash_index(redis_client, n=150, dims=8, ttl_every=7)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    plan = copy_plan(redis_client)
    probe = GateProbe(redis_client, fail_first=1)
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=50,
                        accept_data_loss=True, plugins=[probe])
    assert report.succeeded, report.to_yaml()
    # the first try failed after a change was carried over during it: tried again, with
    # forwarding still going on (the second write reached its target during the second try)
    assert probe.carried == [True, True]
    assert report.online["gate_tries"] == 2
    assert phase_data(tmp_path / "b", "validated")["gate_tries"] == 2
    assert [c.passed for c in report.validation.checks if c.name == "gate_probe"] == [True]
    assert points_at(redis_client, "live") == "idx_v2"
    assert redis_client.hget("new:3", "title") == b"written during try 2"
    _targets_right(redis_client)
    assert RunState.load(tmp_path / "b").phase == "done"


def test_when_every_try_fails_the_alias_stays_on_the_source_and_the_same_command_resumes(
        redis_client, redis_url, tmp_path, notify):
    make_hash_index(redis_client, n=150, dims=8, ttl_every=7)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    source = dumps(redis_client, "doc:*")
    plan = copy_plan(redis_client)
    probe = GateProbe(redis_client, fail_first=99)
    report = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=50,
                        accept_data_loss=True, plugins=[probe])
    assert not report.succeeded and report.result == "failed", report.to_yaml()
    # GATE_TRIES tries while forwarding went on, then one with forwarding held: the write
    # made during the last one was not carried over while it ran
    assert probe.carried == [True] * GATE_TRIES + [False]
    assert report.online["gate_tries"] == GATE_TRIES + 1
    errors = [e for e in Journal(tmp_path / "b", 0).events() if e["event"] == "error"]
    assert errors[-1]["gate_tries"] == GATE_TRIES + 1
    assert "gate_probe" in errors[-1]["message"]
    # the alias stays on the source; rvlm wrote no source key (only the probe's doc:3)
    assert points_at(redis_client, "live") == "idx"
    after = dumps(redis_client, "doc:*")
    assert {k: v for k, v in after.items() if k != b"doc:3"} \
        == {k: v for k, v in source.items() if k != b"doc:3"}
    assert redis_client.hget("doc:3", "t") == f"written during try {GATE_TRIES + 1}".encode()
    assert not RunState.load(tmp_path / "b").reached("alias_moved")
    assert any(f"re-run the same command to validate again, or 'rvlm rollback --backup-dir "
               f"{tmp_path / 'b'}'" in a for a in report.manual_actions), report.manual_actions
    # the same command resumes: the change the held try made is carried over, it cuts over
    probe = GateProbe(redis_client, fail_first=0)
    again = apply_plan(redis_url, plan, backup_dir=tmp_path / "b", batch_size=50,
                       accept_data_loss=True, plugins=[probe])
    assert again.succeeded, again.to_yaml()
    assert again.online["gate_tries"] == 1 and probe.carried == [True]
    assert points_at(redis_client, "live") == "idx_v2"
    _targets_right(redis_client)
