"""The hooks every rvlm change is built from, built-in or third-party.

A plugin is a module or object with functions marked ``@hookimpl``. Everything a plugin
imports comes from one module, ``rvlm.plugin`` (``rvlm.core`` is internal and may move).
The built-in changes (add/remove/rename/update a field, rename the index, change the prefix,
vector index parameters, quantization) are plugins registered exactly like a third-party one,
which is installed with pip and found through the ``rvlm`` entry point group::

    # pyproject.toml of your plugin package
    [project.entry-points.rvlm]
    hash_to_json = "rvlm_hash_to_json.plugin"

Plugins *describe and transform*; the executor owns every side effect (connections, batching,
the journal, backups, locks), so crash safety, resume and rollback are written once, for all.

How hooks are called. pluggy makes every call, so an implementation may take only the arguments
it uses (``def transform_documents(operation, documents)``), and hook wrappers
(``@hookimpl(wrapper=True)``) run around the calls they wrap. A change-specific hook
(``merge_patch_section``, ``classify_change``, ``estimate_operation``, ``transform_documents``,
``transform_columns``) is called only on the plugin that owns the section, change type or
operation, so it never has to check that what it got is its own. A hook name that does not
exist (``transform_document``) or an argument a hook does not offer keeps the plugin from
loading; ``rvlm plugins`` shows why.
A hook that raises, or returns something other than what it documents, is a ``PluginError``
naming the plugin and the hook (exit code 1); an ``RvlmError`` raised on purpose while planning
or in ``pre_drop`` is the plugin refusing bad input (one line, exit code 2, nothing changed).

Order of hooks in one migration:

1. ``rvlm_change_types`` once, when the plugin manager is built.
2. ``detect_changes`` once per plan: each plugin claims the schema differences its change
   types handle.
3. ``merge_patch_section`` while the planner merges a patch (plugin-owned sections only).
4. ``classify_change`` once per change while planning.
5. ``estimate_operation`` once per operation, by ``rvlm estimate``.
6. ``pre_drop`` once, after the executor's checks and before the source index is dropped.
7. ``transform_documents`` (or its columnar form ``transform_columns``, where the plugin has
   one) once per batch per operation, while no index covers the keys.
8. ``post_create`` once, after the target index is created.
9. ``validate`` once, after indexing finished (also by ``rvlm validate``).

A change type therefore lives in one plugin file: which differences it is (``detect_changes``),
whether it can run and what it does to documents (``classify_change``), what that costs
(``estimate_operation``) and the document work itself (``transform_documents``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from rvlm.plugin import (
        ApplyContext,
        Change,
        ChangeType,
        CheckResult,
        Classification,
        Difference,
        Document,
        DocumentOperation,
        DocumentUpdate,
        IndexSchema,
        OperationCost,
        Plan,
        PlanContext,
    )

PROJECT = "rvlm"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def rvlm_change_types() -> Sequence[ChangeType]:
    """Declare the change types this plugin owns.

    Called once when the plugin manager is built. Each change type must be owned by exactly
    one plugin; two plugins claiming the same name is an error reported by ``rvlm plugins``
    and by every command. A change type with ``patch_section`` set also owns that key under
    ``changes:`` in a schema patch.

    :return: the change types, e.g.
        ``[ChangeType(name="hash_to_json", description="...", patch_section="hash_to_json")]``
    """


@hookspec
def detect_changes(
    differences: Sequence[Difference], source: IndexSchema, target: IndexSchema
) -> Sequence[Change] | None:
    """Claim the differences between the source and the target schema that are your changes.

    Called by the planner once per plan, on every plugin, with every
    :class:`~rvlm.plugin.Difference` the core found between the live schema and the target
    (the patch's built-in sections merged; plugin sections are changes of their own). Return
    one :class:`~rvlm.plugin.Change` of one of your change types per change, listing in
    ``claims`` the differences it accounts for; return nothing for differences that are not
    yours. A difference no plugin claims blocks the plan (rvlm never ignores a difference); one
    claimed twice is an error naming both plugins. Changes are listed in the plan in the order
    of the first difference each claims. Pure: no Redis.

    :param differences: what differs, in plan order; each has a ``kind`` (``field_added``,
        ``field_attr``, ``index_prefix``, ...), the field's old and new name, the attribute or
        option (``key``), and ``before``/``after`` values.
    :param source: the live schema.
    :param target: the target schema.
    :return: your changes (``Change(type=..., claims=(difference, ...))``).

    Example::

        @hookimpl
        def detect_changes(differences):
            return [Change(type="move_path", field=d.field, new_field=d.new_field,
                           details={"path": {"before": d.before, "after": d.after}},
                           claims=(d,))
                    for d in differences if d.kind == "field_path"]
    """


@hookspec(firstresult=True)
def merge_patch_section(
    section: str, value: Any, target: IndexSchema, context: PlanContext
) -> IndexSchema:
    """Apply a plugin-owned patch section to the target schema.

    Called by the planner for each key under ``changes:`` that a plugin declared as its
    ``patch_section``, on that plugin only, after the built-in sections were merged. Raise
    :class:`~rvlm.plugin.RvlmError` with one line naming the key for bad input.

    :param section: the key under ``changes:`` (one of yours).
    :param value: its YAML value, as loaded.
    :param target: the target schema so far.
    :param context: the source schema, capabilities and document sample (the target in it is
        the schema before your section).
    :return: the new target schema.

    Example::

        @hookimpl
        def merge_patch_section(value, target):
            if not isinstance(value, dict):
                raise RvlmError("changes.hash_to_json must be a mapping")
            return target.with_index(storage_type="json")
    """


@hookspec(firstresult=True)
def classify_change(change: Change, context: PlanContext) -> Classification:
    """Say whether a change is supported, what users must know, and what it does to documents.

    Called by the planner once per change, on the plugin that owns its change type. Never
    write to Redis here: read documents through ``context.sample(names)`` (a calibration
    sample) or ``context.read_documents(keys, names)``.

    :param change: the change (``change.type`` is one of your change types).
    :param context: source and target schemas, stats, server capabilities, a document sample.
    :return: a :class:`~rvlm.plugin.Classification`: ``supported`` or blocked with reasons that
        say why and what to do instead, ``warnings``, ``lossy``, and the
        :class:`~rvlm.plugin.DocumentOperation` list the executor will run.

    Example::

        @hookimpl
        def classify_change(change):
            old, new = change.field, change.new_field
            op = DocumentOperation(plugin="rename_field", kind="rename_hash_field",
                                   reads=(old,), writes=(old, new), creates=(new,),
                                   params={"old": old, "new": new})
            return Classification(summary=f"rename {old} to {new}", operations=[op])
    """


@hookspec(firstresult=True)
def estimate_operation(
    operation: DocumentOperation, plan: Plan, sample: Sequence[Document] | None
) -> OperationCost | None:
    """What one document costs an operation of yours, for ``rvlm estimate``.

    Called once per operation whose ``plugin`` is yours. Return an
    :class:`~rvlm.plugin.OperationCost`: the bytes one document gets written and the bytes its
    backup keeps, on average (``None`` in it: unknown). Return ``None`` to let rvlm measure:
    the sampled values of ``operation.reads``, written once and backed up once.

    :param operation: the operation from the plan.
    :param plan: the whole plan (``plan.key_sample``, the schemas, ...).
    :param sample: the plan's sampled documents with ``operation.reads`` read, or ``None``
        when the estimate runs without a server.

    Example::

        @hookimpl
        def estimate_operation(operation):
            dims = operation.params["dims"]
            return OperationCost(bytes_rewritten=dims * 2, backup_bytes=dims * 4)
    """


@hookspec
def pre_drop(plan: Plan, context: ApplyContext) -> Sequence[str] | None:
    """Last checks before the source index is dropped.

    Called once per apply, after the executor verified the source and every collision, with
    nothing changed yet. ``context.client`` may be used to *read*. Return problems (one line
    each) to stop the migration with nothing changed, or ``None``/``[]`` to go on.
    """


@hookspec(firstresult=True)
def transform_documents(
    operation: DocumentOperation, documents: Sequence[Document], context: ApplyContext
) -> Sequence[DocumentUpdate]:
    """Compute new values for one batch of documents.

    Called by the executor for each batch and each operation whose ``plugin`` is yours (and on
    your plugin only), while no index covers the documents. Pure: no I/O, no Redis. Work on
    the whole batch at once (numpy-friendly). The executor backs up the originals, journals
    the batch, writes your updates, and on a resume or rollback restores the originals, so a
    transform never runs twice on a value it already changed.

    An operation with ``converts_to`` (``"json"`` or ``"hash"``) replaces whole documents, for
    example hash -> JSON: each document then holds *every* field (hash: name -> bytes, with
    the changes of earlier operations; JSON: the root under ``"$"``), and each update must
    set ``replace`` to the whole new document of that storage type. The executor backs up
    every original field and the TTL, writes the new document in one ``MULTI``/``EXEC`` (TTL
    kept), moves it when the operation has a ``rename_prefix``, and on resume or rollback
    recreates the original exactly. It runs after every other operation of the plan.

    :param operation: the operation from the plan (its ``params`` are yours).
    :param documents: the batch, each with the values of ``operation.reads``/``writes``
        (:data:`~rvlm.plugin.MISSING` when a document lacks one), or every field for a
        ``converts_to`` operation.
    :return: one :class:`~rvlm.plugin.DocumentUpdate` per document, in order
        (``DocumentUpdate(replace=...)`` for a ``converts_to`` operation). Raising, or returning
        another number of updates, fails the migration (resumable) naming your plugin.

    Example::

        @hookimpl
        def transform_documents(operation, documents):
            old, new = operation.params["old"], operation.params["new"]
            return [DocumentUpdate(set={new: d.get(old)}, delete=(old,))
                    if d.get(old) is not MISSING else NO_CHANGE for d in documents]
    """


@hookspec(firstresult=True)
def transform_columns(
    operation: DocumentOperation, columns: Mapping[str, Sequence[Any]], context: ApplyContext
) -> Mapping[str, Sequence[Any]] | None:
    """Optional: the same work as ``transform_documents``, on a batch held as columns.

    The executor calls it (on your plugin only) instead of ``transform_documents`` for hash
    documents, when every operation of the plan that reads or writes has it: the batch then
    travels as one list per name, with no object per document, which is several times
    cheaper for a plain field edit. It is never called for a ``converts_to`` operation or
    JSON documents, and it cannot move keys (``new_key``): return ``None`` for a batch it does
    not handle, and ``transform_documents`` gets that batch. Pure, like
    ``transform_documents``; the executor backs up, journals and writes exactly the same way.

    :param operation: the operation from the plan (its ``params`` are yours).
    :param columns: for each name of ``operation.reads``/``writes``, the batch's values in
        document order (``bytes``, or :data:`~rvlm.plugin.MISSING` where a document lacks
        it), as left by the operations before it. Do not modify them.
    :return: ``None``, or for names of ``operation.writes`` only, one list each as long as
        the batch: per document the new value, :data:`~rvlm.plugin.MISSING` to delete it, or
        :data:`~rvlm.plugin.NO_CHANGE` to leave it as it is.

    Example (the rename of ``transform_documents``'s example)::

        @hookimpl
        def transform_columns(operation, columns):
            old, new = operation.params["old"], operation.params["new"]
            values = columns[old]
            return {new: [NO_CHANGE if v is MISSING else v for v in values],
                    old: [NO_CHANGE if v is MISSING else MISSING for v in values]}
    """


@hookspec
def post_create(plan: Plan, context: ApplyContext) -> None:
    """Called once after the target index was created, before waiting for it to be indexed."""


@hookspec
def validate(plan: Plan, context: ApplyContext) -> Sequence[CheckResult] | None:
    """Checks of your own after the migration (also run by ``rvlm validate``).

    Called once after indexing finished. Return :class:`~rvlm.plugin.CheckResult` items; a
    failed one makes the migration's result ``failed``. Read sampled documents with
    ``context.read_documents(plan.key_sample_after(), names)``.
    """


__all__ = [
    "PROJECT",
    "classify_change",
    "detect_changes",
    "estimate_operation",
    "hookimpl",
    "hookspec",
    "merge_patch_section",
    "post_create",
    "pre_drop",
    "rvlm_change_types",
    "transform_columns",
    "transform_documents",
    "validate",
]
