"""The on-disk key set finalize's sweep looks keys up in."""

from __future__ import annotations

from rvlm.core.storage.keyset import KeySet


def test_members_are_the_keys_added_and_the_file_goes_at_close(tmp_path):
    path = tmp_path / "set.sqlite"
    path.write_bytes(b"a crashed run's leftover, not a database")
    with KeySet(path) as keys:
        keys.add_many(f"doc:{i}".encode() for i in range(0, 5000, 2))
        keys.add_many([b"doc:0", b"\x00\xffbinary", b""])  # repeats, any bytes
        asked = [f"doc:{i}".encode() for i in range(3000)] + [b"\x00\xffbinary", b"", b"x"]
        assert keys.members(asked) == {f"doc:{i}".encode() for i in range(0, 3000, 2)} | {
            b"\x00\xffbinary", b""}
        assert keys.members([]) == set()
        assert path.exists()
    assert not path.exists()
