"""Recall queries for one vector field: ask the source (and keep the answers), ask the target.

:func:`probe_source` draws ``queries`` documents of the source index with a fixed seed, reads
their vectors and asks the source for the nearest ``fetch`` documents of each (``fetch`` is more
than ``k``, see :mod:`rvlm.core.quality.recall`). :func:`ask_target` sends the same vectors,
converted to the target's datatype the way the documents were, to the target index.
:func:`measure_field` puts the two together. Cost: one keys-only ``FT.SEARCH``, one pipelined
read of ``queries`` vectors, and ``queries`` KNN queries per index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import redis

from rvlm.core.errors import RvlmError
from rvlm.core.quality.answers import FieldProbes, Probe
from rvlm.core.quality.defaults import DEFAULT_K, DEFAULT_QUERIES, SEED
from rvlm.core.quality.recall import FieldQuality, KeyMap, measure
from rvlm.core.quality.search import Answer, draw_keys, knn_answers, read_vectors
from rvlm.core.redis.resp import to_str
from rvlm.core.schema.model import IndexSchema, VectorAttrs

if TYPE_CHECKING:  # numpy loads only where vectors are converted
    from rvlm.core import vectors

#: ``convert(source vectors) -> target vectors`` (bytes in, bytes out, same order).
Converter = Callable[[Sequence[bytes]], list[bytes]]


def fetch_for(k: int) -> int:
    """How many neighbours the source is asked for at recall depth ``k`` (ties at the k-th)."""
    return k + min(k, 100)


def scheme_converter(scheme: vectors.QuantizationScheme, dims: int) -> Converter:
    """Convert source vectors with the plan's recorded ``scheme`` (what the documents got)."""

    from rvlm.core import vectors

    def convert(raws: Sequence[bytes]) -> list[bytes]:
        return vectors.convert_bytes_batch(list(raws), dims, scheme) if raws else []

    return convert


def _vector_field(schema: IndexSchema, name: str) -> VectorAttrs:
    f = schema.field(name)
    if f is None or not isinstance(f.attrs, VectorAttrs):
        raise RvlmError(f"index {schema.name!r} has no vector field {name!r}")
    return f.attrs


def probe_source(client: redis.Redis, schema: IndexSchema, field: str, *,
                 target_field: str | None = None, queries: int = DEFAULT_QUERIES,
                 k: int = DEFAULT_K, seed: int = SEED, index: str | None = None
                 ) -> FieldProbes:
    """Ask the source index (``index``, default ``schema.name``) the recall queries of
    ``field``. Raises :class:`RvlmError` if the source refuses one (nothing is wrong with the
    migration yet: the source must answer)."""
    if queries < 1 or k < 1:
        raise RvlmError(f"recall needs at least one query and k >= 1 (got {queries}, {k})")
    a = _vector_field(schema, field)
    name = index or schema.name
    path = schema.field(field).identifier(schema.storage_type)  # type: ignore[union-attr]
    keys = draw_keys(client, name, queries, seed)
    held = read_vectors(client, schema.storage_type, keys, path, a.datatype, a.dims)
    fetch = fetch_for(k)
    answers = knn_answers(client, name, field, [v for _, v in held], fetch)
    for answer in answers:
        if answer.error is not None:
            raise RvlmError(f"the source index {name!r} refused a KNN query on {field!r}: "
                            f"{answer.error}")
    probes = [Probe(key=to_str(key), vector=vec, answer=answer)
              for (key, vec), answer in zip(held, answers, strict=True)]
    return FieldProbes(field=field, target_field=target_field or field, datatype=a.datatype,
                       dims=a.dims, k=k, fetch=fetch, probes=probes)


def ask_target(client: redis.Redis, index: str, probes: FieldProbes,
               convert: Converter | None = None) -> list[Answer]:
    """The target's answers to the stored probes, nearest first, ``probes.k`` of each.
    ``convert`` turns the source vectors into the target's datatype (None: unchanged)."""
    raws = [p.vector for p in probes.probes]
    if convert is not None:
        raws = convert(raws)
    return knn_answers(client, index, probes.target_field, raws, probes.k)


def measure_field(client: redis.Redis, index: str, probes: FieldProbes,
                  convert: Converter | None = None, key_map: KeyMap | None = None,
                  min_recall: float | None = None) -> FieldQuality:
    """Ask the target the stored probes and compare with the source's answers."""
    target = ask_target(client, index, probes, convert)
    return measure(probes.target_field, [p.answer for p in probes.probes], target, probes.k,
                   key_map=key_map, min_recall=min_recall)
