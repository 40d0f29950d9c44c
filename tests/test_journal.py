"""The journal: events survive, a torn last line is ignored, damage in the middle is refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rvlm.core.storage.files import BackupBusy, BackupCorrupt
from rvlm.core.storage.journal import PHASES, Journal, RunState


def test_events_round_trip_and_helpers(tmp_path: Path) -> None:
    with Journal(tmp_path, 0) as j:
        assert j.events() == []
        assert j.phase() is None
        j.append("phase", value="planned")
        j.append("phase", value="transforming")
        j.append("batch_started", batch=0)
        j.append("batch_done", batch=0)
        j.append("batch_started", batch=1)
        j.append("error", message="connection reset", key="doc:ключ")
    j2 = Journal(tmp_path, 0)  # a fresh reader sees the same thing
    events = j2.events()
    assert [e["event"] for e in events] == [
        "phase",
        "phase",
        "batch_started",
        "batch_done",
        "batch_started",
        "error",
    ]
    assert events[-1]["key"] == "doc:ключ"
    assert all(e["worker"] == 0 and isinstance(e["ts"], float) for e in events)
    assert j2.phase() == "transforming"
    assert j2.batches_started() == {0, 1}
    assert j2.batches_done() == {0}


def test_every_line_is_plain_json_with_a_crc(tmp_path: Path) -> None:
    with Journal(tmp_path, 3) as j:
        j.append("batch_done", batch=7)
    (line,) = (tmp_path / "journal-3.jsonl").read_text().splitlines()
    doc = json.loads(line)
    assert set(doc) == {"crc", "rec"}
    assert doc["rec"]["event"] == "batch_done" and doc["rec"]["batch"] == 7


def test_bad_events_are_refused(tmp_path: Path) -> None:
    j = Journal(tmp_path, 0)
    with pytest.raises(ValueError, match="unknown journal event"):
        j.append("batch_skipped", batch=1)
    with pytest.raises(ValueError, match="unknown phase"):
        j.append("phase", value="almost_done")
    with pytest.raises(ValueError, match="batch"):
        j.append("batch_done", batch="3")
    with pytest.raises(ValueError, match="reserved"):
        j.append("batch_done", batch=3, ts=1.0)
    with pytest.raises(ValueError):
        j.append("error", message="x", value=float("nan"))
    assert set(PHASES) >= {"planned", "done", "rolled_back", "failed"}
    assert not (tmp_path / "journal-0.jsonl").exists() or j.events() == []


@pytest.mark.parametrize("cut", [1, 10, 40])
def test_torn_last_line_is_ignored_then_cut_off(tmp_path: Path, cut: int) -> None:
    with Journal(tmp_path, 0) as j:
        j.append("batch_started", batch=0)
        j.append("batch_done", batch=0)
        j.append("batch_started", batch=1)
    path = tmp_path / "journal-0.jsonl"
    os.truncate(path, path.stat().st_size - cut)  # crash while writing the last line
    j = Journal(tmp_path, 0)
    assert j.batches_started() == {0}
    assert j.batches_done() == {0}
    assert j.torn_tail
    with j:
        j.append("batch_started", batch=1)  # resume: the torn bytes are cut first
        j.append("batch_done", batch=1)
    assert Journal(tmp_path, 0).batches_done() == {0, 1}
    assert len(path.read_text().splitlines()) == 4


def test_zero_filled_tail_is_ignored(tmp_path: Path) -> None:
    with Journal(tmp_path, 0) as j:
        j.append("batch_done", batch=0)
    path = tmp_path / "journal-0.jsonl"
    with open(path, "ab") as f:
        f.write(b"\x00" * 100)
    with Journal(tmp_path, 0) as j:
        assert j.batches_done() == {0}
        j.append("batch_done", batch=1)
    assert Journal(tmp_path, 0).batches_done() == {0, 1}


def test_damaged_middle_line_is_refused(tmp_path: Path) -> None:
    with Journal(tmp_path, 0) as j:
        for b in range(3):
            j.append("batch_done", batch=b)
    path = tmp_path / "journal-0.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"batch":1', b'"batch":7')  # still valid JSON, wrong crc
    path.write_bytes(b"".join(lines))
    with pytest.raises(BackupCorrupt, match=r"journal-0\.jsonl: line 2 .*damaged"):
        Journal(tmp_path, 0).events()
    with pytest.raises(BackupCorrupt), Journal(tmp_path, 0) as j:
        j.append("batch_done", batch=3)  # never appends after damage
    with pytest.raises(BackupCorrupt):
        RunState.load(tmp_path)


def test_second_writer_is_refused(tmp_path: Path) -> None:
    with Journal(tmp_path, 0) as a, Journal(tmp_path, 0) as b:
        a.append("batch_done", batch=0)
        with pytest.raises(BackupBusy):
            b.append("batch_done", batch=1)


def test_run_state_across_workers(tmp_path: Path) -> None:
    with Journal(tmp_path, 0) as coord, Journal(tmp_path, 1) as w1, Journal(tmp_path, 2) as w2:
        coord.append("phase", value="keys_enumerated")
        coord.append("phase", value="transforming")
        w1.append("batch_started", batch=1)
        w1.append("batch_done", batch=1)
        w1.append("batch_started", batch=3)
        w2.append("batch_started", batch=2)
        w2.append("error", message="timeout")
    (tmp_path / "journal-x.jsonl").write_text("not a worker journal")
    state = RunState.load(tmp_path)
    assert state.phase == "transforming"
    assert state.done == {1}
    assert state.started_not_done == {2, 3}
    assert state.started == {1, 2, 3}
    assert [e["message"] for e in state.errors] == ["timeout"]
    assert state.workers == (0, 1, 2)


def test_run_state_of_empty_directory(tmp_path: Path) -> None:
    state = RunState.load(tmp_path)
    assert state.phase is None and not state.done and not state.started_not_done


def test_every_crash_point_gives_a_prefix_of_the_events(tmp_path: Path) -> None:
    with Journal(tmp_path, 0) as j:
        written = [j.append("batch_started", batch=b) for b in range(3)]
    path = tmp_path / "journal-0.jsonl"
    full = path.read_bytes()
    for cut in range(len(full) + 1):
        path.write_bytes(full[:cut])
        got = Journal(tmp_path, 0).events()
        assert got == written[: len(got)]
        assert len(got) == full[:cut].count(b"\n")
