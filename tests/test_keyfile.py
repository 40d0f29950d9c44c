"""The key file: exact round trips, direct batch access, and refusal of damaged files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rvlm.core.storage.files import BackupCorrupt
from rvlm.core.storage.keyfile import KeyFileReader, KeyFileWriter

ODD_KEYS = [
    b"",
    b"doc:1",
    b"\x00",
    b"\x00\xff\xfe binary \n\r\t",
    "ключ:😀:多".encode(),
    b"x" * 70_000,
    b"",
    b"doc:1",  # duplicates are kept as given
]


def write_keys(path: Path, keys: list[bytes]) -> int:
    with KeyFileWriter(path) as w:
        w.add_many(keys)
    return w.close()


def test_keys_round_trip_exactly(tmp_path: Path) -> None:
    path = tmp_path / "keys.rvk"
    assert write_keys(path, ODD_KEYS) == len(ODD_KEYS)
    with KeyFileReader(path) as r:
        assert r.count == len(ODD_KEYS)
        assert r.batch(0, 100) == ODD_KEYS
        assert [k for b in r.iter_batches(3) for k in b] == ODD_KEYS


def test_add_one_by_one_equals_add_many(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_keys(a, ODD_KEYS)
    with KeyFileWriter(b) as w:
        for k in ODD_KEYS:
            w.add(k)
    assert a.read_bytes() == b.read_bytes()


def test_pages_generators_and_single_keys_write_the_same_bytes(tmp_path: Path) -> None:
    """add_many of a list (sliced, a chunk at a time without a step per key), of a generator
    and add per key: the same file, across chunks and the offsets' spill."""
    keys = [b"doc:%d" % i for i in range(70_000)] + ODD_KEYS
    files = [tmp_path / n for n in ("list", "gen", "one")]
    write_keys(files[0], keys)
    with KeyFileWriter(files[1]) as w:
        w.add_many(k for k in keys)
        w.close()
    with KeyFileWriter(files[2]) as w:
        for k in keys:
            w.add(k)
        w.close()
    assert files[0].read_bytes() == files[1].read_bytes() == files[2].read_bytes()
    with KeyFileReader(files[0]) as r:
        assert [k for b in r.iter_batches(4096) for k in b] == keys


def test_a_refused_key_late_in_a_page_keeps_the_keys_before_it(tmp_path: Path) -> None:
    path = tmp_path / "keys.rvk"
    page = [b"k%d" % i for i in range(5000)]
    with KeyFileWriter(path) as w:
        with pytest.raises(TypeError):
            w.add_many([*page, "str", b"after"])  # type: ignore[list-item]
        w.add(b"last")
    with KeyFileReader(path) as r:
        assert r.batch(0, 10_000) == [*page, b"last"]


def test_batches_are_the_right_slices(tmp_path: Path) -> None:
    keys = [f"k{i}".encode() for i in range(1003)]
    path = tmp_path / "keys.rvk"
    write_keys(path, keys)
    with KeyFileReader(path) as r:
        assert r.num_batches(100) == 11
        assert r.batch(0, 100) == keys[:100]
        assert r.batch(7, 100) == keys[700:800]
        assert r.batch(10, 100) == keys[1000:]  # short last batch
        assert list(r.iter_batches(100)) == [keys[i : i + 100] for i in range(0, 1003, 100)]
        assert r.batch(0, 5000) == keys
        with pytest.raises(IndexError):
            r.batch(11, 100)
        with pytest.raises(IndexError):
            r.batch(-1, 100)
        with pytest.raises(ValueError):
            r.batch(0, 0)


def test_empty_key_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.rvk"
    assert write_keys(path, []) == 0
    with KeyFileReader(path) as r:
        assert r.count == 0
        assert r.num_batches(10) == 0
        assert list(r.iter_batches(10)) == []


def test_many_keys_cross_the_offset_spill(tmp_path: Path) -> None:
    n = 200_000  # more than the writer's in-memory offset chunk
    path = tmp_path / "keys.rvk"
    with KeyFileWriter(path) as w:
        w.add_many(b"key:%d" % i for i in range(n))
    with KeyFileReader(path) as r:
        assert r.count == n
        assert r.batch(1234, 100) == [b"key:%d" % i for i in range(123_400, 123_500)]
        assert r.batch(1999, 100)[-1] == b"key:199999"
        assert sum(len(b) for b in r.iter_batches(4096)) == n


@settings(max_examples=40, deadline=None)
@given(keys=st.lists(st.binary(max_size=40), max_size=60), size=st.integers(1, 20))
def test_any_keys_any_batch_size(
    tmp_path_factory: pytest.TempPathFactory, keys: list[bytes], size: int
) -> None:
    path = tmp_path_factory.mktemp("kf") / "keys.rvk"
    write_keys(path, keys)
    with KeyFileReader(path) as r:
        got = list(r.iter_batches(size))
    assert got == [keys[i : i + size] for i in range(0, len(keys), size)]


def test_nothing_appears_until_close_and_no_temp_files_left(tmp_path: Path) -> None:
    path = tmp_path / "keys.rvk"
    w = KeyFileWriter(path)
    w.add(b"a")
    assert not path.exists()
    assert w.close() == 1
    assert w.close() == 1  # idempotent
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.rvk"]


def test_exception_inside_with_leaves_existing_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "keys.rvk"
    write_keys(path, [b"old"])
    before = path.read_bytes()
    with pytest.raises(RuntimeError), KeyFileWriter(path) as w:
        w.add(b"new")
        raise RuntimeError("enumeration failed")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.rvk"]


def test_str_keys_are_refused_and_accepted_keys_kept(tmp_path: Path) -> None:
    path = tmp_path / "keys.rvk"
    with KeyFileWriter(path) as w:
        with pytest.raises(TypeError):
            w.add_many([b"a", b"b", "c"])  # type: ignore[list-item]
        w.add(b"d")
    with KeyFileReader(path) as r:
        assert r.batch(0, 10) == [b"a", b"b", b"d"]


@pytest.mark.parametrize("cut", [1, 8, 32, 33, 200])
def test_truncated_key_file_is_refused(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "keys.rvk"
    write_keys(path, [f"key:{i}".encode() for i in range(50)])
    size = path.stat().st_size
    os.truncate(path, size - cut)
    with pytest.raises(BackupCorrupt, match=r"keys\.rvk"):
        KeyFileReader(path)


def test_altered_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.rvk"
    write_keys(path, [f"key:{i}".encode() for i in range(50)])
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01  # inside a key
    path.write_bytes(bytes(data))
    with pytest.raises(BackupCorrupt, match=r"keys.rvk.*checksum mismatch"):
        KeyFileReader(path)
    # a worker that skips the up-front check can still ask for it
    with KeyFileReader(path, verify=False) as r, pytest.raises(BackupCorrupt):
        r.verify()


def test_altered_length_prefix_is_caught_even_without_verify(tmp_path: Path) -> None:
    path = tmp_path / "keys.rvk"
    write_keys(path, [b"aaaa", b"bbbb", b"cccc"])
    data = bytearray(path.read_bytes())
    data[16] = 9  # first key's length prefix
    path.write_bytes(bytes(data))
    with KeyFileReader(path, verify=False) as r, pytest.raises(BackupCorrupt, match="parse"):
        r.batch(0, 3)


def test_not_a_key_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.rvk"
    path.write_bytes(b"hello world" * 10)
    with pytest.raises(BackupCorrupt, match="not an rvlm key file"):
        KeyFileReader(path)
