"""The originals of everything a migration rewrites, on disk, crash-safe.

A migration's backup directory holds, per worker, one append-only data file
``data-{worker}.rvb`` plus one ``manifest.json`` for the whole run. Nothing here pickles or
executes anything on load: records are a fixed binary layout read with :mod:`struct`.

Protocol the executor follows (and what makes a torn tail harmless)
--------------------------------------------------------------------
For each batch: read the originals, :meth:`BackupWriter.append_batch` (returns only after
``fsync``), journal ``batch_started``, write Redis, journal ``batch_done``. So a batch whose
frame is *not* completely on disk was never journaled as started and no key of it was
written. A crash can therefore only leave one kind of damage that is expected: a partial frame
at the very end of one data file (a "torn tail"), holding a batch that nothing depends on.

* :class:`BackupWriter` on reopen removes a torn tail (the bytes are first copied to
  ``data-{worker}.rvb.torn-{offset}`` for forensics), reports it in
  :attr:`BackupWriter.recovered_tail` and appends after the last committed frame.
* :class:`BackupReader` skips a torn tail by default (logged at WARNING, listed in
  :attr:`BackupReader.torn_tails`): a rollback or resume must not be blocked by a batch that
  was never applied. With ``strict=True`` it raises :class:`BackupCorrupt`
  ("incomplete batch at end of data-0.rvb (crash during write?)").
* Everything else is corruption and is refused with :class:`BackupCorrupt` naming the file and
  byte offset: a frame whose checksum fails when another frame follows it, a damaged frame
  header followed by valid frames, a bad file header, an unknown format version, a plan
  fingerprint that does not match, a file whose worker number disagrees with its name.

The executor must also check, on resume and before a rollback, that every batch the journal
marks as started -- done or not, ``RunState.started`` -- is in the backup
(:meth:`BackupReader.batch_numbers`): the last frame of a file cannot be told apart from a torn
one by its bytes alone, so a bit flip there looks like a crash, and only the journal can tell
the two apart (:attr:`TornTail.batch` names the batch that was dropped, when its header was
readable).

File format, version 1 (all integers little-endian)
---------------------------------------------------
File header::

    8s  magic  b"RVLMBKUP"
    u16 format version (1)
    u16 flags (0)
    u32 worker number (must match the file name)
    u16 n, then n bytes: plan fingerprint (UTF-8)
    u32 crc32 of all the header bytes above

Then zero or more frames, one per batch, each written with one ``write`` and ``fsync``::

    4s  frame magic b"RVBF"
    u32 payload length
    u32 crc32 of the payload
    u64 batch number
    u32 record count
    u32 crc32 of the 24 frame-header bytes above
    payload: ``record count`` records

A record::

    u32 key length, u8 flags (bit0: new_key present, bit1: ttl_ms present,
    bit2: replaced), u32 new_key length (0 if absent), i64 ttl_ms (0 if absent),
    u32 field count, key bytes, new_key bytes,
    then per field: u32 name length, u32 value length (0xFFFFFFFF = field did not exist),
                    name bytes, value bytes

A *replaced* record (bit 2) is the whole original of a document that a ``converts_to``
operation replaced: its fields are every field of the hash (or ``$`` and the JSON document's
text), and ttl_ms is present whenever the key had a TTL. Restoring it deletes whatever is at the
key and its new key and recreates the original exactly. Other flag bits are refused.

The frame header carries its own checksum so that a bit flip in a length can never make a
committed frame in the middle of a file look like a torn tail, and the frame magic lets a
damaged header be told apart from the end of the file (a valid frame after it means
corruption, none means a torn tail).

The manifest (``manifest.json``, :mod:`~rvlm.core.storage.backup.manifest`) is JSON::

    {"format": "rvlm-backup-manifest", "version": 1, "crc32": <crc32 of the canonical JSON
     of "manifest">, "manifest": {...}}

written to a temporary file, fsynced, ``os.replace``'d into place and the directory fsynced.

Modules: :mod:`~rvlm.core.storage.backup.records` (a record and a batch payload),
:mod:`~rvlm.core.storage.backup.frames` (the file header, frames, scanning a data file),
:mod:`~rvlm.core.storage.backup.writer` (:class:`BackupWriter`),
:mod:`~rvlm.core.storage.backup.reader` (:class:`BackupReader`),
:mod:`~rvlm.core.storage.backup.manifest`; the errors and ``fsync_directory`` are shared by
every durable file (:mod:`rvlm.core.storage.files`).
"""
