"""The ``hash_to_json`` change: move an index's documents from hash to JSON storage.

A schema patch section (``changes: hash_to_json: {...}``) turns the target schema into a JSON
index over the same fields (or a new prefix), and the plan gets one document operation that
replaces every hash with a JSON document, typed field by field (see :mod:`.convert`). The
executor does the rest: backup of every original field, journal, resume and rollback, exactly
as for the built-in changes.

Hooks: ``rvlm_change_types``, ``merge_patch_section``, ``classify_change``, ``pre_drop`` (every
document is checked, read-only, before anything is dropped), ``transform_documents`` and
``validate``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import attrs

from rvlm.plugin import (
    ApplyContext,
    Change,
    ChangeType,
    CheckResult,
    Classification,
    Document,
    DocumentOperation,
    DocumentUpdate,
    Field,
    IndexSchema,
    Plan,
    PlanContext,
    RvlmError,
    TagAttrs,
    VectorAttrs,
    hookimpl,
)
from rvlm_hash_to_json.convert import (
    ConversionError,
    FieldRule,
    Options,
    check_layout,
    convert_batch,
    default_path,
    parse_path,
)

#: The plugin's name: its entry point name, its change type, its patch section and the
#: ``plugin`` of the operation it plans.
NAME = "hash_to_json"
#: Documents read per round trip by the ``pre_drop`` check.
CHECK_BATCH = 500
#: Problems listed by ``pre_drop`` before it says "and N more".
MAX_PROBLEMS = 5


def core_supports_conversion() -> bool:
    """True when this rvlm core can replace whole documents (``converts_to``)."""
    return "converts_to" in attrs.fields_dict(DocumentOperation)


@hookimpl
def rvlm_change_types() -> list[ChangeType]:
    """One change type, owning the ``hash_to_json`` patch section."""
    return [ChangeType(name=NAME, patch_section=NAME,
                       description="Move every document from hash to JSON storage (typed values, "
                                   "vectors as arrays), optionally under a new prefix.")]


def _hash_identifier(field: Field, options: Options) -> str:
    """The hash field a JSON target field is read from (the inverse of the path mapping)."""
    assert field.path is not None
    for name, path in options.paths.items():
        if path == field.path:
            return name
    keys = parse_path(field.path)
    if len(keys) != 1:  # pragma: no cover - merge only makes single-key default paths
        raise RvlmError(f"cannot tell which hash field {field.path} comes from")
    return keys[0]


def _json_field(field: Field, options: Options) -> Field:
    ident = field.identifier("hash")
    path = options.paths.get(ident) or default_path(ident)
    a = field.attrs
    if isinstance(a, TagAttrs):
        # Keep the hash's separator explicitly: JSON's default is none.
        a = attrs.evolve(a, separator=a.separator or ",")
    return Field(name=field.name, type=field.type, path=path, attrs=a,
                 unknown_attrs=field.unknown_attrs)


@hookimpl
def merge_patch_section(value: Any, target: IndexSchema, context: PlanContext) -> IndexSchema:
    """The target schema as a JSON index: every field at ``$.<hash field>`` (or its
    ``paths`` entry), tag separators explicit, the new prefix if one is given."""
    where = f"changes.{NAME}"
    try:
        options = Options.parse(value, where)
    except ValueError as exc:
        raise RvlmError(str(exc)) from None
    if target.storage_type != "hash":
        raise RvlmError(f"{where}: index {context.source.name!r} stores {target.storage_type} "
                        "documents already; this change converts hash to JSON")
    index = target.index
    if options.prefix is not None:
        if index.prefix != context.source.index.prefix:
            raise RvlmError(f"{where}.prefix: the patch also changes the prefix in "
                            "changes.index; set the new prefix in one place")
        if len(index.prefix) != 1:
            raise RvlmError(f"{where}.prefix: the index has prefixes {list(index.prefix)}; only "
                            "an index with one prefix can move to a new one")
        index = attrs.evolve(index, prefix=(options.prefix,))
    fields = [_json_field(f, options) for f in target.fields]
    try:
        check_layout([(f.identifier("hash"), g.path or "") for f, g in
                      zip(target.fields, fields, strict=True)])
    except ValueError as exc:
        raise RvlmError(f"{where}.paths: {exc}") from None
    return IndexSchema(index=attrs.evolve(index, storage_type="json"), fields=fields)


def rules_for(target: IndexSchema, options: Options) -> list[FieldRule]:
    """The conversion table of a (JSON) target schema made by :func:`merge_patch_section`."""
    rules = []
    for f in target.fields:
        a = f.attrs
        rules.append(FieldRule(
            hash=_hash_identifier(f, options), path=f.path or default_path(f.name), type=f.type,
            datatype=a.datatype if isinstance(a, VectorAttrs) else None,
            dims=a.dims if isinstance(a, VectorAttrs) else None,
            separator=(a.separator or ",") if isinstance(a, TagAttrs) else ",",
        ))
    return rules


def _examples(errors: Sequence[ConversionError], total: int | None = None) -> str:
    shown = "; ".join(str(e) for e in errors[:MAX_PROBLEMS])
    more = (total or len(errors)) - min(len(errors), MAX_PROBLEMS)
    return shown + (f" (and {more} more)" if more > 0 else "")


@hookimpl
def classify_change(change: Change, context: PlanContext) -> Classification:
    """Supported when the server has JSON, the index options fit JSON, sampled documents
    convert cleanly and new keys are free; one whole-document operation."""
    options = Options.parse(change.details.get("value"))
    source, target = context.source, context.target
    if not context.capabilities.json:
        return Classification.blocked("the server has no JSON module (RedisJSON); a JSON index "
                                      "cannot be built here")
    reasons = [f"index option {opt} names a hash field and has no JSON equivalent; remove it "
               "first" for opt in ("payload_field", "score_field", "language_field")
               if getattr(source.index, opt)]
    if reasons:
        return Classification.blocked(*reasons)
    if not core_supports_conversion():
        return Classification.blocked(
            "this rvlm core cannot replace whole documents (DocumentOperation.converts_to is "
            "missing); upgrade rvlm to a version with storage conversion")
    rules = rules_for(target, options)
    # Only the indexed fields can be sampled at plan time; pre_drop checks every field of
    # every document before anything is dropped.
    names = [r.hash for r in rules]
    sample = context.sample(names)
    docs = [{k: v for k, v in d.values.items() if isinstance(v, bytes)} for d in sample]
    results = convert_batch(docs, rules, attrs.evolve(options, unindexed="drop"),
                            [d.key for d in sample])
    errors = [r for r in results if isinstance(r, ConversionError)]
    if errors:
        return Classification.blocked(
            f"{len(errors)} of {len(sample)} sampled documents cannot be converted: "
            f"{_examples(errors)}")
    old_prefix, new_prefix = source.index.prefix, target.index.prefix
    rename: tuple[str, str] | None = None
    warnings = [
        "every document becomes a JSON document: applications that read these keys with "
        "HGET/HGETALL must switch to JSON.GET",
    ]
    if old_prefix != new_prefix:
        old, new = old_prefix[0], new_prefix[0]
        if old.startswith(new):
            return Classification.blocked(
                f"the new prefix {new!r} is a prefix of the old one {old!r}: converted keys "
                "would still match the old prefix; choose another")
        rename = (old, new)
        new_keys = [new.encode() + k[len(old):] for k in context.key_sample
                    if k.startswith(old.encode())]
        if new_keys and context.keys_exist is not None:
            taken = [k for k, e in zip(new_keys, context.keys_exist(new_keys), strict=True) if e]
            if taken:
                return Classification.blocked(
                    f"{len(taken)} of {len(new_keys)} sampled keys already exist under the new "
                    f"prefix (e.g. {taken[0].decode(errors='replace')})")
        warnings.append(f"documents move from prefix {old!r} to {new!r}")
    vector_rules = [r for r in rules if r.type == "vector"]
    if vector_rules:
        warnings.append("vectors are stored as arrays of numbers: JSON documents with vectors "
                        "take several times the memory of the hash bytes")
    summary = (f"convert every document of {source.name!r} from hash to JSON "
               f"({len(rules)} indexed fields typed"
               f"{f', moved to prefix {rename[1]!r}' if rename else ''})")
    operation = build_operation(rules, options, rename)
    return Classification(summary=summary, warnings=tuple(warnings), operations=(operation,),
                          details={"rules": [r.to_dict() for r in rules]})


def build_operation(rules: Sequence[FieldRule], options: Options,
                    rename: tuple[str, str] | None, *, converts: bool = True) -> DocumentOperation:
    """The plan's operation. ``converts=False`` leaves out ``converts_to`` (for tests that
    drive the conversion themselves on a core without it)."""
    extra: dict[str, Any] = {"converts_to": "json"} if converts else {}
    return DocumentOperation(
        plugin=NAME, kind="convert_storage", rename_prefix=rename,
        params={"rules": [r.to_dict() for r in rules], "options": options.to_dict(),
                "prefix": list(rename) if rename else None},
        **extra,
    )


def _operation_parts(operation: DocumentOperation) -> tuple[list[FieldRule], Options,
                                                            tuple[bytes, bytes] | None]:
    p = operation.params
    rules = [FieldRule.from_dict(r) for r in p["rules"]]
    options = Options.parse(p["options"])
    prefix = p.get("prefix")
    moved = (prefix[0].encode(), prefix[1].encode()) if prefix else None
    return rules, options, moved


def _new_key(key: bytes, moved: tuple[bytes, bytes] | None) -> bytes | None:
    if moved is None or not key.startswith(moved[0]):
        return None
    return moved[1] + key[len(moved[0]):]


def convert_documents(operation: DocumentOperation, documents: Sequence[Document]
                      ) -> list[tuple[dict[str, Any], bytes | None]]:
    """``(JSON document, new key or None)`` per document of a batch; raises
    :class:`~rvlm.RvlmError` naming the first document that cannot be converted."""
    rules, options, moved = _operation_parts(operation)
    raw = [{k: bytes(v) for k, v in d.values.items() if isinstance(v, (bytes, bytearray))}
           for d in documents]
    out = []
    for doc, result in zip(documents, convert_batch(raw, rules, options,
                                                    [d.key for d in documents]), strict=True):
        if isinstance(result, ConversionError):
            raise RvlmError(str(result))
        out.append((result, _new_key(doc.key, moved)))
    return out


@hookimpl
def transform_documents(operation: DocumentOperation,
                        documents: Sequence[Document]) -> list[DocumentUpdate]:
    """One ``DocumentUpdate(replace=<JSON document>)`` per document. No ``new_key``: when the
    prefix changes, the executor derives each new key from the operation's ``rename_prefix``."""
    return [DocumentUpdate(replace=doc)
            for doc, _new_key in convert_documents(operation, documents)]


def _scan_hashes(client: Any, prefixes: Sequence[str]) -> Iterator[list[bytes]]:
    for prefix in prefixes:
        pattern = prefix.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")
        pattern = pattern.replace("[", "\\[").replace("]", "\\]") + "*"
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=CHECK_BATCH, _type="hash"):
            batch.append(key if isinstance(key, bytes) else str(key).encode())
            if len(batch) >= CHECK_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch


def _read_hashes(client: Any, keys: Sequence[bytes]) -> list[dict[str, bytes]]:
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.hgetall(k)
    out = []
    for reply in pipe.execute():
        doc = {}
        for name, value in (reply or {}).items():
            n = name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else str(name)
            doc[n] = value if isinstance(value, bytes) else str(value).encode()
        out.append(doc)
    return out


def check_all(client: Any, prefixes: Sequence[str], rules: Sequence[FieldRule],
              options: Options) -> tuple[int, list[ConversionError]]:
    """Convert (without writing) every hash under ``prefixes``; (documents seen, errors)."""
    seen = 0
    errors: list[ConversionError] = []
    for keys in _scan_hashes(client, prefixes):
        docs = _read_hashes(client, keys)
        seen += len(docs)
        errors += [r for r in convert_batch(docs, rules, options, keys)
                   if isinstance(r, ConversionError)]
    return seen, errors


@hookimpl
def pre_drop(plan: Plan, context: ApplyContext) -> list[str] | None:
    """Read every document (nothing is written) and refuse the migration if any cannot be
    converted, so a bad value is found before the index is dropped, not half-way."""
    ops = [o for o in plan.operations if o.plugin == NAME]
    if not ops or context.client is None:
        return None
    rules, options, _moved = _operation_parts(ops[0])
    seen, errors = check_all(context.client, plan.source_schema.index.prefix, rules, options)
    if not errors:
        return []
    return [f"hash_to_json: {len(errors)} of {seen} documents cannot be converted: "
            f"{_examples(errors)}"]


@hookimpl
def validate(plan: Plan, context: ApplyContext) -> list[CheckResult] | None:
    """The plan's sampled keys are JSON documents now, with every vector as an array."""
    ops = [o for o in plan.operations if o.plugin == NAME]
    if not ops or context.client is None:
        return None
    rules, _options, moved = _operation_parts(ops[0])
    keys = [k.encode() for k in plan.key_sample]
    keys = [_new_key(k, moved) or k for k in keys]
    bad: list[str] = []
    pipe = context.client.pipeline(transaction=False)
    for k in keys:
        pipe.type(k)
    for k, kind in zip(keys, pipe.execute(), strict=True):
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if kind not in ("ReJSON-RL", "none"):
            bad.append(f"{k.decode(errors='replace')} is a {kind}")
    vector_paths = [r.path for r in rules if r.type == "vector"]
    if not bad and vector_paths and keys:
        pipe = context.client.pipeline(transaction=False)
        for k in keys:
            pipe.execute_command("JSON.TYPE", k, vector_paths[0])
        for k, t in zip(keys, pipe.execute(raise_on_error=False), strict=True):
            flat = t
            while isinstance(flat, list) and flat:
                flat = flat[0]
            if isinstance(flat, bytes):
                flat = flat.decode()
            if flat not in (None, [], "array"):
                bad.append(f"{k.decode(errors='replace')}: {vector_paths[0]} is {flat}")
    return [CheckResult(name="hash_to_json:documents", passed=not bad,
                        details="sampled keys are JSON documents" if not bad else
                        f"{len(bad)} sampled keys were not converted, e.g. {bad[0]}")]
