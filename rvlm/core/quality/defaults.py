"""The quality gate's defaults: how many KNN queries per vector field, how deep (recall@k),
and the seed that draws them (a module of its own so that every part of the gate, light or
heavy, can name them)."""

DEFAULT_QUERIES = 100
DEFAULT_K = 10
SEED = 0
#: Without ``--recall-queries`` and ``--min-recall`` (recall measured and reported, nothing
#: decided on it) an index of more documents than this gets fewer queries: each KNN query of
#: a FLAT index reads every vector, so 100 queries on the source and 100 on the target of a
#: 1M x 128-d index took about 5 s of the server's time (issue #17). The number falls as
#: ``DEFAULT_QUERIES x SIZED_FROM / documents``, never under :data:`MIN_SIZED_QUERIES`.
SIZED_FROM = 200_000
MIN_SIZED_QUERIES = 20


def sized_queries(documents: int) -> int:
    """The recall queries of an index of ``documents`` when the user set neither their number
    nor a floor (see :data:`SIZED_FROM`)."""
    if documents <= SIZED_FROM:
        return DEFAULT_QUERIES
    return max(MIN_SIZED_QUERIES, DEFAULT_QUERIES * SIZED_FROM // documents)


__all__ = ["DEFAULT_K", "DEFAULT_QUERIES", "MIN_SIZED_QUERIES", "SEED", "SIZED_FROM",
           "sized_queries"]
