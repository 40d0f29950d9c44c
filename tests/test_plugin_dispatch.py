"""How rvlm calls plugins, as a plugin author and a user see it, on the real server.

* pluggy makes every call: an implementation that takes only the arguments it uses works end
  to end (plan, apply, rollback), and a hook wrapper of another plugin runs around the owner's
  call (its warning is in the plan, its audit log names every rewritten key);
* a change-specific hook is only called on its owner: the plugins here never check whether
  a change, section or operation is theirs;
* a hook that raises or answers with the wrong shape is one line naming the plugin and the
  hook: while planning, exit 1 and no plan written; after the drop, a failed migration
  (exit 1, report ``failed``, the error in the journal) that the same command resumes once the
  plugin is fixed, and that rollback undoes byte for byte;
* a misspelt hook or an argument a hook does not offer is refused when the plugin registers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import rvlm
from rvlm.cli.main import app
from rvlm.core.plugins.host import PluginHost
from rvlm.plugin import (
    MISSING,
    NO_CHANGE,
    ChangeType,
    Classification,
    Document,
    DocumentOperation,
    DocumentUpdate,
    IndexSchema,
    PluginError,
    hookimpl,
)

runner = CliRunner()
COUNT = 12
NAME = "shout"


class Shout:
    """Upper-cases a hash field (``changes: {shout: {field: t}}``). Every hook takes fewer
    arguments than its spec offers. ``fail`` makes one hook misbehave:
    ``classify_raises``, ``classify_shape``, ``transform_raises``, ``transform_shape``."""

    name = NAME
    version = "1.0"

    def __init__(self, fail: str | None = None) -> None:
        self.fail = fail

    @hookimpl
    def rvlm_change_types(self) -> list[ChangeType]:
        return [ChangeType(name=NAME, patch_section=NAME, description="Upper-case a field.")]

    @hookimpl
    def merge_patch_section(self, target: IndexSchema) -> IndexSchema:
        return target

    @hookimpl
    def classify_change(self, change: Any) -> Any:
        if self.fail == "classify_raises":
            raise ValueError("the shout plugin cannot count")
        if self.fail == "classify_shape":
            return {"supported": True}
        field = change.details["value"]["field"]
        return Classification(summary=f"upper-case {field}", operations=[DocumentOperation(
            plugin=NAME, kind="upper", reads=[field], writes=[field], params={"field": field})])

    @hookimpl
    def transform_documents(self, operation: DocumentOperation,
                            documents: Sequence[Document]) -> Any:
        if self.fail == "transform_raises":
            raise ZeroDivisionError("shout divided by zero")
        field = operation.params["field"]
        updates = [NO_CHANGE if d.get(field) is MISSING else
                   DocumentUpdate(set={field: d.get(field).upper()}) for d in documents]
        if self.fail == "transform_shape":
            return updates[:-1]
        return updates


class Audit:
    """Only wrappers: adds a warning to every classified change, logs rewritten keys."""

    name = "audit"

    def __init__(self) -> None:
        self.rewritten: list[bytes] = []

    @hookimpl(wrapper=True)
    def classify_change(self, change: Any) -> Any:
        verdict = yield
        return Classification(**{**vars_of(verdict),
                                 "warnings": (*verdict.warnings, f"audited {change.type}")})

    @hookimpl(wrapper=True)
    def transform_documents(self, documents: Sequence[Document]) -> Any:
        updates = yield
        self.rewritten += [d.key for d, u in zip(documents, updates, strict=True)
                           if u is not NO_CHANGE]
        return updates


def vars_of(c: Classification) -> dict[str, Any]:
    return {k: getattr(c, k) for k in ("supported", "blocked_reasons", "warnings",
                                       "operations", "lossy", "summary", "details")}


def make_index(client: Any) -> dict[bytes, dict[bytes, bytes]]:
    client.execute_command("FT.CREATE", "idx", "ON", "HASH", "PREFIX", "1", "doc:",
                           "SCHEMA", "t", "TEXT", "n", "NUMERIC")
    for i in range(COUNT):
        client.hset(f"doc:{i}", mapping={"t": f"hello doc {i}", "n": i})
    client.hset("doc:none", mapping={"n": 99})  # no t: left alone
    return snapshot(client)


def snapshot(client: Any) -> dict[bytes, dict[bytes, bytes]]:
    return {k: client.hgetall(k) for k in sorted(client.scan_iter(match="doc:*"))}


def patch_file(tmp_path: Path) -> Path:
    path = tmp_path / "patch.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "changes": {NAME: {"field": "t"}}}))
    return path


def plan_cli(tmp_path: Path, url: str) -> Any:
    return runner.invoke(app, ["plan", "--index", "idx", "--schema-patch",
                               str(patch_file(tmp_path)), "--url", url,
                               "--plan-out", str(tmp_path / "plan.yaml")])


def apply_cli(tmp_path: Path, url: str) -> Any:
    return runner.invoke(app, ["apply", "--plan", str(tmp_path / "plan.yaml"), "--backup-dir",
                               str(tmp_path / "backup"), "--url", url, "--batch-size", "5",
                               "--yes", "--report-out", str(tmp_path / "report.yaml")])


def test_fewer_arguments_and_a_wrapper_end_to_end(redis_client: Any, redis_url: str,
                                                  tmp_path: Path, rvlm_plugin: Any,
                                                  protocol: int) -> None:
    original = make_index(redis_client)
    audit = Audit()
    rvlm_plugin(Shout())
    rvlm_plugin(audit)
    planned = plan_cli(tmp_path, redis_url)
    assert planned.exit_code == 0, planned.output
    plan = rvlm.Plan.load(tmp_path / "plan.yaml")
    [change] = plan.changes
    assert (change.type, change.plugin, change.summary) == (NAME, NAME, "upper-case t")
    assert "audited shout" in change.warnings  # the wrapper ran around the owner's call

    applied = apply_cli(tmp_path, redis_url)
    assert applied.exit_code == 0, applied.output
    for i in range(COUNT):
        assert redis_client.hget(f"doc:{i}", "t") == f"HELLO DOC {i}".encode()
    assert redis_client.hgetall("doc:none") == {b"n": b"99"}
    found = redis_client.execute_command("FT.SEARCH", "idx", "@t:hello", "NOCONTENT")
    assert (found[0] if isinstance(found, list) else found[b"total_results"]) == COUNT
    assert sorted(audit.rewritten) == sorted(f"doc:{i}".encode() for i in range(COUNT))

    assert rvlm.rollback(tmp_path / "backup", redis_url=redis_url).succeeded
    assert snapshot(redis_client) == original


@pytest.mark.parametrize(("fail", "message"), [
    ("classify_raises", "plugin 'shout', classify_change: ValueError: the shout plugin cannot "
                        "count"),
    ("classify_shape", "plugin 'shout', classify_change: returned {'supported': True} for "
                       "shout; expected a Classification"),
])
def test_a_failing_plugin_at_plan_time_is_one_line_and_exit_1(
        redis_client: Any, redis_url: str, tmp_path: Path, rvlm_plugin: Any, fail: str,
        message: str) -> None:
    make_index(redis_client)
    rvlm_plugin(Shout(fail))
    result = plan_cli(tmp_path, redis_url)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == f"error: {message}"
    assert "Traceback" not in result.output
    assert not (tmp_path / "plan.yaml").exists()


@pytest.mark.parametrize(("fail", "message"), [
    ("transform_raises", "plugin 'shout', transform_documents: ZeroDivisionError: shout "
                         "divided by zero"),
    ("transform_shape", "plugin 'shout', transform_documents: returned 4 updates for 5 "
                        "documents (upper); expected one DocumentUpdate per document"),
])
def test_a_failing_plugin_after_the_drop_is_a_failed_resumable_migration(
        redis_client: Any, redis_url: str, tmp_path: Path, rvlm_plugin: Any, fail: str,
        message: str, protocol: int) -> None:
    original = make_index(redis_client)
    shout = Shout()
    rvlm_plugin(shout)
    assert plan_cli(tmp_path, redis_url).exit_code == 0

    shout.fail = fail
    failed = apply_cli(tmp_path, redis_url)
    assert failed.exit_code == 1, failed.output
    assert "Traceback" not in failed.output
    report = yaml.safe_load((tmp_path / "report.yaml").read_text())
    assert report["result"] == "failed"
    assert report["rvlm"]["error"] == message
    assert any("re-run the same command to resume" in a for a in report["manual_actions"])
    journal = [json.loads(line)["rec"] for line in
               (tmp_path / "backup" / "journal-0.jsonl").read_text().splitlines()]
    assert [e["message"] for e in journal if e["event"] == "error"] == [message]
    assert snapshot(redis_client) == original  # the first batch failed before any write

    shout.fail = None  # the plugin is fixed: the same command resumes and finishes
    resumed = apply_cli(tmp_path, redis_url)
    assert resumed.exit_code == 0, resumed.output
    assert [redis_client.hget(f"doc:{i}", "t") for i in range(COUNT)] == [
        f"HELLO DOC {i}".encode() for i in range(COUNT)]
    assert rvlm.rollback(tmp_path / "backup", redis_url=redis_url).succeeded
    assert snapshot(redis_client) == original


# -- refused at registration ------------------------------------------------------------------


class Misspelt:
    @hookimpl
    def rvlm_change_types(self) -> list[ChangeType]:
        return [ChangeType(name="misspelt_change", description="x")]

    @hookimpl
    def transform_document(self, operation: Any, documents: Any) -> Any:
        return [NO_CHANGE] * len(documents)


class ExtraArgument:
    @hookimpl
    def classify_change(self, change: Any, context: Any, colour: Any) -> Any:
        return None


class BadDeclaration:
    @hookimpl
    def rvlm_change_types(self) -> Any:
        return "not a list"


@pytest.mark.parametrize(("plugin", "hook", "problem"), [
    (Misspelt(), "transform_document", "no such hook (did you mean transform_documents?)"),
    (ExtraArgument(), "classify_change", "takes argument(s) {'colour'} that the hook does not "
                                         "offer (it offers change, context)"),
    (BadDeclaration(), "rvlm_change_types", "returned 'not a list'; expected a list of "
                                            "ChangeType"),
])
def test_a_plugin_with_a_wrong_hook_is_refused_when_it_registers(plugin: Any, hook: str,
                                                                 problem: str) -> None:
    host = PluginHost(load_entry_points=False)
    with pytest.raises(PluginError) as caught:
        host.register(plugin, name="wrong")
    assert (caught.value.plugin, caught.value.hook) == ("wrong", hook)
    assert caught.value.problem.startswith(problem)
    assert "\n" not in str(caught.value)
    assert not host.has("wrong")
    assert "misspelt_change" not in host.change_types()
