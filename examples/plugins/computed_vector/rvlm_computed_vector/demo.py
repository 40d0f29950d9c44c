"""A small deterministic embedder for demos and tests (no model, no download).

``hashing_embedder`` maps each text to a 16-dimensional unit vector by hashing its lower-cased
words and character trigrams into buckets (a "hashing trick" bag of features). Texts that share
words land close together under cosine distance, so nearest-neighbour queries behave sensibly,
and the same text always gives the same vector on every machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

DIMS = 16


def _features(text: str) -> list[str]:
    words = text.lower().split()
    grams = [w[i:i + 3] for w in words for i in range(max(1, len(w) - 2))]
    return words + grams


def hashing_embedder(texts: Sequence[str]) -> np.ndarray:
    """Embed ``texts`` as an ``(len(texts), 16)`` float32 array of unit vectors."""
    out = np.zeros((len(texts), DIMS), dtype=np.float64)
    for row, text in enumerate(texts):
        for feature in _features(text):
            digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
            bucket = digest[0] % DIMS
            out[row, bucket] += 1.0 if digest[1] & 1 else -1.0
        norm = np.linalg.norm(out[row])
        out[row] = out[row] / norm if norm else np.eye(DIMS)[0]
    return out.astype(np.float32)
