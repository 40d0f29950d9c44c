"""Compare the target index's KNN answers with the source's: the ``quality`` of a report.

For each query vector the source answered with its nearest documents (and their distances);
the target answers the same vector (converted to the target's datatype). Per query:

* recall@k: the share of the target's first ``k`` keys that the source accepts. The source
  accepts its first ``k`` keys and any further key exactly as near as its k-th (the source is
  asked for more than ``k``, so a tie at the boundary is not a miss);
* the first neighbour is lost when none of the source's nearest keys (those exactly as near as
  its first) is among the target's first ``k``.

Source keys are mapped to where they live after the migration (a prefix change) before they are
compared. A query the target refused counts as recall 0 with its first neighbour lost.

Per field: ``recall_at_k`` (the mean), ``p5`` (the 5th percentile, an observed query's value),
``lost_first_neighbour`` (how many queries), ``queries`` and ``k``; with a floor
(``--min-recall``) also ``min_recall`` and ``passed``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from rvlm.core.quality.search import Answer

KeyMap = Callable[[str], str]


@attrs.frozen(kw_only=True)
class FieldQuality:
    """The measured quality of one vector field (see the module docstring)."""

    field: str
    k: int
    queries: int
    recall_at_k: float
    p5: float
    lost_first_neighbour: int
    refused: int = 0
    min_recall: float | None = None

    @property
    def passed(self) -> bool:
        """No floor, or the mean recall reaches it."""
        return self.min_recall is None or self.recall_at_k >= self.min_recall

    def with_floor(self, min_recall: float | None) -> FieldQuality:
        return attrs.evolve(self, min_recall=min_recall)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"recall_at_k": round(self.recall_at_k, 4), "p5": round(self.p5, 4),
                               "lost_first_neighbour": self.lost_first_neighbour,
                               "queries": self.queries, "k": self.k}
        if self.refused:
            out["refused_queries"] = self.refused
        if self.min_recall is not None:
            out["min_recall"] = self.min_recall
            out["passed"] = self.passed
        return out

    def summary(self, *, field: bool = True) -> str:
        """One line: ``emb: recall@10 0.9630 (p5 0.9000, 0 of 100 queries lost their first
        neighbour)``, with the floor when there is one; ``field=False`` leaves out the
        ``emb:`` (for a check already named after the field)."""
        head = f"{self.field}: " if field else ""
        line = (f"{head}recall@{self.k} {self.recall_at_k:.4f} (p5 {self.p5:.4f}, "
                f"{self.lost_first_neighbour} of {self.queries} queries lost their first "
                "neighbour")
        if self.refused:
            line += f", {self.refused} refused by the target"
        line += ")"
        if self.min_recall is not None:
            line += (f" >= {self.min_recall}" if self.passed
                     else f" is under --min-recall {self.min_recall}")
        return line


def _accepted(source: Answer, k: int) -> tuple[list[str], list[str]]:
    """(keys the source accepts at k, keys it accepts as its first neighbour)."""
    keys, scores = list(source.keys), list(source.scores)
    if len(scores) != len(keys) or not keys:
        return keys[:k], keys[:1]
    kth = scores[min(k, len(keys)) - 1]
    within = [key for key, s in zip(keys, scores, strict=True) if s <= kth]
    first = [key for key, s in zip(keys, scores, strict=True) if s <= scores[0]]
    return within, first


def query_recall(source: Answer, target: Answer, k: int,
                 key_map: KeyMap | None = None) -> tuple[float, bool] | None:
    """(recall@k, first neighbour lost) of one query, or None when the source found nothing
    (there is nothing to lose)."""
    if source.error is not None or not source.keys:
        return None
    if target.error is not None:
        return 0.0, True
    within, first = _accepted(source, k)
    if key_map is not None:
        within = [key_map(x) for x in within]
        first = [key_map(x) for x in first]
    top = set(target.keys[:k])
    want = min(k, len(source.keys))
    hits = min(len(top.intersection(within)), want)
    return hits / want, not top.intersection(first)


def measure(field: str, source: Sequence[Answer], target: Sequence[Answer], k: int,
            key_map: KeyMap | None = None, min_recall: float | None = None) -> FieldQuality:
    """The quality of ``field`` over paired answers (``source[i]`` and ``target[i]`` answer
    the same query vector). Queries the source found nothing for are left out."""
    if len(source) != len(target):
        raise ValueError(f"{len(source)} source answers but {len(target)} target answers")
    recalls: list[float] = []
    lost = refused = 0
    for s, t in zip(source, target, strict=True):
        got = query_recall(s, t, k, key_map)
        if got is None:
            continue
        recalls.append(got[0])
        lost += got[1]
        refused += t.error is not None
    if not recalls:
        return FieldQuality(field=field, k=k, queries=0, recall_at_k=1.0, p5=1.0,
                            lost_first_neighbour=0, min_recall=min_recall)
    import numpy as np

    arr = np.asarray(recalls)
    return FieldQuality(field=field, k=k, queries=len(recalls), recall_at_k=float(arr.mean()),
                        p5=float(np.percentile(arr, 5, method="lower")),
                        lost_first_neighbour=lost, refused=refused, min_recall=min_recall)
