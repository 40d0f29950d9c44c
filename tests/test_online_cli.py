"""The online copy from the command line: plan with --target-prefix, the refusals (a prefix
that overlaps, not enough memory, notifications that cannot be turned on), a critical load
that stops the run cleanly, resume, finalize, and 'rvlm ctl' without a running apply."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import yaml
from online_helpers import (
    GateProbe,
    contents,
    dumps,
    points_at,
    renamed_quantized,
    wait_spilled,
)
from test_apply_helpers import make_hash_index
from typer.testing import CliRunner

import rvlm.core.migrate.online.blue_green as blue_green_module
import rvlm.core.migrate.online.finalize as finalize_module
from rvlm.cli.main import app
from rvlm.core.errors import MigrationFailed
from rvlm.core.migrate.online.blue_green import GATE_TRIES
from rvlm.core.migrate.online.control import read_status, send
from rvlm.core.migrate.plan import Plan
from rvlm.core.plugins.host import registered
from rvlm.core.redis.notify import read_setting

runner = CliRunner()
PATCH = """version: 1
changes:
  index: {name: idx_v2}
  rename_fields: [{old_name: t, new_name: title}]
  update_fields: [{name: v, attrs: {datatype: float16}}]
"""


@pytest.fixture
def setup(redis_client, tmp_path):
    before = read_setting(redis_client)
    redis_client.config_set("notify-keyspace-events", "")
    make_hash_index(redis_client, n=200, dims=8, ttl_every=9)
    redis_client.execute_command("FT.ALIASADD", "live", "idx")
    (tmp_path / "patch.yaml").write_text(PATCH)
    yield
    redis_client.config_set("notify-keyspace-events", before)


def plan_cli(tmp_path, url: str, *extra: str):
    return runner.invoke(app, ["plan", "--index", "idx", "--schema-patch",
                               str(tmp_path / "patch.yaml"), "--mode", "online", "--alias",
                               "live", "--url", url, "--plan-out", str(tmp_path / "plan.yaml"),
                               *extra])


def apply_cli(tmp_path, url: str, *extra: str):
    return runner.invoke(app, ["apply", "--plan", str(tmp_path / "plan.yaml"), "--backup-dir",
                               str(tmp_path / "b"), "--url", url, "--accept-data-loss", "-y",
                               *extra])


def test_plan_blocks_a_kept_or_overlapping_prefix_with_the_remedy(redis_url, tmp_path, setup):
    res = plan_cli(tmp_path, redis_url)
    assert res.exit_code == 1, res.output
    assert "--target-prefix doc_v2:" in " ".join(res.output.split())
    res = plan_cli(tmp_path, redis_url, "--target-prefix", "doc:v2:")
    assert res.exit_code == 1
    assert "overlap" in " ".join(res.output.split())
    res = plan_cli(tmp_path, redis_url, "--target-prefix", "{prefix}_v2:")
    assert res.exit_code == 0, res.output
    assert Plan.load(tmp_path / "plan.yaml").target_schema.index.prefix == ("doc_v2:",)


def test_plan_blocks_when_maxmemory_cannot_hold_the_copy(redis_client, redis_url, tmp_path,
                                                         setup):
    used = int(redis_client.info("memory")["used_memory"])
    try:
        # no headroom at all: used_memory moves by tens of kB between this read and the
        # plan's (seen: 80 kB freed), less than the ~100 kB the copy needs
        redis_client.config_set("maxmemory", used)
        res = plan_cli(tmp_path, redis_url, "--target-prefix", "new:")
    finally:
        redis_client.config_set("maxmemory", 0)
    assert res.exit_code == 1, res.output
    assert "the server cannot hold the online copy" in " ".join(res.output.split())


def test_critical_load_stops_cleanly_and_the_same_command_resumes(redis_client, redis_url,
                                                                  tmp_path, setup):
    assert plan_cli(tmp_path, redis_url, "--target-prefix", "new:").exit_code == 0
    source = dumps(redis_client, "doc:*")
    for bad, why in (("used_memory=lots", "is not FIELD=NUMBER"),
                     ("used_mem=1gb", "the server's INFO has no field 'used_mem'")):
        res = apply_cli(tmp_path, redis_url, "--max-load", bad)
        assert res.exit_code == 2 and why in res.output, res.output
    res = apply_cli(tmp_path, redis_url, "--critical-load", "connected_clients=1")
    assert res.exit_code == 1, res.output
    out = " ".join(res.output.split())
    assert "critical-load reached (connected_clients=" in out and "stopped cleanly" in out
    assert "keeps serving and was not modified" in out
    assert points_at(redis_client, "live") == "idx"
    assert dumps(redis_client, "doc:*") == source
    res = apply_cli(tmp_path, redis_url, "--max-load", "used_memory=100gb")
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "copied 200 to 'new:'" in out and "downtime none (online)" in out
    assert points_at(redis_client, "live") == "idx_v2"
    for k, (fields, expiry) in contents(redis_client, "doc:*").items():
        assert redis_client.hgetall(b"new:" + k[4:]) == renamed_quantized(fields)
        assert redis_client.execute_command("PEXPIRETIME", b"new:" + k[4:]) == expiry
    res = runner.invoke(app, ["ctl", "status", "--backup-dir", str(tmp_path / "b")])
    assert res.exit_code == 2 and "no online apply is running" in res.output
    res = runner.invoke(app, ["finalize", "--backup-dir", str(tmp_path / "b"), "--url",
                              redis_url, "-y"])
    assert res.exit_code == 0, res.output
    assert "source keys backed up and deleted: 200" in res.output
    assert list(redis_client.scan_iter(match="doc:*")) == []
    assert read_setting(redis_client) == ""


def test_options_of_an_online_copy_are_refused_for_other_plans(redis_url, tmp_path, setup):
    res = runner.invoke(app, ["plan", "--index", "idx", "--schema-patch",
                              str(tmp_path / "patch.yaml"), "--url", redis_url,
                              "--plan-out", str(tmp_path / "plan.yaml")])
    assert res.exit_code == 0, res.output
    res = apply_cli(tmp_path, redis_url, "--follow")
    assert res.exit_code == 2
    assert "--follow is for online plans that copy documents" in res.output
    res = apply_cli(tmp_path, redis_url, "--backlog-memory-keys", "10")
    assert res.exit_code == 2
    assert "--backlog-memory-keys is for online plans that copy documents" in res.output


def test_backlog_memory_keys_is_checked_before_anything_and_bounds_the_memory(
        redis_client, redis_url, tmp_path, setup):
    assert plan_cli(tmp_path, redis_url, "--target-prefix", "new:").exit_code == 0
    source = dumps(redis_client, "doc:*")
    for bad in ("0", "-5", "many", "1.5"):
        res = apply_cli(tmp_path, redis_url, "--backlog-memory-keys", bad)
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and "--backlog-memory-keys" in lines[0], res.output
        assert not (tmp_path / "b").exists()
        assert dumps(redis_client, "doc:*") == source and not redis_client.keys("new:*")
        assert read_setting(redis_client) == ""
    for command in (["finalize", "--backup-dir", str(tmp_path / "b")],
                    ["batch", "apply", "--plan", "p.yaml", "--backup-dir", "bb"],
                    ["batch", "resume", "--state", "s.yaml"]):
        res = runner.invoke(app, [*command, "--backlog-memory-keys", "0"])
        assert res.exit_code == 2 and "--backlog-memory-keys" in res.output, res.output
    # one key in memory: 30 source keys changed while forwarding is throttled wait in the
    # backlog, 29 of them in its spill file, and every change still reaches its target
    flag = tmp_path / "postpone"
    flag.write_text("")
    changed = [f"doc:{i}" for i in range(0, 60, 2)]
    problems: list[str] = []

    def client_side() -> None:
        try:
            deadline = time.monotonic() + 60
            while (st := read_status(tmp_path / "b")) is None or st.phase != "postponed":
                assert time.monotonic() < deadline, "the apply never reached the cut-over"
                time.sleep(0.05)
            assert send(tmp_path / "b", "throttle")
            for k in changed:
                redis_client.hset(k, "t", f"changed {k}")
            while (st := read_status(tmp_path / "b")) is None or st.backlog < len(changed):
                assert time.monotonic() < deadline, f"backlog {st and st.backlog}"
                time.sleep(0.05)
            send(tmp_path / "b", "unthrottle")
        except BaseException as exc:  # reported by the test's thread
            problems.append(repr(exc))
        finally:
            flag.unlink()

    writer = threading.Thread(target=client_side)
    writer.start()
    res = apply_cli(tmp_path, redis_url, "--backlog-memory-keys", "1",
                    "--postpone-cut-over-flag-file", str(flag),
                    "--report-out", str(tmp_path / "r.yaml"))
    writer.join(60)
    assert not problems, problems
    assert res.exit_code == 0, res.output
    online = yaml.safe_load((tmp_path / "r.yaml").read_text())["rvlm"]["online"]
    assert online["backlog_spilled_to_disk"] == len(changed) - 1, online
    assert points_at(redis_client, "live") == "idx_v2"
    for k, (fields, expiry) in contents(redis_client, "doc:*").items():
        target = (redis_client.hgetall(b"new:" + k[4:]),
                  redis_client.execute_command("PEXPIRETIME", b"new:" + k[4:]))
        assert target == (renamed_quantized(fields), expiry), k
    assert redis_client.hget("new:58", "title") == b"changed doc:58"


def test_a_gate_failing_every_try_exits_1_with_the_alias_on_the_source(
        redis_client, redis_url, tmp_path, setup):
    """The gate before the cut-over fails every try (a plugin's validate hook, installed in
    the default host like an entry point's): exit 1, the resume/rollback line, the alias on
    the source, no source key written by rvlm (the hook's doc:3 aside)."""
    assert plan_cli(tmp_path, redis_url, "--target-prefix", "new:").exit_code == 0
    source = dumps(redis_client, "doc:*")
    probe = GateProbe(redis_client, fail_first=99)
    with registered(probe):
        res = apply_cli(tmp_path, redis_url)
    assert res.exit_code == 1, res.output
    assert len(probe.carried) == GATE_TRIES + 1
    out = " ".join(res.output.split())
    assert "gate_probe" in out, out
    assert ("re-run the same command to validate again, or 'rvlm rollback --backup-dir "
            f"{tmp_path / 'b'}'") in out, out
    assert points_at(redis_client, "live") == "idx"
    assert {k: v for k, v in dumps(redis_client, "doc:*").items() if k != b"doc:3"} \
        == {k: v for k, v in source.items() if k != b"doc:3"}


def _refused_in_one_line(res) -> None:
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "--backlog-memory-keys" in lines[0], res.output


def test_finalize_takes_backlog_memory_keys_and_spilled_changes_reach_their_targets(
        redis_client, redis_url, tmp_path, setup, monkeypatch):
    assert plan_cli(tmp_path, redis_url, "--target-prefix", "new:").exit_code == 0
    res = apply_cli(tmp_path, redis_url)
    assert res.exit_code == 0, res.output
    backup = tmp_path / "b"
    source, journal = dumps(redis_client, "doc:*"), (backup / "journal-0.jsonl").read_bytes()

    def finalize(*extra: str):
        return runner.invoke(app, ["finalize", "--backup-dir", str(backup), "--url", redis_url,
                                   "-y", *extra])

    for bad in ("0", "-5", "many"):
        _refused_in_one_line(finalize("--backlog-memory-keys", bad))
        assert dumps(redis_client, "doc:*") == source
        assert (backup / "journal-0.jsonl").read_bytes() == journal
        assert not list(backup.glob("data-*.rvb")) and read_setting(redis_client) == ""
    # one key in memory: 29 source keys written while finalize holds its first batch (backed
    # up, not deleted yet) wait in the backlog, at least 27 of them in its spill file (the
    # last may arrive once forwarding drained the spill)
    changed = [f"doc:{i}".encode() for i in range(1, 200, 7)]
    real_fault = finalize_module.fault
    spilled: list[int] = []

    def client_writes(point: str, batch: int | None = None) -> None:
        if point == "finalize_backup" and not spilled:
            for k in changed:
                redis_client.hset(k, "t", b"changed " + k)
            spilled.append(wait_spilled(backup, changed))
        real_fault(point, batch)

    monkeypatch.setattr(finalize_module, "fault", client_writes)
    res = finalize("--backlog-memory-keys", "1", "--report-out", str(tmp_path / "f.yaml"))
    assert res.exit_code == 0, res.output
    assert spilled
    online = yaml.safe_load((tmp_path / "f.yaml").read_text())["rvlm"]["online"]
    assert online["backlog_spilled_to_disk"] >= len(changed) - 2, online
    assert online["deleted"] == 200 and list(redis_client.scan_iter(match="doc:*")) == []
    # every target holds its source's last state: the changes, and the rest as before
    for k, (_dump, expiry) in source.items():
        target = b"new:" + k[4:]
        fields = {n: v for n, v in redis_client.hgetall(target).items()}
        assert redis_client.execute_command("PEXPIRETIME", target) == expiry, k
        if k in changed:
            assert fields[b"title"] == b"changed " + k, k
    assert len(list(redis_client.scan_iter(match="new:*"))) == 200
    assert read_setting(redis_client) == ""


BATCH_PATCH = """version: 1
changes:
  rename_fields: [{old_name: t, new_name: title}]
  update_fields: [{name: v, attrs: {datatype: float16}}]
"""


def test_batch_apply_and_resume_take_backlog_memory_keys(redis_client, redis_url, tmp_path,
                                                          notify, monkeypatch):
    make_hash_index(redis_client, name="docs_idx", prefix="doc:", n=120, dims=8, ttl_every=9)
    make_hash_index(redis_client, name="items_idx", prefix="item:", n=80, dims=8)
    for name in ("docs_idx", "items_idx"):
        redis_client.execute_command("FT.ALIASADD", f"{name}_live", name)
    (tmp_path / "patch.yaml").write_text(BATCH_PATCH)
    res = runner.invoke(app, ["batch", "plan", "--schema-patch", str(tmp_path / "patch.yaml"),
                              "--pattern", "*_idx", "--mode", "online", "--alias",
                              "{index}_live", "--target-prefix", "{prefix}_v2:", "--url",
                              redis_url, "--plan-out", str(tmp_path / "bp.yaml")])
    assert res.exit_code == 0, res.output
    docs, items = contents(redis_client, "doc:*"), contents(redis_client, "item:*")
    state, backup = tmp_path / "state.yaml", tmp_path / "bb"

    def batch(*args: str):
        return runner.invoke(app, ["batch", *args, "--state", str(state), "--url", redis_url,
                                   "--accept-data-loss", "--report-dir", str(tmp_path / "r")])

    for bad in ("0", "-5", "many"):
        _refused_in_one_line(batch("apply", "--plan", str(tmp_path / "bp.yaml"),
                                   "--backup-dir", str(backup), "--backlog-memory-keys", bad))
        _refused_in_one_line(batch("resume", "--backlog-memory-keys", bad))
        assert not backup.exists() and not state.exists() and not (tmp_path / "r").exists()
        assert contents(redis_client, "doc:*") == docs
        assert contents(redis_client, "item:*") == items
        assert not list(redis_client.scan_iter(match="*_v2:*"))
        assert read_setting(redis_client) == ""
    # one key in memory: 20 source keys of an index written while its target indexes
    # (nothing carried over meanwhile) wait in the backlog, at least 18 of them in its spill
    # file (the last may arrive once forwarding drained the spill). batch apply: docs_idx so,
    # and items_idx stopped after its copy; batch resume: items_idx so
    real_fault = blue_green_module.fault
    spilled: dict[str, int] = {}
    stop_items = [True]

    def client_writes(point: str, batch: int | None = None) -> None:
        prefix = "item" if "doc" in spilled else "doc"
        if point == "online_after_copy" and prefix == "item" and stop_items[0]:
            stop_items[0] = False
            raise MigrationFailed("stopped by the test after the copy")
        if point == "online_after_indexed" and prefix not in spilled:
            changed = [f"{prefix}:{i}".encode() for i in range(0, 80, 4)]
            for k in changed:
                redis_client.hset(k, "t", b"changed " + k)
            spilled[prefix] = wait_spilled(backup / f"{prefix}s_idx", changed)
        real_fault(point, batch)

    monkeypatch.setattr(blue_green_module, "fault", client_writes)
    res = batch("apply", "--plan", str(tmp_path / "bp.yaml"), "--backup-dir", str(backup),
                "--backlog-memory-keys", "1")
    assert res.exit_code == 1 and "stopped by the test" in res.output, res.output
    assert set(spilled) == {"doc"}
    res = batch("resume", "--retry-failed", "--backlog-memory-keys", "1")
    assert res.exit_code == 0, res.output
    assert set(spilled) == {"doc", "item"}
    for name in ("docs_idx", "items_idx"):
        online = yaml.safe_load((tmp_path / "r" / f"{name}_report.yaml").read_text())[
            "rvlm"]["online"]
        assert online["backlog_spilled_to_disk"] >= 18, (name, online)
    assert points_at(redis_client, "docs_idx_live") == "docs_idx_v2"
    assert points_at(redis_client, "items_idx_live") == "items_idx_v2"
    for prefix, n in (("doc", 120), ("item", 80)):
        sources = contents(redis_client, f"{prefix}:*")
        assert len(sources) == n
        for k, (fields, expiry) in sources.items():
            target = f"{prefix}_v2:".encode() + k[len(prefix) + 1:]
            assert (redis_client.hgetall(target),
                    redis_client.execute_command("PEXPIRETIME", target)) \
                == (renamed_quantized(fields), expiry), k
    assert redis_client.hget("doc_v2:8", "title") == b"changed doc:8"
    assert redis_client.hget("item_v2:8", "title") == b"changed item:8"
    assert read_setting(redis_client) == ""


def test_where_config_is_refused_plan_and_apply_say_what_to_configure(
        redis_client, redis_url, tmp_path, setup):
    user = f"lim{uuid.uuid4().hex[:6]}"
    redis_client.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all",
                                 "-config")
    limited = redis_url.replace("redis://", f"redis://{user}:pw@")
    try:
        res = plan_cli(tmp_path, limited, "--target-prefix", "new:")
        assert res.exit_code == 0, res.output
        text = " ".join(res.output.split())
        assert "CONFIG is refused; set the server's notify-keyspace-events to 'Kg$hxe'" in text
        source = dumps(redis_client, "doc:*")
        res = apply_cli(tmp_path, limited)
        assert res.exit_code == 2, res.output
        assert "notify-keyspace-events to 'Kg$hxe'" in " ".join(res.output.split())
        assert dumps(redis_client, "doc:*") == source
        assert points_at(redis_client, "live") == "idx"
        # the operator configures it: the same command runs, and leaves the setting alone
        redis_client.config_set("notify-keyspace-events", "KEA")
        res = apply_cli(tmp_path, limited)
        assert res.exit_code == 0, res.output
        assert points_at(redis_client, "live") == "idx_v2"
        assert read_setting(redis_client) == "AKE"
    finally:
        redis_client.execute_command("ACL", "DELUSER", user)
