"""Online migrations that rewrite documents: a blue/green keyspace. The state machine.

This module holds the protocol (phases, what each one guarantees, what a resume does, the
fault points) shared by the online executor, ``rvlm finalize`` and rollback.

Layout
------
The source index covers keys under the source prefix ``S``; the target index covers new keys
under the target prefix ``T`` (the patch's ``index.prefix`` or ``--target-prefix``; neither
prefix may start with the other, no other index may cover ``T``, and ``T`` must hold no key
when the apply starts). Every source document ``S+id`` is copied, through the plan's
operations (the executor's ``transform_batch``, the same plugins as ``drop_recreate``), to
``T+id`` with the same absolute expiry (PEXPIRETIME -> PEXPIREAT). The source keys and the
source index are never written before the alias moves, so they keep serving; rvlm only reads
them.

Change capture (:mod:`rvlm.core.redis.capture`): keyspace notifications for ``S*``,
subscribed *before* the first source key is read. A changed key is re-read whole and its
target written again through the same operations (or deleted when the source key is gone, or
is no longer a document of the source's type). Which event it was does not matter; only the
key's state at the time it is read. A read that started after an event was received has seen
that event's write (a notification is published while the write runs), so such events are
dropped (:meth:`~rvlm.core.storage.pending.PendingKeys.covered`).

One writer: copy batches and carried-over changes run in one thread, so two writes of one
target key are never reordered.

Apply phases (``phase`` events of ``journal-0.jsonl``)
------------------------------------------------------
::

    checked -> capture_started -> created -> copied -> indexed -> validated
            -> alias_moved -> source_dropped -> forwarding_stopped -> done

* ``checked``: everything before any change: the plan (supported, online, a new index name, an
  alias, a target prefix that differs), the source unchanged since the plan, the target name
  and prefix free, the aliases, the memory the copy needs against ``maxmemory``, the
  notification setting (CONFIG, or a probe where CONFIG is refused, with the exact advice),
  the throttle options, the plugins' ``pre_drop``. Data: where each alias pointed, the
  notification value found.
* ``capture_started``: the notification classes turned on (the run registered in
  ``rvlm:notify``) and the subscription confirmed.
* ``created``: the target index exists (then ``post_create``).
* ``copied``: every key of the source (enumerated into ``keys-<epoch>.rvk`` after the
  subscription) copied. Every target key written outside a key file (a key created in the
  source during the copy) is appended to ``written.keys``: together they are exactly the keys
  rvlm created, which is what rollback deletes and nothing else.
* ``indexed``: the target finished indexing; changes keep being carried over meanwhile.
* ``validated``: with an empty backlog (after a capture barrier), the target's document count
  equals the source's and the plugins' ``validate`` pass; then the *gate*: the checks that must
  pass before the alias moves (a recall check plugs in here). Then the cut-over waits while
  the postpone flag file exists (``rvlm ctl cut-over`` ends the wait); forwarding goes on.
* ``alias_moved``: every alias moved in one ``MULTI``/``EXEC`` of ``FT.ALIASUPDATE`` (checked
  just before; the backlog was drained just before too). Queries never fail: each is answered
  by the whole source or the whole target.
* ``source_dropped``: ``FT.DROPINDEX`` of the source index (keys kept), when the plan says
  ``drop_source``. Writes to source keys are still carried over.
* ``forwarding_stopped``: without ``--follow``, once the backlog is drained; with it, when
  ``rvlm finalize``, ``rvlm ctl stop``, SIGINT or SIGTERM asks (the backlog drained first).
  Data: why. The notification setting is put back (the run leaves the registry).
* ``done``: the report says ``downtime_duration_seconds: 0`` and ``forward_lag_ms``.

Finalize phases (``rvlm finalize`` or ``apply --finalize``)
-----------------------------------------------------------
::

    finalizing -> (batch_started N -> batch_done N)* -> finalized

With change capture running again (subscribed before reading), every source key is read whole
(atomically with its PTTL and a digest of its value), carried over to its target if the
target differs, backed up (``data-*.rvb``, fsynced, as replaced records), journaled as
``batch_started``, deleted only if still unchanged (digest), journaled as ``batch_done``. A
key changed in between is not deleted; it is carried over and tried again. So no write to a
source key made before finalize returns is missing from the target, and every deleted source
key is in the backup.

Rollback
--------
Before ``finalized``: the source index recreated from the plan if it was dropped (its documents
were never written, so this is exact), the aliases pointed back (or deleted if the apply created
them), the target index dropped, the keys rvlm created deleted (the key files and
``written.keys``; a key under ``T`` that rvlm did not write is left and named), the notification
run unregistered, ``rolled_back``. After ``finalized``: the source keys are first restored from
the backup (their remaining TTL shortened by the time since the backup; a key whose TTL ran out
meanwhile is not restored), then the same. Writes made directly to target keys after the
cut-over are lost by a rollback; the report says so.

Resume (the same command again)
-------------------------------
Change capture cannot survive a process: whatever happened while no subscription was active
is unknown. So a resume subscribes again first, then reconciles: every source key (enumerated
again) is read and transformed, compared with its target, and written only where they differ;
target keys rvlm created whose source key is gone are deleted. Before ``alias_moved`` that is
the copy again (cheap where nothing changed: reads, no re-indexing); after it, the same pass
keeps the serving target exact. A lost subscription (``CLIENT KILL``, output buffer limit, a
changed setting) stops the run the same way: the source keeps serving, the same command
resumes.

Fault points (``RVLM_FAULT``, ``os._exit(137)``)
------------------------------------------------
:data:`FAULT_POINTS`: one after each phase is journaled, plus ``online_copy:N`` (after copy
batch N was written), ``online_forward`` (after a carried-over change was written),
``finalize_backup:N`` (batch N backed up, not journaled), ``finalize_delete:N`` (batch N's keys
deleted, not journaled as done).

Cluster
-------
Notifications are per node: a cluster needs one :class:`~rvlm.core.redis.capture.Subscriber`
per primary (all feeding one backlog), the setting on every primary, and a stop when the
topology changes (a failover or a slot migration moves keys to a node whose events were not
being read). The subscriber and backlog are built for that; node discovery and topology
watching are not written yet.
"""

from __future__ import annotations

#: Apply phases, in order (after ``checked``).
APPLY_PHASES: tuple[str, ...] = (
    "checked",
    "capture_started",
    "created",
    "copied",
    "indexed",
    "validated",
    "alias_moved",
    "source_dropped",
    "forwarding_stopped",
    "done",
)
#: Finalize phases, in order.
FINALIZE_PHASES: tuple[str, ...] = ("finalizing", "finalized")

FAULT_POINTS: tuple[str, ...] = (
    "online_after_checks",
    "online_after_capture",
    "online_after_create",
    "online_copy",
    "online_after_copy",
    "online_after_indexed",
    "online_after_validate",
    "online_after_alias",
    "online_after_drop",
    "online_forward",
    "online_after_forwarding",
    "finalize_backup",
    "finalize_delete",
    "finalize_after_batches",
)

_ORDER = {p: i for i, p in enumerate(APPLY_PHASES + FINALIZE_PHASES)}


def reached(phase: str | None, target: str) -> bool:
    """True when ``phase`` is ``target`` or a later one of the online apply / finalize."""
    return phase is not None and phase in _ORDER and _ORDER[phase] >= _ORDER[target]
