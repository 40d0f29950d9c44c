"""Forwarding lag: how long a write to a source key took to reach its target key.

Online mode measures each carried-over change from the moment its keyspace event arrived (the
server publishes it while it executes the write, so this is the write's time to within the
network hop) to the moment the target write was acknowledged. A key written many times before
it is carried over counts once, from its oldest write: the worst case of the writes merged.

:class:`LagStats` keeps counts in logarithmic buckets (1% wide), so memory stays constant
however many changes a run forwards, and percentiles are exact to within 1%; ``max`` is exact.
"""

from __future__ import annotations

import math
import threading
from typing import Any

#: Relative width of a bucket.
_GROWTH = 1.01
_LOG = math.log(_GROWTH)
#: The smallest lag told apart (ms); anything below counts as this.
_FLOOR_MS = 0.01


class LagStats:
    """Counts of lags (ms) in 1% buckets; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[int, int] = {}
        self.count = 0
        self.max_ms = 0.0
        self.total_ms = 0.0

    def add(self, ms: float) -> None:
        """Record one lag in milliseconds (negative values count as 0)."""
        ms = max(0.0, ms)
        b = 0 if ms <= _FLOOR_MS else int(math.log(ms / _FLOOR_MS) / _LOG) + 1
        with self._lock:
            self._buckets[b] = self._buckets.get(b, 0) + 1
            self.count += 1
            self.total_ms += ms
            if ms > self.max_ms:
                self.max_ms = ms

    def merge(self, other: LagStats) -> None:
        """Add ``other``'s counts to these."""
        with other._lock:
            buckets = dict(other._buckets)
            count, mx, total = other.count, other.max_ms, other.total_ms
        with self._lock:
            for b, n in buckets.items():
                self._buckets[b] = self._buckets.get(b, 0) + n
            self.count += count
            self.total_ms += total
            self.max_ms = max(self.max_ms, mx)

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile (0-100) in ms: the upper edge of the bucket that holds it,
        never more than the exact maximum. 0.0 when nothing was recorded."""
        with self._lock:
            if not self.count:
                return 0.0
            rank = max(1, math.ceil(self.count * p / 100.0))
            seen = 0
            for b in sorted(self._buckets):
                seen += self._buckets[b]
                if seen >= rank:
                    edge = _FLOOR_MS if b == 0 else _FLOOR_MS * _GROWTH ** b
                    return min(edge, self.max_ms)
            return self.max_ms  # pragma: no cover - rank <= count

    def to_dict(self) -> dict[str, Any]:
        """``{count, p50, p99, max}`` (ms, rounded to 0.01)."""
        return {"count": self.count, "p50": round(self.percentile(50), 2),
                "p99": round(self.percentile(99), 2), "max": round(self.max_ms, 2)}
