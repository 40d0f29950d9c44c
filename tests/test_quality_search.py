"""KNN answers and recall measured on the real server, under RESP2 and RESP3: query vectors drawn
from stored documents, ties at the k-th distance, a refused query, a poor HNSW graph."""

from __future__ import annotations

import numpy as np
import pytest
from test_apply_helpers import wait_indexed
from test_quality_helpers import load, random_vectors, vector_index

from rvlm.core import vectors
from rvlm.core.errors import RvlmError
from rvlm.core.quality.probes import measure_field, probe_source
from rvlm.core.quality.recall import measure, query_recall
from rvlm.core.quality.search import Answer, draw_keys, knn_answers, read_vectors, search
from rvlm.core.redis.connection import connect, read_index


@pytest.fixture
def client(redis_client, redis_url, protocol):
    c = connect(redis_url)
    yield c
    c.close()


def test_knn_answers_are_sorted_with_distances(client):
    data = random_vectors(200, 8)
    vector_index(client, "idx", "d:", 8, metric="L2")
    load(client, "d:", data)
    wait_indexed(client, "idx")
    [answer] = knn_answers(client, "idx", "emb", [data[17].tobytes()], 12)
    assert answer.error is None and answer.total == 12 and len(answer.keys) == 12
    assert answer.keys[0] == "d:17" and answer.scores[0] == pytest.approx(0.0, abs=1e-6)
    expected = np.argsort(((data - data[17]) ** 2).sum(axis=1))[:12]
    assert list(answer.keys) == [f"d:{i}" for i in expected]
    assert list(answer.scores) == sorted(answer.scores)


def test_a_refused_query_is_an_answer_with_the_error(client):
    vector_index(client, "idx", "d:", 8)
    load(client, "d:", random_vectors(5, 8))
    wait_indexed(client, "idx")
    short, gone = knn_answers(client, "idx", "emb", [b"\x00" * 5], 3) + knn_answers(
        client, "idx", "nope", [b"\x00" * 32], 3)
    assert short.error and not short.keys
    assert gone.error and not gone.keys
    bad = search(client, "idx", "@emb:[", limit=10)
    assert bad.error


def test_query_keys_are_drawn_with_a_seed_and_vectors_read_in_the_index_datatype(client):
    data = random_vectors(300, 6)
    vector_index(client, "idx", "d:", 6, datatype="FLOAT16")
    load(client, "d:", vectors.encode_batch(data, "float16"))
    client.hset("d:300", "emb", b"\x01\x02")  # wrong size: an indexing failure
    vector_index(client, "jidx", "j:", 6, datatype="FLOAT16", storage="json")
    load(client, "j:", data, storage="json")
    wait_indexed(client, "idx")
    wait_indexed(client, "jidx")
    first = draw_keys(client, "idx", 20, seed=0)
    assert first == draw_keys(client, "idx", 20, seed=0)
    assert first != draw_keys(client, "idx", 20, seed=1)
    assert len(set(first)) == 20 and all(k.startswith(b"d:") for k in first)
    held = read_vectors(client, "hash", [*first, b"d:300", b"nope"], "emb", "float16", 6)
    assert [k for k, _ in held] == first
    assert held[0][1] == vectors.encode_batch(data[int(first[0][2:])][None, :], "float16")[0]
    jkeys = draw_keys(client, "jidx", 5, seed=0)
    jheld = read_vectors(client, "json", jkeys, "$.emb", "float16", 6)
    i = int(jkeys[0][2:])
    assert jheld[0] == (jkeys[0], vectors.encode_batch(data[i][None, :], "float16")[0])


def test_same_index_measures_full_recall_and_ties_are_not_misses(client):
    # every vector twice: the 10th and 11th nearest are at the same distance
    base = random_vectors(100, 16)
    data = np.repeat(base, 2, axis=0)
    vector_index(client, "a", "d:", 16, metric="L2")
    vector_index(client, "b", "d:", 16, metric="L2", params=["BLOCK_SIZE", "64"])
    load(client, "d:", data)
    wait_indexed(client, "a")
    wait_indexed(client, "b")
    schema = read_index(client, "a").schema
    probes = probe_source(client, schema, "emb", queries=50, k=9)
    assert len(probes.probes) == 50 and probes.fetch == 18
    quality = measure_field(client, "b", probes)
    assert quality.queries == 50
    assert quality.recall_at_k == 1.0 and quality.p5 == 1.0
    assert quality.lost_first_neighbour == 0


def test_flat_to_a_poor_hnsw_graph_measures_under_09(client):
    data = random_vectors(2000, 64)
    vector_index(client, "flat", "d:", 64, metric="L2")
    vector_index(client, "hnsw", "d:", 64, metric="L2", algorithm="HNSW",
                 params=["M", "2", "EF_CONSTRUCTION", "2", "EF_RUNTIME", "1"])
    load(client, "d:", data)
    wait_indexed(client, "flat")
    wait_indexed(client, "hnsw")
    probes = probe_source(client, read_index(client, "flat").schema, "emb")
    quality = measure_field(client, "hnsw", probes, min_recall=0.9)
    assert quality.queries == 100
    assert quality.recall_at_k < 0.9 and not quality.passed
    assert 0.0 <= quality.p5 < 0.9
    d = quality.to_dict()
    assert d["passed"] is False and d["min_recall"] == 0.9 and d["k"] == 10
    assert "under --min-recall 0.9" in quality.summary()


def test_the_source_must_answer(client):
    vector_index(client, "idx", "d:", 4)
    load(client, "d:", random_vectors(10, 4))
    wait_indexed(client, "idx")
    schema = read_index(client, "idx").schema
    with pytest.raises(RvlmError, match="no vector field 'nope'"):
        probe_source(client, schema, "nope")
    client.execute_command("FT.DROPINDEX", "idx")
    vector_index(client, "idx", "d:", 8)  # the same name, now 8 dims: the stored 4-d vectors
    wait_indexed(client, "idx")
    # fail to index, so there is nothing to draw from
    assert probe_source(client, read_index(client, "idx").schema, "emb").probes == ()


# -------------------------------------------------------------------------- unit


def test_recall_of_one_query():
    src = Answer(keys=["a", "b", "c", "d"], scores=[0.0, 0.1, 0.2, 0.2], total=4)
    # k=3: d ties with c, so either is accepted
    assert query_recall(src, Answer(keys=["a", "b", "d"], total=3), 3) == (1.0, False)
    assert query_recall(src, Answer(keys=["b", "d", "x"], total=3), 3) == (2 / 3, True)
    assert query_recall(src, Answer(error="gone"), 3) == (0.0, True)
    assert query_recall(Answer(), Answer(keys=["a"]), 3) is None
    moved = query_recall(src, Answer(keys=["n:a", "n:b", "n:c"]), 3,
                         key_map=lambda k: "n:" + k)
    assert moved == (1.0, False)


def test_measure_over_queries():
    src = [Answer(keys=[f"k{i}", f"k{i + 1}"], scores=[0.0, 1.0], total=2) for i in range(20)]
    tgt = [Answer(keys=[f"k{i}", "zz"]) if i % 4 == 0 else Answer(keys=[f"k{i}", f"k{i + 1}"])
           for i in range(20)]
    q = measure("emb", src, tgt, 2, min_recall=0.95)
    assert q.queries == 20 and q.recall_at_k == pytest.approx(0.875)
    assert q.p5 == 0.5 and q.lost_first_neighbour == 0 and not q.passed
    with pytest.raises(ValueError):
        measure("emb", src, tgt[:3], 2)
