"""What RedisVL (0.28) reads of a schema file, so rvlm can say what RedisVL would not keep.

RedisVL's ``IndexSchema`` accepts ``name``, ``type``, ``path`` and ``attrs`` on a field (any
other key refuses the whole file), silently ignores index options and field attributes it
does not know, has no ``geoshape`` field type, and reads a tag field without a separator as
``,``. rvlm writes a schema for people (``rvlm index info --yaml``) with
``schema_to_dict(schema, redisvl=True)``, which loads in RedisVL, and prints
:func:`redisvl_notes` as comments above it, so nobody loses an option without being told.
"""

from __future__ import annotations

from rvlm.core.schema.model import IndexSchema
from rvlm.core.schema.yaml_format import schema_to_dict

#: Index keys RedisVL's ``IndexSchema`` keeps.
INDEX_KEYS = ("name", "prefix", "key_separator", "storage_type", "stopwords")
_COMMON = ("sortable", "index_missing", "no_index")
#: Field types and, for each, the attrs RedisVL keeps.
FIELD_ATTRS: dict[str, tuple[str, ...]] = {
    "text": (*_COMMON, "weight", "no_stem", "withsuffixtrie", "phonetic_matcher", "index_empty",
             "unf"),
    "tag": (*_COMMON, "separator", "case_sensitive", "withsuffixtrie", "index_empty"),
    "numeric": (*_COMMON, "unf"),
    "geo": _COMMON,
    "vector": ("dims", "algorithm", "datatype", "distance_metric", "initial_cap", "index_missing",
               "block_size", "m", "ef_construction", "ef_runtime", "epsilon",
               "graph_max_degree", "construction_window_size", "search_window_size",
               "compression", "reduce", "training_threshold"),
}


def redisvl_notes(schema: IndexSchema) -> list[str]:
    """One line for each thing in ``schema`` that RedisVL 0.28 refuses, ignores or reads
    differently (empty when RedisVL reads the schema exactly)."""
    data = schema_to_dict(schema, redisvl=True)
    notes = []
    ignored = [k for k in data["index"] if k not in INDEX_KEYS]
    if ignored:
        notes.append(f"RedisVL ignores the index options {', '.join(ignored)} (rvlm keeps "
                     "them)")
    for field in data["fields"]:
        name, ftype = field["name"], field["type"]
        known = FIELD_ATTRS.get(ftype)
        if known is None:
            notes.append(f"field {name!r}: RedisVL has no {ftype} fields and refuses this file "
                         "(rvlm reads it)")
            continue
        lost = [k for k in field["attrs"] if k not in known]
        if lost:
            notes.append(f"field {name!r}: RedisVL ignores {', '.join(lost)} (rvlm keeps them)")
        if ftype == "tag" and schema.storage_type == "json" and "separator" not in field["attrs"]:
            notes.append(f"field {name!r}: no separator (a JSON tag's default); RedisVL reads "
                         "this as separator ',' and would split values at commas")
    return notes
