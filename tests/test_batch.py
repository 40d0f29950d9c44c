"""Batch planning (selection, skips, conflicts) and the batch executor's state machine.

The executor tests use real plans from a real server and a stand-in single-index executor
(``apply_function``) so outcomes, failures and timing are exact; the end-to-end runs against
the real executor are in ``test_batch_e2e.py``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from test_apply_helpers import reset
from test_batch_helpers import make_index, rvlm, write_patch

from rvlm.core.errors import MigrationFailed, RvlmError
from rvlm.core.migrate.plan import Plan
from rvlm.core.multi.executor import BatchMigrationExecutor
from rvlm.core.multi.plan import BatchPlan, safe_name
from rvlm.core.multi.planner import BatchMigrationPlanner
from rvlm.core.multi.state import BatchState

ADD_TAG_PATCH = """version: 1
changes:
  add_fields:
    - {name: extra, type: tag}
"""


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def resp(request: Any, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("RVLM_PROTOCOL", str(request.param))
    return int(request.param)


def _three(client: Any) -> None:
    reset(client)
    make_index(client, "a_idx", "a:", 6)
    make_index(client, "b_idx", "b:", 7, seed=1)
    make_index(client, "e_idx", "e:", 4, title=False, seed=2)


# --------------------------------------------------------------------------- planning


def test_plan_pattern_applicable_and_skipped(redis_client: Any, redis_url: str, tmp_path: Path,
                                             resp: int) -> None:
    _three(redis_client)
    patch = write_patch(tmp_path)
    planner = BatchMigrationPlanner()
    bp = planner.create_batch_plan(redis_url=redis_url, pattern="*_idx",
                                   schema_patch_path=patch)
    assert [(i.name, i.applicable) for i in bp.indexes] == [
        ("a_idx", True), ("b_idx", True), ("e_idx", False)]
    skip = bp.entry("e_idx").skip_reason or ""
    assert "no field named 'title'" in skip and "e_idx" in skip
    assert not bp.refused and bp.entry("a_idx").rewrites_documents
    assert bp.entry("a_idx").documents == 6

    out = bp.write(tmp_path / "plans" / "batch_plan.yaml")
    data = yaml.safe_load(out.read_text())
    for key in ("version", "batch_id", "mode", "shared_patch", "schema_patch_path",
                "failure_policy", "indexes", "conflicts", "created_at"):
        assert key in data
    assert data["shared_patch"]["changes"]["rename_fields"][0]["new_name"] == "headline"
    # every applicable index has its own full plan next to the batch plan, reviewable
    for e in data["indexes"][:2]:
        plan = Plan.load(out.parent / e["plan_path"])
        assert plan.supported and plan.source_index == e["name"]
        assert e["plan_path"] == f"{bp.batch_id}/{e['name']}.yaml"
    assert data["indexes"][2]["applicable"] is False
    # deterministic id; the loaded plan is the same plan
    again = planner.create_batch_plan(redis_url=redis_url, pattern="*_idx",
                                      schema_patch_path=patch)
    assert again.batch_id == bp.batch_id
    loaded = BatchPlan.load(out)
    assert loaded.fingerprint == bp.fingerprint
    assert loaded.plan_for("a_idx").fingerprint == bp.plans["a_idx"].fingerprint


def test_plan_indexes_and_file_selection(redis_client: Any, redis_url: str,
                                         tmp_path: Path) -> None:
    _three(redis_client)
    patch = write_patch(tmp_path)
    bp = BatchMigrationPlanner().create_batch_plan(
        redis_url=redis_url, indexes="b_idx, nope", schema_patch_path=patch,
        failure_policy="continue_on_error")
    assert [(i.name, i.applicable) for i in bp.indexes] == [("b_idx", True), ("nope", False)]
    assert "no index named 'nope'" in (bp.entry("nope").skip_reason or "")
    assert bp.failure_policy == "continue_on_error"
    listing = tmp_path / "names.txt"
    listing.write_text("# indexes to migrate\na_idx\n\ne_idx  # no title\n")
    bp2 = BatchMigrationPlanner().create_batch_plan(
        redis_url=redis_url, indexes_file=listing, schema_patch_path=patch)
    assert [i.name for i in bp2.indexes] == ["a_idx", "e_idx"]
    assert bp2.batch_id != bp.batch_id


def test_plan_bad_input_is_one_line(redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    _three(redis_client)
    patch = write_patch(tmp_path)
    planner = BatchMigrationPlanner()
    with pytest.raises(RvlmError, match="exactly one of"):
        planner.create_batch_plan(redis_url=redis_url, schema_patch_path=patch)
    with pytest.raises(RvlmError, match="exactly one of"):
        planner.create_batch_plan(redis_url=redis_url, schema_patch_path=patch, pattern="*",
                                  indexes="a_idx")
    with pytest.raises(RvlmError, match="failure-policy"):
        planner.create_batch_plan(redis_url=redis_url, schema_patch_path=patch, pattern="*",
                                  failure_policy="yolo")
    with pytest.raises(RvlmError, match="no index matches"):
        planner.create_batch_plan(redis_url=redis_url, schema_patch_path=patch,
                                  pattern="zzz*")
    with pytest.raises(RvlmError, match="no such file"):
        planner.create_batch_plan(redis_url=redis_url, schema_patch_path=tmp_path / "x.yaml",
                                  pattern="*")
    r = rvlm("batch", "plan", "--schema-patch", str(patch), "--pattern", "zzz*",
             "--url", redis_url, "--plan-out", str(tmp_path / "bp.yaml"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    r = rvlm("batch", "apply", "--plan", str(tmp_path / "missing.yaml"), "--backup-dir",
             str(tmp_path / "bk"), "--state", str(tmp_path / "s.yaml"))
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = rvlm("batch", "status", "--state", str(tmp_path / "nostate.yaml"))
    assert r.returncode == 2 and "no such batch state file" in r.stderr


def test_plan_refuses_overlapping_prefixes_when_documents_are_rewritten(
        redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    reset(redis_client)
    make_index(redis_client, "p_idx", "p:", 5)
    make_index(redis_client, "q_idx", "p:x:", 5, seed=3)
    make_index(redis_client, "r_idx", "r:", 5, seed=4)
    make_index(redis_client, "s_idx", "p:", 3, seed=5)
    bp = BatchMigrationPlanner().create_batch_plan(
        redis_url=redis_url, pattern="*_idx", schema_patch_path=write_patch(tmp_path))
    assert bp.refused
    pairs = {(c.kind, c.indexes) for c in bp.conflicts}
    assert pairs == {("shared_keys", ("p_idx", "q_idx")), ("shared_keys", ("p_idx", "s_idx")),
                     ("shared_keys", ("q_idx", "s_idx"))}
    by_pair = {c.indexes: c for c in bp.conflicts}
    assert set(by_pair["p_idx", "q_idx"].prefixes) == {"p:", "p:x:"}
    msg = bp.conflict_message()
    assert "p_idx and q_idx" in msg and "'p:x:'" in msg and "\n" not in msg
    with pytest.raises(RvlmError, match="refused"):
        BatchMigrationExecutor().apply(bp, redis_url=redis_url, backup_dir=tmp_path / "bk",
                                       state_path=tmp_path / "state.yaml")
    assert not (tmp_path / "state.yaml").exists()

    # the CLI writes the plan for review, then refuses with one line naming every pair
    r = rvlm("batch", "plan", "--schema-patch", str(write_patch(tmp_path)), "--pattern",
             "*_idx", "--url", redis_url, "--plan-out", str(tmp_path / "bp.yaml"))
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip()
    assert err.count("\n") == 0 and "p_idx and q_idx" in err and "q_idx and s_idx" in err
    assert (tmp_path / "bp.yaml").exists()
    r = rvlm("batch", "apply", "--plan", str(tmp_path / "bp.yaml"), "--backup-dir",
             str(tmp_path / "bk"), "--state", str(tmp_path / "s.yaml"), "--url", redis_url)
    assert r.returncode == 2 and "refused" in r.stderr

    # a patch that does not rewrite documents may cover shared keys
    ok = BatchMigrationPlanner().create_batch_plan(
        redis_url=redis_url, pattern="*_idx",
        schema_patch_path=write_patch(tmp_path, ADD_TAG_PATCH, "add.yaml"))
    assert not ok.refused and all(i.applicable for i in ok.indexes)


def test_plan_skips_index_sharing_keys_with_an_index_outside_the_batch(
        redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    reset(redis_client)
    make_index(redis_client, "p_idx", "p:", 5)
    make_index(redis_client, "other", "p:", 5, seed=3)
    bp = BatchMigrationPlanner().create_batch_plan(
        redis_url=redis_url, indexes=["p_idx"], schema_patch_path=write_patch(tmp_path))
    assert not bp.refused
    entry = bp.entry("p_idx")
    assert not entry.applicable and "other" in (entry.skip_reason or "")


def test_plan_refuses_shared_rename_and_prefix_collisions(redis_client: Any, redis_url: str,
                                                          tmp_path: Path) -> None:
    _three(redis_client)
    rename = write_patch(tmp_path, "version: 1\nchanges:\n  index: {name: merged}\n", "n.yaml")
    bp = BatchMigrationPlanner().create_batch_plan(
        redis_url=redis_url, pattern="*_idx", schema_patch_path=rename)
    assert bp.refused
    kinds = {(c.kind, c.indexes) for c in bp.conflicts}
    assert ("index_name", ("a_idx", "b_idx")) in kinds
    assert ("index_name", ("a_idx", "e_idx")) in kinds
    assert "'merged'" in bp.conflict_message()

    move = write_patch(tmp_path, "version: 1\nchanges:\n  index: {prefix: 'new:'}\n", "p.yaml")
    bp = BatchMigrationPlanner().create_batch_plan(
        redis_url=redis_url, indexes="a_idx,b_idx", schema_patch_path=move)
    assert bp.refused
    (c,) = bp.conflicts
    assert c.kind == "prefix" and c.indexes == ("a_idx", "b_idx") and c.prefixes == ("new:",)

    # moving one index into another's keyspace collides too
    into = write_patch(tmp_path, "version: 1\nchanges:\n  index: {prefix: 'b:x:'}\n", "i.yaml")
    bp = BatchMigrationPlanner().create_batch_plan(
        redis_url=redis_url, indexes="a_idx,b_idx", schema_patch_path=into)
    assert any(c.kind == "prefix" and "b:" in c.prefixes for c in bp.conflicts)


def test_safe_name() -> None:
    assert safe_name("products_idx") == "products_idx"
    odd = safe_name("a/b c")
    assert "/" not in odd and " " not in odd and odd != safe_name("a_b_c")
    assert safe_name("..") != ".." and "/" not in safe_name("../x")


# --------------------------------------------------------------------------- executor


class FakeApply:
    """Stands in for ``apply_plan``: outcome per index, optional delay, concurrency log."""

    def __init__(self, outcomes: dict[str, Any] | None = None, delay: float = 0.0,
                 meet: int = 0) -> None:
        self.outcomes = outcomes or {}
        self.delay = delay
        # meet=N: each run waits (at most 30 s) until N runs were running at once, so the
        # overlap is observed, not inferred from a wall-clock time on a loaded machine
        self.meet = meet
        self.met = threading.Event()
        self.calls: list[tuple[str, Path]] = []
        self.running: set[str] = set()
        self.together: list[set[str]] = []
        self.lock = threading.Lock()

    def __call__(self, url: str, plan: Plan, *, backup_dir: Path, **kw: Any) -> Any:
        name = plan.source_index
        with self.lock:
            self.calls.append((name, Path(backup_dir)))
            self.running.add(name)
            self.together.append(set(self.running))
            if self.meet and len(self.running) >= self.meet:
                self.met.set()
        try:
            if self.meet:
                self.met.wait(timeout=30)
            time.sleep(self.delay)
            outcome = self.outcomes.get(name, "ok")
            if isinstance(outcome, BaseException):
                raise outcome
            ok = outcome == "ok"
            return SimpleNamespace(
                result="succeeded" if ok else "failed", documents=plan.source_stats.num_docs,
                documents_rewritten=plan.source_stats.num_docs,
                error=None if ok else outcome, validation=SimpleNamespace(errors=[]),
                to_yaml=lambda: f"result: {'succeeded' if ok else 'failed'}\n")
        finally:
            with self.lock:
                self.running.discard(name)


def _batch(client: Any, url: str, tmp: Path, names: list[tuple[str, str]],
           policy: str = "fail_fast", patch: str | None = None) -> BatchPlan:
    reset(client)
    for n, (name, prefix) in enumerate(names):
        make_index(client, name, prefix, 3 + n, seed=n)
    bp = BatchMigrationPlanner().create_batch_plan(
        redis_url=url, indexes=[n for n, _ in names], failure_policy=policy,
        schema_patch_path=write_patch(tmp, patch or ADD_TAG_PATCH))
    bp.write(tmp / "batch_plan.yaml")
    return bp


FOUR = [("a_idx", "a:"), ("b_idx", "b:"), ("c_idx", "c:"), ("d_idx", "d:")]


def test_fail_fast_stops_and_resume_continues(redis_client: Any, redis_url: str,
                                              tmp_path: Path) -> None:
    bp = _batch(redis_client, redis_url, tmp_path, FOUR)
    fake = FakeApply({"b_idx": RvlmError("2 document(s) already hold a field")})
    seen: list[tuple[str, int, int, str]] = []
    state_path = tmp_path / "state.yaml"
    report = BatchMigrationExecutor(apply_function=fake).apply(
        bp, redis_url=redis_url, state_path=state_path, backup_dir=tmp_path / "bk",
        report_dir=tmp_path / "rep", progress_callback=lambda *a: seen.append(a))
    assert [c[0] for c in fake.calls] == ["a_idx", "b_idx"]
    assert fake.calls[0][1] == (tmp_path / "bk" / "a_idx").resolve()
    assert report.status == "partial_failure" and not report.succeeded
    rows = {r["name"]: r for r in report.indexes}
    assert rows["a_idx"]["result"] == "succeeded" and rows["a_idx"]["documents"] == 3
    assert rows["b_idx"]["result"] == "failed" and "already hold" in rows["b_idx"]["error"]
    assert rows["c_idx"]["result"] == "not_run" and rows["d_idx"]["result"] == "not_run"
    assert seen[:2] == [("a_idx", 1, 4, "starting"), ("a_idx", 1, 4, "succeeded")]
    assert (tmp_path / "rep" / "batch_report.yaml").exists()
    assert (tmp_path / "rep" / "a_idx_report.yaml").exists()
    state = BatchState.load(state_path)
    assert [i.status for i in state.indexes] == ["succeeded", "failed", "pending", "pending"]
    assert state.index("b_idx").refused
    raw = yaml.safe_load(state_path.read_text())  # RedisVL's views are there too
    assert raw["remaining"] == ["c_idx", "d_idx"] and raw["batch_id"] == bp.batch_id
    assert not list(tmp_path.glob(".*.tmp"))

    # resume: the pending ones run, the failed one stays failed
    fake2 = FakeApply()
    report = BatchMigrationExecutor(apply_function=fake2).resume(state_path,
                                                                 redis_url=redis_url)
    assert [c[0] for c in fake2.calls] == ["c_idx", "d_idx"]
    assert report.status == "partial_failure"
    # --retry-failed: now it succeeds
    fake3 = FakeApply()
    report = BatchMigrationExecutor(apply_function=fake3).resume(
        state_path, redis_url=redis_url, retry_failed=True)
    assert [c[0] for c in fake3.calls] == ["b_idx"]
    assert report.status == "completed" and report.succeeded
    rows = {r["name"]: r for r in report.indexes}
    assert rows["b_idx"]["attempts"] == 2 and rows["b_idx"]["resumed"]


def test_continue_on_error_and_failed_report(redis_client: Any, redis_url: str,
                                             tmp_path: Path) -> None:
    bp = _batch(redis_client, redis_url, tmp_path, FOUR, policy="continue_on_error")
    fake = FakeApply({"a_idx": "validation failed: doc_count", "c_idx": MigrationFailed("boom"),
                      "d_idx": ValueError("plugin bug")})
    report = BatchMigrationExecutor(apply_function=fake).apply(
        bp, redis_url=redis_url, state_path=tmp_path / "s.yaml", backup_dir=tmp_path / "bk")
    assert [c[0] for c in fake.calls] == ["a_idx", "b_idx", "c_idx", "d_idx"]
    rows = {r["name"]: r for r in report.indexes}
    assert rows["a_idx"]["error"] == "validation failed: doc_count"
    assert rows["c_idx"]["error"] == "boom"
    assert rows["d_idx"]["error"] == "unexpected ValueError: plugin bug"
    assert report.status == "partial_failure"
    assert (tmp_path / "reports" / "batch_report.yaml").exists()  # default: next to state

    fake = FakeApply({n: "nope" for n, _ in FOUR})
    (tmp_path / "x").mkdir()
    report = BatchMigrationExecutor(apply_function=fake).apply(
        bp, redis_url=redis_url, state_path=tmp_path / "x" / "s.yaml",
        backup_dir=tmp_path / "x" / "bk")
    assert report.status == "failed" and report.summary.failed == 4


def test_state_and_backup_dir_are_checked(redis_client: Any, redis_url: str,
                                          tmp_path: Path) -> None:
    bp = _batch(redis_client, redis_url, tmp_path, FOUR[:2])
    state_path = tmp_path / "state.yaml"
    ex = BatchMigrationExecutor(apply_function=FakeApply({"a_idx": "nope"}))
    ex.apply(bp, redis_url=redis_url, state_path=state_path, backup_dir=tmp_path / "bk")
    with pytest.raises(RvlmError, match="started with backup dir") as info:
        ex.resume(state_path, redis_url=redis_url, backup_dir=tmp_path / "other")
    assert "\n" not in str(info.value)
    with pytest.raises(RvlmError, match="started with backup dir"):
        ex.apply(bp, redis_url=redis_url, state_path=state_path, backup_dir=tmp_path / "o")
    with pytest.raises(RvlmError, match="backup dir is required"):
        ex.apply(bp, redis_url=redis_url, state_path=tmp_path / "n.yaml", backup_dir=None)
    # a state file of another batch is refused
    (tmp_path / "o2").mkdir()
    other = _batch(redis_client, redis_url, tmp_path / "o2", FOUR[1:3])
    with pytest.raises(RvlmError, match="belongs to batch"):
        ex.apply(other, redis_url=redis_url, state_path=state_path, backup_dir=tmp_path / "bk")
    # the batch plan must not change under a running batch
    plan_file = tmp_path / "batch_plan.yaml"
    plan_file.write_text(plan_file.read_text().replace("fail_fast", "continue_on_error"))
    with pytest.raises(RvlmError, match="changed"):
        ex.resume(state_path, redis_url=redis_url)
    r = rvlm("batch", "resume", "--state", str(state_path), "--backup-dir",
             str(tmp_path / "zzz"))
    assert r.returncode == 2 and "started with backup dir" in r.stderr
    assert r.stderr.strip().count("\n") == 0


def test_parallel_runs_only_disjoint_keyspaces_together(redis_client: Any, redis_url: str,
                                                        tmp_path: Path) -> None:
    names = [("a_idx", "a:"), ("ab_idx", "a:b:"), ("c_idx", "c:"), ("d_idx", "d:")]
    bp = _batch(redis_client, redis_url, tmp_path, names)
    assert not bp.refused  # the add-field patch rewrites nothing, so shared keys are fine
    # each run waits until three runs are running at once: only a parallel executor gets there
    fake = FakeApply(meet=3)
    report = BatchMigrationExecutor(apply_function=fake).apply(
        bp, redis_url=redis_url, state_path=tmp_path / "s.yaml", backup_dir=tmp_path / "bk",
        parallel=3)
    assert report.status == "completed"
    assert fake.met.is_set()  # three indexes were applied at the same time
    assert all(not {"a_idx", "ab_idx"} <= group for group in fake.together)
    assert max(len(g) for g in fake.together) == 3
    assert sorted(c[0] for c in fake.calls) == ["a_idx", "ab_idx", "c_idx", "d_idx"]


def test_lossy_plans_need_accept_data_loss(redis_client: Any, redis_url: str,
                                           tmp_path: Path) -> None:
    half = """version: 1
changes:
  update_fields:
    - {name: v, attrs: {datatype: float16}}
"""
    bp = _batch(redis_client, redis_url, tmp_path, FOUR[:2], patch=half)
    lossy = [i.name for i in bp.applicable if bp.plans[i.name].lossy]
    if not lossy:
        pytest.skip("float16 plans are not lossy in this build")
    fake = FakeApply()
    # the CLI passes --accept-data-loss as given: without it, nothing runs
    with pytest.raises(RvlmError, match="accept-data-loss"):
        BatchMigrationExecutor(apply_function=fake).apply(
            bp, redis_url=redis_url, state_path=tmp_path / "s.yaml", backup_dir=tmp_path / "b",
            accept_data_loss=False)
    assert not fake.calls and not (tmp_path / "s.yaml").exists()
    # the library applies what it is handed, like MigrationExecutor().apply
    report = BatchMigrationExecutor(apply_function=fake).apply(
        bp, redis_url=redis_url, state_path=tmp_path / "s.yaml", backup_dir=tmp_path / "b")
    assert report.status == "completed"


def test_ctrl_c_checkpoints_and_apply_again_continues(redis_client: Any, redis_url: str,
                                                      tmp_path: Path) -> None:
    bp = _batch(redis_client, redis_url, tmp_path, FOUR[:3])
    state_path = tmp_path / "s.yaml"
    ex = BatchMigrationExecutor(apply_function=FakeApply({"b_idx": KeyboardInterrupt()}))
    with pytest.raises(KeyboardInterrupt):
        ex.apply(bp, redis_url=redis_url, state_path=state_path, backup_dir=tmp_path / "bk")
    state = BatchState.load(state_path)
    assert [i.status for i in state.indexes] == ["succeeded", "in_progress", "pending"]
    assert state.status == "interrupted"
    assert BatchMigrationExecutor.status(state_path).status == "interrupted"
    report = yaml.safe_load((tmp_path / "reports" / "batch_report.yaml").read_text())
    assert [i["result"] for i in report["indexes"]] == ["succeeded", "in_progress", "not_run"]
    # the same apply again continues the batch (like resume): b first, then c
    fake = FakeApply()
    report2 = BatchMigrationExecutor(apply_function=fake).apply(
        bp, redis_url=redis_url, state_path=state_path, backup_dir=tmp_path / "bk")
    assert [c[0] for c in fake.calls] == ["b_idx", "c_idx"]
    assert report2.status == "completed"
