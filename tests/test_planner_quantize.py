"""Quantization as planned: the scheme chosen for the metric and recorded in the plan, and the
error measured on the sampled vectors. INT8/UINT8 schemes are checked with capabilities that
claim Redis 8.2 (the embedded RediSearch 2.10 has no INT8), and the real gate is asserted for
whatever the server can do."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from rvlm.core import vectors
from rvlm.core.migrate.plan import Plan
from rvlm.core.migrate.planner import PlanOptions, make_plan
from rvlm.core.redis.capabilities import Capabilities, detect
from rvlm.core.schema.patch import patch_from_dict

DIMS = 8
N = 40
INT8_SERVER = Capabilities(redis_version="8.2.0", search_version=80200, json_version=80200)


def make_index(client, storage: str, metric: str, positive: bool = False,
               name: str = "q") -> np.ndarray:
    rng = np.random.default_rng(11)
    data = rng.normal(scale=0.3, size=(N, DIMS)).astype(np.float32)
    if positive:
        data = np.abs(data)
    params = ["TYPE", "FLOAT32", "DIM", str(DIMS), "DISTANCE_METRIC", metric]
    pipe = client.pipeline(transaction=False)
    if storage == "hash":
        client.execute_command("FT.CREATE", name, "ON", "HASH", "PREFIX", "1", "v:", "SCHEMA",
                               "emb", "VECTOR", "FLAT", str(len(params)), *params)
        for i, row in enumerate(data):
            pipe.hset(f"v:{i}", mapping={"emb": row.tobytes()})
    else:
        client.execute_command("FT.CREATE", name, "ON", "JSON", "PREFIX", "1", "v:", "SCHEMA",
                               "$.emb", "AS", "emb", "VECTOR", "FLAT", str(len(params)), *params)
        for i, row in enumerate(data):
            pipe.execute_command("JSON.SET", f"v:{i}", "$",
                                 json.dumps({"emb": [float(x) for x in row]}))
    pipe.execute()
    return data


def quantize_plan(client, datatype: str, **kw) -> Plan:
    patch = patch_from_dict({"version": 1, "changes": {"update_fields": [
        {"name": "emb", "attrs": {"datatype": datatype}}]}}, "patch.yaml")
    return make_plan(client, "q", patch=patch, **kw)


def quantize_change(p: Plan) -> dict:
    [c] = [c for c in yaml.safe_load(p.to_yaml())["rvlm"]["changes"] if c["type"] == "quantize"]
    return c


@pytest.mark.parametrize("storage", ["hash", "json"])
@pytest.mark.parametrize("metric, datatype, positive, kind, has_offset", [
    ("COSINE", "int8", False, "per_vector_max_abs", False),
    ("L2", "int8", False, "global_scale", False),
    ("IP", "int8", False, "global_scale", False),
    ("L2", "uint8", False, "global_affine", True),
    ("IP", "uint8", True, "global_scale", False),
    ("COSINE", "uint8", True, "per_vector_max_abs", False),
])
def test_int_scheme_is_chosen_for_the_metric_and_recorded(redis_client, storage, metric,
                                                           datatype, positive, kind, has_offset):
    data = make_index(redis_client, storage, metric, positive)
    p = quantize_plan(redis_client, datatype, capabilities=INT8_SERVER)
    assert p.supported, p.blocked_reasons
    c = quantize_change(p)
    scheme = c["details"]["scheme"]
    assert scheme["kind"] == kind
    assert scheme["source_datatype"] == "float32" and scheme["target_datatype"] == datatype
    assert scheme["calibration_sample_size"] == N
    if kind != "per_vector_max_abs":
        peak = float(np.abs(data).max())
        if has_offset:
            assert scheme["offset"] == pytest.approx(float(data.min()), rel=1e-6)
            assert scheme["scale"] == pytest.approx(255 / (float(data.max()) - float(data.min())),
                                                    rel=1e-6)
        else:
            qmax = 127 if datatype == "int8" else 255
            assert scheme["scale"] == pytest.approx(qmax / peak, rel=1e-6)
            assert scheme.get("offset", 0.0) == 0.0
        assert scheme["clip_fraction"] == 0.0
    # the operation the executor runs carries the same scheme
    [op] = p.operations
    assert op.kind == "convert_vector" and op.params["scheme"] == scheme
    assert op.params["storage_type"] == storage
    assert vectors.QuantizationScheme.from_dict(scheme).kind == kind
    assert p.lossy and op.lossy
    # error measured on the sample: present and sane
    err = c["details"]["error_on_sample"]
    assert err["sample_size"] == N
    assert 0 < err["max_abs_error"] < 0.05 and 0 < err["mean_abs_error"] <= err["max_abs_error"]
    assert 0.99 < err["min_cosine_similarity"] <= err["mean_cosine_similarity"] <= 1.0
    [w] = c["warnings"]
    assert "lossy" in w and f"{N} sampled vectors" in w and "max abs error" in w
    assert "cosine similarity" in w


@pytest.mark.parametrize("metric", ["COSINE", "IP"])
def test_uint8_with_negative_components_is_blocked(redis_client, metric):
    make_index(redis_client, "hash", metric, positive=False)
    p = quantize_plan(redis_client, "uint8", capabilities=INT8_SERVER)
    [reason] = [r for c in p.changes for r in c.blocked_reasons]
    assert "negative" in reason and "use int8 instead" in reason
    assert not p.operations


def test_int8_on_this_server(redis_client):
    """The real gate: supported with a recorded scheme on Redis 8, blocked before anything
    runs on an older query engine."""
    make_index(redis_client, "hash", "L2")
    p = quantize_plan(redis_client, "int8")
    if detect(redis_client).int8:
        assert p.supported
        assert quantize_change(p)["details"]["scheme"]["kind"] == "global_scale"
    else:
        assert not p.supported and not p.operations
        [reason] = p.blocked_reasons
        assert "INT8" in reason and "Redis 8.0" in reason


@pytest.mark.parametrize("datatype, lossy", [("float16", True), ("bfloat16", True),
                                             ("float64", False)])
def test_float_casts(redis_client, datatype, lossy):
    make_index(redis_client, "hash", "COSINE")
    p = quantize_plan(redis_client, datatype)
    assert p.supported
    c = quantize_change(p)
    narrowing = datatype in ("float16", "bfloat16")
    assert c["details"]["scheme"] == {"kind": "cast", "source_datatype": "float32",
                                      "target_datatype": datatype,
                                      **({"overflow": "clip"} if narrowing else {})}
    # the overflow policy is decided in the plan, and said
    said = [w for w in p.all_warnings() if "is clipped to it" in w]
    assert len(said) == (1 if narrowing else 0)
    assert p.lossy is lossy
    err = c["details"]["error_on_sample"]
    if lossy:
        assert 0 < err["max_abs_error"] < 0.01
        assert err["mean_cosine_similarity"] > 0.9999
        assert any("lossy" in w for w in p.all_warnings())
    else:
        assert err["max_abs_error"] == 0.0 and err["min_cosine_similarity"] == 1.0
        assert not any("lossy" in w for w in p.all_warnings())
    assert f"{4 * DIMS} -> {vectors.WIDTH[datatype] * DIMS} bytes" in c["summary"]


def test_sample_size_limits_the_calibration(redis_client):
    make_index(redis_client, "hash", "L2")
    p = quantize_plan(redis_client, "int8", capabilities=INT8_SERVER,
                      options=PlanOptions(sample_size=10))
    c = quantize_change(p)
    assert c["details"]["scheme"]["calibration_sample_size"] == 10
    assert c["details"]["error_on_sample"]["sample_size"] == 10


def test_wrong_length_vectors_are_left_out_of_the_sample(redis_client):
    make_index(redis_client, "hash", "L2")
    redis_client.hset("v:bad", "emb", b"\x00" * 3)  # fails indexing: not in the sample
    p = quantize_plan(redis_client, "float16")
    assert p.supported
    assert quantize_change(p)["details"]["error_on_sample"]["sample_size"] == N
