"""Quality: what a vector change does to KNN answers, and the user's own query checks.

* :mod:`~rvlm.core.quality.estimate`: plan time, no server work. recall@k estimated with numpy
  on the sampled vectors, source values against converted values, each in the form the server's
  vector index keeps them.
* :mod:`~rvlm.core.quality.answers`: apply time. Run KNN queries (and the user's query checks)
  against an index, under RESP2 or RESP3; keep the source's answers in the backup dir.
* :mod:`~rvlm.core.quality.recall`: compare the target's answers with the source's: recall@k,
  its 5th percentile, queries that lost their first neighbour.
* :mod:`~rvlm.core.quality.checks`: the query check file (rvl's ``fetch_ids`` / ``keys_exist``
  and rvlm's ``queries``), loaded with one-line errors, run and compared.

Nothing here knows about plans or executors: callers hand in schemas, fingerprints and key
maps, so the migrate package can use it without an import cycle.
"""
