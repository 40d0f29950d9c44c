"""Document I/O: key enumeration, batch reads, batch writes and restore for the executor and
rollback; small read-only samples for the planner and plugins.

Everything here is pipelined (one round trip per batch and step, never one per key) and works
under RESP2 and RESP3, on one server or a Redis Cluster (:func:`rvlm.core.redis.wire.execute`
sends each primary its share of a batch as one pipeline). Keys and hash values are ``bytes``;
JSON values are decoded Python values. A field or path a document does not have is
:data:`~rvlm.core.plugins.documents.MISSING`.

* :mod:`~rvlm.core.redis.docio.keys`: stream the keys of an index into a key file.
* :mod:`~rvlm.core.redis.docio.read`: read the values a batch's operations need.
* :mod:`~rvlm.core.redis.docio.sample`: read a few documents (plan time, plugins, estimates).
* :mod:`~rvlm.core.redis.docio.write`: write merged updates and key renames, replies checked.
* :mod:`~rvlm.core.redis.docio.moves`: move keys to new names (RENAMENX, or DUMP/RESTORE/DEL
  across cluster slots), recognise an interrupted move's copy by content.
* :mod:`~rvlm.core.redis.docio.restore`: back up a document's originals and put them back.
"""
