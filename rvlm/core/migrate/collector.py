"""Fewer garbage collections while a batch loop runs: :func:`fewer_collections`.

A batch of the transform makes some ten container objects per document (its read dict, the
record and field tuples, the write and its values dict, the digest object) and keeps them
alive until the batch is written: three batches are in flight (read ahead, transformed,
written). With CPython's default first-generation threshold (700 net allocations) a collection
runs every 50-70 documents, finds the batch's objects alive, and promotes them, so they are
traversed again by the older generations' collections, up to full ones over everything the
process holds. Measured at 50K x 128-d rename + quantize (``bench/profile_apply.py``, which
times the collector): 0.2-0.5 s of collections in an apply whose transform took 0.9-1.0 s of
client CPU.

The objects die by reference counting when their batch is done, and none of them is in a
reference cycle: collecting less often frees nothing later. Memory stays bounded by the batch
(the collector still runs every :data:`FIRST_GENERATION` net allocations).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

#: The first generation's threshold while a batch loop runs (CPython's default is 700).
FIRST_GENERATION = 50_000


@contextlib.contextmanager
def fewer_collections(first: int = FIRST_GENERATION) -> Iterator[None]:
    """Raise the collector's first threshold to at least ``first`` for the block, then put
    back the thresholds found (process-wide: the collector has one setting). A threshold of
    0 (collection disabled by threshold) and a disabled collector are left as they are."""
    found = gc.get_threshold()
    if not gc.isenabled() or found[0] == 0 or found[0] >= first:
        yield
        return
    gc.set_threshold(first, *found[1:])
    try:
        yield
    finally:
        gc.set_threshold(*found)


__all__ = ["FIRST_GENERATION", "fewer_collections"]
