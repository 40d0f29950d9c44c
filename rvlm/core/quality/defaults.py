"""The quality gate's defaults: how many KNN queries per vector field, how deep (recall@k),
and the seed that draws them (a module of its own so that every part of the gate, light or
heavy, can name them)."""

DEFAULT_QUERIES = 100
DEFAULT_K = 10
SEED = 0

__all__ = ["DEFAULT_K", "DEFAULT_QUERIES", "SEED"]
