"""A set of keys on disk, for membership questions about more keys than memory should hold.

SQLite from the standard library: one table of keys (the primary key is the index), no
journal and no fsync (the file is scratch: built, queried and removed by one process; a
crash leaves it behind, and the next :class:`KeySet` on the same path starts it afresh).
Memory is SQLite's page cache (a few MB), not the number of keys.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

#: keys per statement (SQLite allows at least 999 parameters in one)
_CHUNK = 900


class KeySet:
    """An on-disk set of byte keys at ``path`` (removed by :meth:`close`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.unlink(missing_ok=True)  # a crashed run's leftover is scratch
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE keys (k BLOB PRIMARY KEY) WITHOUT ROWID")
        self.added = 0

    def add_many(self, keys: Iterable[bytes]) -> None:
        """Add keys (repeats are harmless)."""
        rows = [(bytes(k),) for k in keys]
        if rows:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO keys VALUES (?)", rows)
            self._db.execute("COMMIT")
            self.added += len(rows)

    def members(self, keys: Sequence[bytes]) -> set[bytes]:
        """Those of ``keys`` that are in the set."""
        found: set[bytes] = set()
        for i in range(0, len(keys), _CHUNK):
            part = [bytes(k) for k in keys[i:i + _CHUNK]]
            marks = ",".join("?" * len(part))
            found.update(bytes(r[0]) for r in self._db.execute(
                f"SELECT k FROM keys WHERE k IN ({marks})", part))
        return found

    def close(self) -> None:
        """Close and remove the file (idempotent)."""
        self._db.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> KeySet:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


__all__ = ["KeySet"]
