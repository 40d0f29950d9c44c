"""The collision checks of a drop_recreate apply: over every key, before the first change.

A plan collides with a document that already holds a field an operation creates (a field
rename's new name, for example), and with a key a prefix rename would create that exists.
Either refuses the apply, naming up to 5 keys, before anything is mutated.

:class:`CollisionCheck` answers two questions for a page of keys:

* :meth:`~CollisionCheck.count`: how many collide, in a few commands (the common case is
  none: one ``EVAL`` per 1000 hashes, one ``EXISTS`` per 1000 renamed keys; per key where
  those cannot be used: JSON documents, a cluster, a refused script);
* :meth:`~CollisionCheck.over_file`: which keys of the key file collide, raising
  :class:`~rvlm.core.errors.RvlmError` when any does (counted per page first, named only
  where a page counts some).

:class:`StreamedCollisions` runs :meth:`~CollisionCheck.count` on each page of keys *as the
key enumeration finds it*, on a thread of its own (its own pooled connection), so the server
checks page p while the client writes page p-1 to the key file and SCAN fetches page p+1:
one pass over the keys instead of a second one over the key file. Every key of the key file
came in a page, so "no page counted a collision" means none of the file's keys collides;
when a page counts one, :meth:`~CollisionCheck.over_file` decides on the finished key file
and names the keys (a page may hold a key the file does not: a duplicate SCAN left out, a
cursor page before the fallback to SCAN). At most :data:`PAGES_IN_FLIGHT` pages wait for
their check (memory: a few pages, never all keys).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

from rvlm.core.errors import RvlmError
from rvlm.core.migrate.plan import Plan
from rvlm.core.redis.docio.read import (
    count_existing,
    count_holding,
    fields_exist,
    keys_exist,
)
from rvlm.core.redis.resp import to_str
from rvlm.core.storage.keyfile import KeyFileReader

#: Keys per page of :meth:`CollisionCheck.over_file` (they read nothing back but counts and
#: flags).
COLLISION_PAGE = 5000

#: Pages handed to :class:`StreamedCollisions` whose check has not ended yet, at most; the
#: enumeration waits for the oldest beyond that (memory: that many pages of keys).
PAGES_IN_FLIGHT = 2


class CollisionCheck:
    """The collision checks of ``plan`` over ``client``; ``cluster`` when it is a Redis
    Cluster (the keys of one command then need not share a slot: no multi-key counts)."""

    def __init__(self, plan: Plan, client: Any, *, cluster: bool) -> None:
        self.plan = plan
        self.client = client
        self.cluster = cluster
        self.storage = plan.source_schema.storage_type
        #: the fields an operation creates (each document must not hold one yet)
        self.creates = list(dict.fromkeys(n for op in plan.operations for n in op.creates))
        #: the plan renames keys (the new keys must not exist yet)
        self.renames = any(op.rename_prefix for op in plan.operations)

    @property
    def wanted(self) -> bool:
        """There is something to check."""
        return bool(self.creates) or self.renames

    def moved(self, keys: Sequence[bytes]) -> list[bytes]:
        """The new keys of those of ``keys`` that the plan renames."""
        return [nk for k in keys if (nk := self.plan.map_key(k)) != k]

    def held_count(self, keys: Sequence[bytes]) -> int:
        """How many of ``keys`` hold a field the plan creates."""
        if not self.creates:
            return 0
        if self.storage == "hash" and not self.cluster:
            n = count_holding(self.client, keys, self.creates)
            if n is not None:
                return n
        return sum(1 for names in fields_exist(self.client, self.storage, keys, self.creates)
                   if names)

    def taken_count(self, keys: Sequence[bytes]) -> int:
        """How many of the keys the plan would create from ``keys`` exist."""
        if not self.renames:
            return 0
        moved = self.moved(keys)
        if not self.cluster:
            return count_existing(self.client, moved)
        return sum(keys_exist(self.client, moved))

    def count(self, keys: Sequence[bytes]) -> int:
        """How many collisions ``keys`` hold (a key can count twice: a field and its new key)."""
        return self.held_count(keys) + self.taken_count(keys)

    def over_file(self, keyfile: Path) -> None:
        """Over every key of ``keyfile``: no document already holds a field an operation
        creates, and no key a prefix rename would create exists. Raises RvlmError naming up
        to 5 keys."""
        if not self.wanted:
            return
        held: list[str] = []
        held_n = 0
        taken: list[bytes] = []
        taken_n = 0
        with KeyFileReader(keyfile, verify=False) as reader:
            for keys in reader.iter_batches(COLLISION_PAGE):
                if self.held_count(keys):
                    for k, names in zip(keys, fields_exist(self.client, self.storage, keys,
                                                           self.creates), strict=True):
                        if names:
                            held_n += 1
                            if len(held) < 5:
                                held.append(f"{to_str(k)!r} ({', '.join(names)})")
                if self.taken_count(keys):
                    moved = self.moved(keys)
                    for nk, ex in zip(moved, keys_exist(self.client, moved), strict=True):
                        if ex:
                            taken_n += 1
                            if len(taken) < 5:
                                taken.append(nk)
        if held:
            raise RvlmError(f"{held_n} document(s) already hold a field this migration "
                            f"creates, e.g. {'; '.join(held)}; nothing was changed")
        if taken:
            raise RvlmError(f"{taken_n} key(s) the prefix change would create already exist, "
                            f"e.g. {', '.join(repr(to_str(k)) for k in taken)}; nothing was "
                            "changed")


class StreamedCollisions:
    """:meth:`CollisionCheck.count` of each page :meth:`add` is given, on a thread of its own
    (see the module docstring). Use as a context manager (the thread ends with it), then call
    :meth:`finish` with the key file once the enumeration wrote it."""

    def __init__(self, check: CollisionCheck) -> None:
        self.check = check
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rvlm-collisions")
        self.pending: deque[Future[int]] = deque()
        self.found = 0

    def __enter__(self) -> StreamedCollisions:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for f in self.pending:
            f.cancel()
        self.pool.shutdown(wait=True)

    def add(self, keys: Sequence[bytes]) -> None:
        """Check ``keys`` (a page of the enumeration) on the thread; waits while
        :data:`PAGES_IN_FLIGHT` pages are still being checked."""
        while len(self.pending) >= PAGES_IN_FLIGHT:
            self.found += self.pending.popleft().result()
        if keys:
            self.pending.append(self.pool.submit(self.check.count, list(keys)))

    def finish(self, keyfile: Path) -> None:
        """Wait for every page's check; when one counted a collision, decide (and name the
        keys) over ``keyfile``: raises RvlmError as :meth:`CollisionCheck.over_file`."""
        while self.pending:
            self.found += self.pending.popleft().result()
        if self.found:
            self.check.over_file(keyfile)


__all__ = ["COLLISION_PAGE", "PAGES_IN_FLIGHT", "CollisionCheck", "StreamedCollisions"]
