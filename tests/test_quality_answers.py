"""The source's answers in the backup dir: written whole or not at all, read back exactly, and
refused with one line when damaged, edited, foreign or of another version."""

from __future__ import annotations

import json
import zlib

import pytest

from rvlm.core.quality.answers import (
    ANSWERS_NAME,
    FieldProbes,
    Probe,
    SourceAnswers,
    StoredCheck,
    read_answers,
    write_answers,
)
from rvlm.core.quality.checks import parse_query_checks
from rvlm.core.quality.search import Answer
from rvlm.core.storage.files import BackupCorrupt

FP = "f" * 32


def sample() -> SourceAnswers:
    check = parse_query_checks({"queries": [{"name": "near", "query": "*=>[KNN 2 @e $v]",
                                             "params": {"v": [1.5, 2]}, "order": True},
                                            {"name": "broken", "query": "@t:{"}]})
    probes = FieldProbes(field="emb", target_field="emb2", datatype="float16", dims=2, k=2,
                         fetch=4, probes=[
                             Probe(key="doc:\udcff1", vector=b"\x00\x3c\x00\xbc",
                                   answer=Answer(keys=["doc:\udcff1", "doc:2"],
                                                 scores=[0.0, 0.25], total=2)),
                         ])
    return SourceAnswers(plan_fingerprint=FP, index="idx", seed=0, fields=[probes], checks=[
        StoredCheck(name="near", check=check.queries[0],
                    answer=Answer(keys=["doc:2"], total=1)),
        StoredCheck(name="fetch:3", check=None, answer=Answer(keys=["doc:3"], total=0)),
        StoredCheck(name="broken", check=check.queries[1], answer=Answer(error="Syntax")),
    ])


def test_round_trip(tmp_path):
    assert read_answers(tmp_path, FP) is None
    path = write_answers(tmp_path, sample())
    assert path.name == ANSWERS_NAME and not list(tmp_path.glob(".*tmp"))
    back = read_answers(tmp_path, FP)
    assert back == sample()
    assert back.field("emb").probes[0].key.encode("utf-8", "surrogateescape") == b"doc:\xff1"
    assert back.check_answers()["fetch:3"].total == 0


def _rewrite(tmp_path, change):
    path = tmp_path / ANSWERS_NAME
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _resum(doc):
    doc["crc32"] = zlib.crc32(json.dumps(doc["answers"], sort_keys=True, separators=(",", ":"),
                                         ensure_ascii=True).encode())


@pytest.mark.parametrize("change, message", [
    (lambda d: d["answers"].update(seed=1), "checksum mismatch (edited or damaged)"),
    (lambda d: d.update(version=2), "unknown version 2"),
    (lambda d: d.update(format="x"), "not an rvlm source answers file"),
    (lambda d: (d["answers"]["fields"][0]["probes"][0].update(vector="!!"), _resum(d)),
     "vector is not base64"),
    (lambda d: (d["answers"]["fields"][0]["probes"][0].update(vector="AAAA"), _resum(d)),
     "vector has 3 bytes, expected 4"),
    (lambda d: (d["answers"]["fields"][0].update(k="2"), _resum(d)), "k is missing or of"),
    (lambda d: (d["answers"]["fields"][0]["probes"][0]["answer"].update(scores=[1]),
                _resum(d)), "2 keys but 1 scores"),
    (lambda d: (d["answers"]["checks"][0]["check"].update(limit=-1), _resum(d)),
     "limit: expected an integer"),
])
def test_damage_is_refused_with_one_line(tmp_path, change, message):
    write_answers(tmp_path, sample())
    _rewrite(tmp_path, change)
    with pytest.raises(BackupCorrupt) as err:
        read_answers(tmp_path, FP)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith(str(tmp_path / ANSWERS_NAME))


def test_foreign_plan_and_garbage(tmp_path):
    write_answers(tmp_path, sample())
    with pytest.raises(BackupCorrupt, match="belong to another plan"):
        read_answers(tmp_path, "0" * 32)
    (tmp_path / ANSWERS_NAME).write_bytes(b"\x00{not json")
    with pytest.raises(BackupCorrupt, match="not valid JSON"):
        read_answers(tmp_path, FP)
