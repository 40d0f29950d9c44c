"""The pure conversion: typing, paths and refusals, without a server."""

from __future__ import annotations

import numpy as np
import pytest
from rvlm_hash_to_json.convert import (
    ConversionError,
    FieldRule,
    Options,
    check_layout,
    convert_batch,
    default_path,
    parse_path,
)

RULES = [
    FieldRule(hash="title", path="$.title", type="text"),
    FieldRule(hash="genre", path="$.genre", type="tag", separator=","),
    FieldRule(hash="year", path="$.year", type="numeric"),
    FieldRule(hash="rating", path="$.stats.rating", type="numeric"),
    FieldRule(hash="vec", path="$.vec", type="vector", datatype="float32", dims=3),
    FieldRule(hash="q", path="$.q", type="vector", datatype="int8", dims=2),
]


def test_paths() -> None:
    assert parse_path("$.a.b") == ("a", "b")
    assert parse_path('$["odd name"].c') == ("odd name", "c")
    assert default_path("title") == "$.title"
    assert default_path("my-field") == '$["my-field"]'
    assert parse_path(default_path('we"ird')) == ('we"ird',)
    for bad in ("$", "a.b", "$.a[0]", "$..a", "$.*"):
        with pytest.raises(ValueError):
            parse_path(bad)


def test_layout_refuses_overlaps() -> None:
    check_layout([("a", "$.a"), ("b", "$.b.c")])
    with pytest.raises(ValueError, match="overlapping"):
        check_layout([("a", "$.x"), ("b", "$.x.y")])
    with pytest.raises(ValueError, match="overlapping"):
        check_layout([("a", "$.x"), ("b", "$.x")])


def test_options_are_validated() -> None:
    assert Options.parse(None) == Options()
    assert Options.parse({"prefix": "p:", "tags": "string"}).tags == "string"
    with pytest.raises(ValueError, match="unknown key 'prefx'"):
        Options.parse({"prefx": "p:"})
    with pytest.raises(ValueError, match="tags must be one of"):
        Options.parse({"tags": "list"})
    with pytest.raises(ValueError, match=r"paths\.vec"):
        Options.parse({"paths": {"vec": "vec"}})


def test_values_are_typed() -> None:
    vec = np.array([0.1, -2.5, 3.0], dtype=np.float32)
    doc = {"title": "Héllo".encode(), "genre": b"a, b ,,c", "year": b"1999", "rating": b"4.5",
           "vec": vec.tobytes(), "q": np.array([-3, 7], dtype=np.int8).tobytes(),
           "extra": b"kept"}
    [out] = convert_batch([doc], RULES, Options())
    assert out == {"title": "Héllo", "genre": ["a", "b", "c"], "year": 1999,
                   "stats": {"rating": 4.5}, "vec": [float(x) for x in vec], "q": [-3, 7],
                   "extra": "kept"}
    # float32 -> float64 -> JSON -> float32 is exact
    assert np.array(out["vec"], dtype=np.float32).tobytes() == vec.tobytes()


def test_tags_as_string_and_unindexed_modes() -> None:
    doc = {"genre": b"a,b", "blob": b"\xff\x00"}
    [err] = convert_batch([doc], RULES, Options())
    assert isinstance(err, ConversionError) and "'blob'" in str(err) and "base64" in str(err)
    [out] = convert_batch([doc], RULES, Options(tags="string", binary="base64"))
    assert out == {"genre": "a,b", "blob": {"base64": "/wA="}}
    [out] = convert_batch([doc], RULES, Options(unindexed="drop"))
    assert out == {"genre": ["a", "b"]}


def test_refusals_name_the_document() -> None:
    docs = [{"vec": b"\x00" * 5}, {"year": b"abc"}, {"year": b"inf"}, {"title": b"\xff"},
            {"year": b"1"}]
    out = convert_batch(docs, RULES, Options(), [b"k:0", b"k:1", b"k:2", b"k:3", b"k:4"])
    assert [type(o).__name__ for o in out] == ["ConversionError"] * 4 + ["dict"]
    assert "k:0" in str(out[0]) and "5 bytes, expected 12" in str(out[0])
    assert "not a number" in str(out[1])
    assert "cannot be stored in JSON" in str(out[2])
    assert "not UTF-8" in str(out[3])


def test_unindexed_field_colliding_with_a_path_is_refused() -> None:
    rules = [FieldRule(hash="t", path="$.title", type="text")]
    [err] = convert_batch([{"t": b"x", "title": b"y"}], rules, Options())
    assert isinstance(err, ConversionError) and "same JSON path" in str(err)
