"""The backup data files and manifest: exact round trips, crash recovery, refusal of damage."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rvlm.core.storage.backup import frames, writer
from rvlm.core.storage.backup.manifest import read_manifest, write_manifest
from rvlm.core.storage.backup.reader import BackupReader
from rvlm.core.storage.backup.records import (
    BackupRecord,
    FieldOriginal,
    Written,
    decode_records,
    decode_written,
    encode_records,
    raw_record,
    trusted_written,
)
from rvlm.core.storage.backup.writer import BackupWriter
from rvlm.core.storage.files import BackupBusy, BackupCorrupt

FP = "plan-sha256:0123abcd"

fields_st = st.builds(
    FieldOriginal, name=st.binary(max_size=20), value=st.none() | st.binary(max_size=60)
)
records_st = st.builds(
    BackupRecord,
    key=st.binary(max_size=30),
    new_key=st.none() | st.binary(max_size=30),
    fields=st.lists(fields_st, max_size=4).map(tuple),
    ttl_ms=st.none() | st.integers(0, 2**63 - 1),
    replaced=st.booleans(),
)


def rec(i: int, **kw: object) -> BackupRecord:
    base: dict[str, object] = {
        "key": b"doc:%d" % i,
        "new_key": None,
        "fields": (FieldOriginal(b"title", b"t%d" % i), FieldOriginal(b"$.v", None)),
    }
    base.update(kw)
    return BackupRecord(**base)  # type: ignore[arg-type]


def write_batches(
    directory: Path, n: int, worker: int = 0, per: int = 3
) -> dict[int, list[BackupRecord]]:
    written = {}
    with BackupWriter(directory, worker, FP) as w:
        for b in range(n):
            batch_no = b * 10 + worker  # workers own distinct batch numbers
            records = [rec(batch_no * 100 + i) for i in range(per)]
            w.append_batch(batch_no, records)
            written[batch_no] = records
    return written


def frame_offsets(path: Path) -> list[int]:
    with open(path, "rb") as f:
        scan = frames.scan_file(path, f.fileno(), None, None)
    return [fr.offset for fr in scan.frames]


# --------------------------------------------------------------------------- round trips


@settings(max_examples=100, deadline=None)
@given(records=st.lists(records_st, max_size=8))
def test_records_encode_decode_exactly(records: list[BackupRecord]) -> None:
    assert decode_records(encode_records(records), len(records)) == records


#: names tuples shared by many records, as the executor's records of one pattern share them
SHARED_NAMES = [(), (b"a",), (b"a", b"bb"), (b"", b"x" * 40)]


@settings(max_examples=100, deadline=None)
@given(records=st.lists(st.tuples(records_st, st.none() | st.tuples(
    st.binary(min_size=8, max_size=8), st.sampled_from(range(len(SHARED_NAMES))))),
    max_size=12))
def test_raw_records_sharing_names_and_absent_fields_encode_exactly(
        records: list[tuple[BackupRecord, tuple[bytes, int] | None]]) -> None:
    """The executor's raw tuples, whose digests' names tuples (and absent fields' names) are
    shared between records, decode to the records they stand for: the encoder's per-batch
    reuse of a names block or an absent field's bytes never mixes two records up."""
    built = [attrs.evolve(r, written=None if w is None else trusted_written(
        w[0], SHARED_NAMES[w[1]])) for r, w in records]
    raw = [raw_record(r) for r in built]
    assert decode_records(encode_records(raw), len(raw)) == built
    assert encode_records(raw) == encode_records(built)


@settings(max_examples=15, deadline=None)
@given(batches=st.lists(st.lists(records_st, max_size=5), min_size=1, max_size=5))
def test_records_round_trip_through_files(batches: list[list[BackupRecord]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        directory = Path(d)
        with BackupWriter(directory, 0, FP) as w:
            for i, records in enumerate(batches):
                w.append_batch(i, records)
        reader = BackupReader(directory, FP)
        assert list(reader.batches()) == list(enumerate(batches))
        assert all(reader.batch(i) == records for i, records in enumerate(batches))


def test_odd_values_round_trip(tmp_path: Path) -> None:
    records = [
        BackupRecord(b"", b"", (), 0),
        BackupRecord(b"\x00\xff", b"new:\x00", (FieldOriginal(b"", b""),), None),
        BackupRecord("ключ😀".encode(), None, (FieldOriginal(b"vec", os.urandom(3072)),), 12345),
        BackupRecord(b"k", None, [FieldOriginal(b"gone", None)]),  # list converted to tuple
    ]
    with BackupWriter(tmp_path, 0, FP) as w:
        w.append_batch(0, records)
    assert BackupReader(tmp_path).batch(0) == records


def test_replaced_flag_is_bit_2_and_unknown_bits_are_refused() -> None:
    whole = BackupRecord(b"k", None, (FieldOriginal(b"a", b"1"),), 5, replaced=True)
    payload = encode_records([whole])
    assert payload[4] == 0b110  # flags byte: ttl present, replaced
    assert decode_records(payload, 1) == [whole]
    assert decode_records(encode_records([rec(1)]), 1)[0].replaced is False
    for bit in (16, 32, 128):
        bad = payload[:4] + bytes([payload[4] | bit]) + payload[5:]
        with pytest.raises(ValueError, match="unknown record flags"):
            decode_records(bad, 1)
    with pytest.raises(TypeError):
        BackupRecord(b"k", None, (), None, replaced=1)  # type: ignore[arg-type]


def test_written_digest_is_bit_3_and_round_trips() -> None:
    """Format version 2: a record may carry the digest of what the migration wrote, and the
    names it covers; the lean decoder reads it without the originals."""
    w = Written(b"\x01" * 8, (b"title", b"$.a.b"))
    r = BackupRecord(b"k", b"k2", (FieldOriginal(b"a", b"1"), FieldOriginal(b"b", None)), 7,
                     written=w)
    payload = encode_records([r, rec(2)])
    assert payload[4] & 8
    assert decode_records(payload, 2) == [r, rec(2)]
    assert decode_written(payload, 2) == [(b"k", b"k2", False, w), (rec(2).key, rec(2).new_key,
                                                                      False, None)]
    raw = (b"k", b"k2", ((b"a", b"1"), (b"b", None)), 7, False, w)
    assert encode_records([raw]) == encode_records([r])
    with pytest.raises(ValueError):
        Written(b"short")
    with pytest.raises(ValueError):
        decode_written(payload[:-3], 2)


def test_record_types_are_checked() -> None:
    with pytest.raises(TypeError, match="key must be bytes"):
        BackupRecord("doc:1", None, ())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="field value must be bytes"):
        FieldOriginal(b"f", "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl_ms"):
        BackupRecord(b"k", None, (), ttl_ms=-1)
    with pytest.raises(TypeError):
        BackupRecord(b"k", None, (b"not a field",))  # type: ignore[arg-type]


def test_multiple_workers_and_rollback_order(tmp_path: Path) -> None:
    w0 = write_batches(tmp_path, 3, worker=0)
    w1 = write_batches(tmp_path, 2, worker=1)
    reader = BackupReader(tmp_path, FP)
    everything = {**w0, **w1}
    assert reader.batch_numbers() == sorted(everything)
    assert dict(reader.batches()) == everything
    rev = list(reader.reversed_batches())
    assert [b for b, _ in rev] == sorted(everything, reverse=True)
    assert all(records == everything[b][::-1] for b, records in rev)
    stats = reader.stats()
    assert stats["files"] == 2
    assert stats["batches"] == 5
    assert stats["records"] == 15
    assert stats["bytes"] == sum(p.stat().st_size for p in tmp_path.glob("data-*.rvb"))
    assert reader.verify() == stats


def test_reopen_appends_after_committed_batches(tmp_path: Path) -> None:
    with BackupWriter(tmp_path, 0, FP) as w:
        w.append_batch(0, [rec(0)])
    with BackupWriter(tmp_path, 0, FP) as w:
        assert w.recovered_tail is None
        assert w.committed_batches() == {0}
        w.append_batch(1, [rec(1)])
    assert dict(BackupReader(tmp_path).batches()) == {0: [rec(0)], 1: [rec(1)]}


def test_a_batch_is_never_backed_up_twice(tmp_path: Path) -> None:
    with BackupWriter(tmp_path, 0, FP) as w:
        w.append_batch(4, [rec(0)])
        with pytest.raises(ValueError, match="already backed up"):
            w.append_batch(4, [rec(99)])
    with BackupWriter(tmp_path, 0, FP) as w, pytest.raises(ValueError, match="already"):
        w.append_batch(4, [rec(99)])
    assert BackupReader(tmp_path).batch(4) == [rec(0)]


def test_missing_batch_is_a_key_error(tmp_path: Path) -> None:
    write_batches(tmp_path, 1)
    with pytest.raises(KeyError):
        BackupReader(tmp_path).batch(12345)


def test_opening_a_large_backup_keeps_it_out_of_resident_memory(tmp_path: Path) -> None:
    """Opening a backup (the apply's verification pass, resume, rollback) reads its frame
    headers without mapping the file: a 1M-document apply's peak RSS was 202 MB, about 120 MB
    of it the pages the kernel maps around each of 2,000 frame headers of a mapped 600 MB
    backup. Here 200 frames of 300 KB (60 MB): opening it in a fresh process must not raise
    its peak RSS by more than 6 MB (the mapped scan raised it by 13 MB, 64 KiB a header)."""
    value = os.urandom(300_000)
    with BackupWriter(tmp_path, 0, FP) as w:
        for b in range(200):
            w.append_batch(b, [rec(b, fields=(FieldOriginal(b"embedding", value),))])
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from rvlm.core.storage.backup.reader import BackupReader\n"
        "def status(name):\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith(name + ':'): return int(line.split()[1])\n"
        "open('/proc/self/clear_refs', 'w').write('5')  # the peak starts again from now\n"
        "before = status('VmRSS')\n"
        "r = BackupReader(Path(sys.argv[1]), sys.argv[2])\n"
        "assert r.batch_numbers() == list(range(200))\n"
        "print(status('VmHWM') - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path), FP], check=True,
                         capture_output=True, text=True)
    grew_kb = int(out.stdout.strip())
    assert grew_kb < 6 * 1024, f"opening the backup raised peak RSS by {grew_kb} KB"


def test_second_writer_for_same_worker_is_refused(tmp_path: Path) -> None:
    with BackupWriter(tmp_path, 0, FP), pytest.raises(BackupBusy):
        BackupWriter(tmp_path, 0, FP)


def test_append_is_fast_for_500_vectors(tmp_path: Path) -> None:
    records = [rec(i, fields=(FieldOriginal(b"embedding", os.urandom(3072)),)) for i in range(500)]
    t = time.perf_counter()
    payload = encode_records(records)
    elapsed = time.perf_counter() - t
    assert len(payload) > 500 * 3072
    assert elapsed < 0.05, f"encoding 500 x 3 KB took {elapsed * 1000:.1f} ms"
    with BackupWriter(tmp_path, 0, FP) as w:
        w.append_batch(0, records)
    assert BackupReader(tmp_path).batch(0) == records


def test_failed_append_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with BackupWriter(tmp_path, 0, FP) as w:
        w.append_batch(0, [rec(0)])
        size = w.path.stat().st_size
        real_fsync = os.fsync
        calls = {"n": 0}

        def failing_fsync(fd: int) -> None:
            calls["n"] += 1
            if calls["n"] == 1:
                raise OSError(28, "No space left on device")
            real_fsync(fd)

        monkeypatch.setattr(writer.os, "fsync", failing_fsync)
        with pytest.raises(OSError, match="No space"):
            w.append_batch(1, [rec(1)])
        monkeypatch.setattr(writer.os, "fsync", real_fsync)
        assert w.path.stat().st_size == size
        assert w.committed_batches() == {0}
        w.append_batch(1, [rec(1)])
    reader = BackupReader(tmp_path, strict=True)
    assert dict(reader.batches()) == {0: [rec(0)], 1: [rec(1)]}


# --------------------------------------------------------------------------- damage


def test_flipped_byte_in_committed_batch_is_refused(tmp_path: Path) -> None:
    write_batches(tmp_path, 3)
    path = tmp_path / "data-0.rvb"
    offsets = frame_offsets(path)
    data = bytearray(path.read_bytes())
    data[offsets[1] + 40] ^= 0x20  # inside batch 10's payload
    path.write_bytes(bytes(data))
    reader = BackupReader(tmp_path, FP)
    assert reader.batch(0) == [rec(0), rec(1), rec(2)]  # undamaged batches still readable
    with pytest.raises(
        BackupCorrupt, match=r"data-0\.rvb: batch 10 at offset \d+: checksum mismatch"
    ):
        reader.batch(10)
    with pytest.raises(BackupCorrupt, match=r"data-0\.rvb"):
        list(reader.batches())
    with pytest.raises(BackupCorrupt, match=r"data-0\.rvb"):
        list(reader.reversed_batches())
    with pytest.raises(BackupCorrupt):
        reader.verify()


@pytest.mark.parametrize("where", [4, 8, 12, 20])  # length, crc, batch number, record count
def test_flipped_byte_in_a_middle_frame_header_is_refused_not_truncated(
    tmp_path: Path, where: int
) -> None:
    write_batches(tmp_path, 3)
    path = tmp_path / "data-0.rvb"
    offsets = frame_offsets(path)
    data = bytearray(path.read_bytes())
    data[offsets[1] + where] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(
        BackupCorrupt, match=rf"data-0\.rvb: damaged frame header at offset {offsets[1]}"
    ):
        BackupReader(tmp_path)
    with pytest.raises(BackupCorrupt, match="damaged frame header"):
        BackupWriter(tmp_path, 0, FP)  # the writer must not "repair" this by truncating
    assert path.read_bytes() == bytes(data)


def simulate_crash_mid_append(path: Path, keep: int) -> int:
    """Cut the last frame of ``path`` to its first ``keep`` bytes; return that frame's offset."""
    last = frame_offsets(path)[-1]
    os.truncate(path, last + keep)
    return last


@pytest.mark.parametrize("keep", [1, 27, 28, 29, 200])
def test_torn_tail_is_recovered_by_the_writer(
    tmp_path: Path, keep: int, caplog: pytest.LogCaptureFixture
) -> None:
    written = write_batches(tmp_path, 4)  # batches 0, 10, 20, 30
    path = tmp_path / "data-0.rvb"
    torn_at = simulate_crash_mid_append(path, keep)

    with pytest.raises(
        BackupCorrupt, match=r"incomplete batch.* at end of data-0\.rvb \(crash during write\?\)"
    ):
        BackupReader(tmp_path, FP, strict=True)
    with caplog.at_level(logging.DEBUG, logger="rvlm.core.storage.backup.reader"):
        lenient = BackupReader(tmp_path, FP)
    assert "crash during write" in caplog.text  # the caller decides (require): debug only
    assert lenient.batch_numbers() == [0, 10, 20]
    assert len(lenient.torn_tails) == 1

    with BackupWriter(tmp_path, 0, FP) as w:
        assert w.recovered_tail is not None
        assert w.recovered_tail.offset == torn_at
        assert w.committed_batches() == {0, 10, 20}
        w.append_batch(30, written[30])  # the executor redoes the batch that never started
        w.append_batch(40, [rec(4000)])
    assert (tmp_path / f"data-0.rvb.torn-{torn_at}").stat().st_size == keep
    reader = BackupReader(tmp_path, FP, strict=True)
    assert dict(reader.batches()) == {**written, 40: [rec(4000)]}


def test_zero_filled_tail_is_a_torn_tail(tmp_path: Path) -> None:
    written = write_batches(tmp_path, 2)
    path = tmp_path / "data-0.rvb"
    with open(path, "ab") as f:
        f.write(b"\x00" * 4096)  # size reached the disk, data did not
    with BackupWriter(tmp_path, 0, FP) as w:
        assert w.recovered_tail is not None
        assert w.committed_batches() == set(written)
    assert dict(BackupReader(tmp_path, strict=True).batches()) == written


def test_full_size_last_frame_with_bad_payload_is_treated_as_torn(tmp_path: Path) -> None:
    written = write_batches(tmp_path, 3)
    path = tmp_path / "data-0.rvb"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BackupCorrupt, match=r"incomplete batch 20 at end"):
        BackupReader(tmp_path, strict=True)
    with BackupWriter(tmp_path, 0, FP) as w:
        assert w.recovered_tail is not None and w.recovered_tail.batch == 20
        assert w.committed_batches() == {0, 10}
    assert dict(BackupReader(tmp_path).batches()) == {0: written[0], 10: written[10]}


def test_wrong_plan_fingerprint_is_refused(tmp_path: Path) -> None:
    write_batches(tmp_path, 1)
    with pytest.raises(BackupCorrupt, match=r"data-0\.rvb.*foreign plan"):
        BackupReader(tmp_path, "another-plan")
    with pytest.raises(BackupCorrupt, match="foreign plan"):
        BackupWriter(tmp_path, 0, "another-plan")
    with BackupWriter(tmp_path, 1, "another-plan") as w:
        w.append_batch(1, [rec(1)])
    with pytest.raises(BackupCorrupt, match=r"data-1\.rvb.*foreign plan"):
        BackupReader(tmp_path)  # files of two plans in one directory


def test_unknown_version_and_bad_header_are_refused(tmp_path: Path) -> None:
    write_batches(tmp_path, 1)
    path = tmp_path / "data-0.rvb"
    good = path.read_bytes()
    path.write_bytes(good[:8] + (3).to_bytes(2, "little") + good[10:])
    with pytest.raises(BackupCorrupt, match=r"data-0\.rvb: unknown backup format version 3"):
        BackupReader(tmp_path)
    path.write_bytes(good[:20] + bytes([good[20] ^ 1]) + good[21:])  # inside the fingerprint
    with pytest.raises(BackupCorrupt, match="header checksum mismatch"):
        BackupReader(tmp_path)
    path.write_bytes(b"PK\x03\x04" + good[4:])
    with pytest.raises(BackupCorrupt, match="not an rvlm backup file"):
        BackupReader(tmp_path)
    path.write_bytes(good[:10])
    with pytest.raises(BackupCorrupt, match="truncated file header"):
        BackupReader(tmp_path)


def test_file_renamed_to_another_worker_is_refused(tmp_path: Path) -> None:
    write_batches(tmp_path, 1)
    (tmp_path / "data-0.rvb").rename(tmp_path / "data-3.rvb")
    with pytest.raises(BackupCorrupt, match="worker 0, file name says 3"):
        BackupReader(tmp_path)


def test_same_batch_in_two_files(tmp_path: Path) -> None:
    with BackupWriter(tmp_path, 0, FP) as w:
        w.append_batch(7, [rec(7)])
    with BackupWriter(tmp_path, 1, FP) as w:
        w.append_batch(7, [rec(7)])  # identical originals: harmless
    assert dict(BackupReader(tmp_path).batches()) == {7: [rec(7)]}
    with BackupWriter(tmp_path, 2, FP) as w:
        w.append_batch(7, [rec(8)])
    with pytest.raises(BackupCorrupt, match="batch 7 appears twice with different contents"):
        BackupReader(tmp_path)


def test_no_executable_formats() -> None:
    package = Path(frames.__file__).parent
    source = "".join(p.read_text() for p in sorted(package.glob("*.py")))
    assert "pickle" not in source.replace("Never pickle", "").replace("pickles", "")
    assert "marshal" not in source


# --------------------------------------------------------------------------- manifest


def test_manifest_round_trip_and_replace(tmp_path: Path) -> None:
    m = {
        "index": "products",
        "plan": {"fingerprint": FP, "steps": [1, 2.5, None, "ß"]},
        "workers": 2,
    }
    write_manifest(tmp_path, m)
    assert read_manifest(tmp_path) == m
    write_manifest(tmp_path, {**m, "workers": 3})
    assert read_manifest(tmp_path)["workers"] == 3
    doc = json.loads((tmp_path / "manifest.json").read_text())
    assert doc["version"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_leftover_manifest_temp_file_is_harmless(tmp_path: Path) -> None:
    write_manifest(tmp_path, {"a": 1})
    (tmp_path / ".manifest.json.999.tmp").write_text('{"half-writt')  # crash before replace
    (tmp_path / f".manifest.json.{os.getpid()}.tmp").write_text("junk")
    assert read_manifest(tmp_path) == {"a": 1}
    write_manifest(tmp_path, {"a": 2})
    assert read_manifest(tmp_path) == {"a": 2}


def test_bad_manifests_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BackupCorrupt, match="manifest missing"):
        read_manifest(tmp_path)
    path = tmp_path / "manifest.json"
    path.write_text('{"format": "rvlm-backup-manifest", "version": 1, "manif')
    with pytest.raises(BackupCorrupt, match="not valid JSON"):
        read_manifest(tmp_path)
    write_manifest(tmp_path, {"a": 1})
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "version": 99}))
    with pytest.raises(BackupCorrupt, match="unknown manifest version 99"):
        read_manifest(tmp_path)
    path.write_text(json.dumps({**doc, "manifest": {"a": 2}}))
    with pytest.raises(BackupCorrupt, match="checksum mismatch"):
        read_manifest(tmp_path)
    with pytest.raises(TypeError):
        write_manifest(tmp_path, ["not", "a", "dict"])  # type: ignore[arg-type]


def test_every_crash_point_gives_a_prefix_of_the_batches(tmp_path: Path) -> None:
    written = write_batches(tmp_path, 3, per=2)
    path = tmp_path / "data-0.rvb"
    full = path.read_bytes()
    header_len = frame_offsets(path)[0]
    order = sorted(written)
    for cut in range(header_len, len(full) + 1):
        path.write_bytes(full[:cut])
        got = dict(BackupReader(tmp_path, FP).batches())
        assert list(got) == order[: len(got)]
        assert all(got[b] == written[b] for b in got)
        if cut % 29 == 0 or cut == len(full):
            with BackupWriter(tmp_path, 0, FP) as w:
                assert w.committed_batches() == set(got)
            assert BackupReader(tmp_path, FP, strict=True).batch_numbers() == list(got)
