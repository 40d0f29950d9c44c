"""What the wizard says about each field attribute, and which attributes go with which vector
algorithm."""

from __future__ import annotations

#: One line per attribute, shown when the wizard asks for its value.
ATTR_HELP: dict[str, str] = {
    "weight": "relevance weight of this text field in full-text scoring (a number > 0)",
    "no_stem": "index words as written, without stemming (y/n)",
    "withsuffixtrie": "keep a suffix trie for fast *suffix and *contains* queries (y/n)",
    "phonetic_matcher": "phonetic matching: dm:en, dm:fr, dm:pt or dm:es ('none' to turn off)",
    "sortable": "keep the value in a sort key so SORTBY on it is fast (y/n)",
    "unf": "sort on the raw value, not the normalised (lower-cased) one (y/n)",
    "no_index": "store the value for sorting/returning but do not index it (y/n)",
    "index_missing": "make documents without this field findable with ismissing() (y/n)",
    "index_empty": "make documents with an empty value findable (y/n)",
    "separator": "the character that separates tags in one value ('none' for the default)",
    "case_sensitive": "keep the case of tags instead of lower-casing them (y/n)",
    "coord_system": "coordinates of shapes: spherical (lon/lat) or flat (cartesian)",
    "dims": "number of components of each vector (a whole number > 0)",
    "algorithm": "vector index algorithm: flat (exact), hnsw (graph), svs-vamana (compressed)",
    "datatype": "type of each vector component; changing it rewrites every stored vector",
    "distance_metric": "how vectors are compared: cosine, l2 (euclidean) or ip (inner product)",
    "initial_cap": "initial capacity of the vector index in vectors ('none' for the default)",
    "block_size": "FLAT: vectors per memory block ('none' for the default 1024)",
    "m": "HNSW: edges per node; more is more accurate and uses more memory ('none' for 16)",
    "ef_construction": "HNSW: candidates examined while building ('none' for 200)",
    "ef_runtime": "HNSW: candidates examined per query ('none' for 10)",
    "epsilon": "HNSW/SVS: range query boundary factor ('none' for 0.01)",
    "graph_max_degree": "SVS-VAMANA: maximum edges per node ('none' for the default)",
    "construction_window_size": "SVS-VAMANA: search window while building ('none' for default)",
    "search_window_size": "SVS-VAMANA: search window per query ('none' for the default)",
    "compression": "SVS-VAMANA: LVQ4, LVQ8, LVQ4x4, LVQ4x8, LeanVec4x8, LeanVec8x8 ('none' off)",
    "reduce": "SVS-VAMANA LeanVec: reduced dimensions ('none' for the default)",
    "training_threshold": "SVS-VAMANA: vectors collected before compression training",
}

VECTOR_COMMON = ("dims", "algorithm", "datatype", "distance_metric", "index_missing")
PHONETIC = ("dm:en", "dm:fr", "dm:pt", "dm:es")
COMPRESSION = ("LVQ4", "LVQ8", "LVQ4x4", "LVQ4x8", "LeanVec4x8", "LeanVec8x8")
#: The number of components SVS-VAMANA supports (FLOAT16 and FLOAT32 only).
SVS_DATATYPES = ("float16", "float32")
