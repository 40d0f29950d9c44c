"""Which differences are which changes is plugin work (``detect_changes``), on the real server.

* a difference no installed plugin claims blocks the plan with one reason naming it (rvlm
  never ignores a difference): here ``move_path`` is disabled and a path changes;
* a third-party plugin can claim a kind of difference (here the index language, with the
  built-in ``update_index`` disabled), and its change is planned like a built-in one;
* two plugins claiming one difference is an error naming both; a plugin returning a change of
  a type it does not own is a PluginError.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from rvlm.core.migrate.planner import make_plan
from rvlm.core.plugins.host import PluginHost
from rvlm.core.schema.patch import patch_from_dict
from rvlm.plugin import (
    Change,
    ChangeType,
    Classification,
    Difference,
    PluginError,
    RvlmError,
    hookimpl,
)


def make_index(client: Any) -> None:
    client.execute_command("FT.CREATE", "docs", "ON", "HASH", "PREFIX", "1", "doc:",
                           "SCHEMA", "title", "TEXT", "n", "NUMERIC")
    for i in range(5):
        client.hset(f"doc:{i}", mapping={"title": f"hello {i}", "n": i})


class Language:
    """Claims index language changes as its own change type."""

    name = "language"

    def __init__(self, change_type: str = "set_language") -> None:
        self.change_type = change_type

    @hookimpl
    def rvlm_change_types(self) -> list[ChangeType]:
        return [ChangeType(name="set_language", description="Change the index language.")]

    @hookimpl
    def detect_changes(self, differences: Sequence[Difference]) -> list[Change]:
        return [Change(type=self.change_type, details={"to": d.after}, claims=(d,))
                for d in differences if d.kind == "index_option" and d.key == "language"]

    @hookimpl
    def classify_change(self, change: Change) -> Classification:
        return Classification(summary=f"stem in {change.details['to']}")


def plan_language(client: Any, host: PluginHost) -> Any:
    patch = patch_from_dict({"version": 1, "changes": {"index": {"language": "german"}}})
    return make_plan(client, "docs", patch=patch, host=host)


def test_a_difference_nobody_claims_blocks_the_plan(redis_client: Any, redis_url: str,
                                                    tmp_path: Path) -> None:
    make_index(redis_client)
    patch = tmp_path / "patch.yaml"
    patch.write_text("version: 1\nchanges:\n  update_fields:\n"
                     "    - {name: title, path: headline}\n")
    env = {**os.environ, "RVLM_DISABLE_PLUGINS": "move_path"}
    done = subprocess.run([sys.executable, "-m", "rvlm", "plan", "--index", "docs",
                           "--schema-patch", str(patch), "--url", redis_url,
                           "--plan-out", str(tmp_path / "plan.yaml")],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 1, done.stdout + done.stderr  # a blocked plan
    plan = yaml.safe_load((tmp_path / "plan.yaml").read_text())
    reasons = plan["diff_classification"]["blocked_reasons"]
    assert reasons == ["unhandled_difference: field 'title' path: 'title' -> 'headline': no "
                       "installed plugin handles this difference, and rvlm does not ignore "
                       "one; leave it out of the target, or install a plugin that claims it"]
    assert "no installed plugin handles this difference" in " ".join(done.stdout.split())


def test_a_third_party_plugin_claims_a_kind_of_difference(
        redis_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    make_index(redis_client)
    monkeypatch.setenv("RVLM_DISABLE_PLUGINS", "update_index")
    host = PluginHost(load_entry_points=False, extra=[Language()])
    plan = plan_language(redis_client, host)
    assert plan.supported, plan.blocked_reasons
    [change] = plan.changes
    assert (change.type, change.plugin, change.summary) == (
        "set_language", "language", "stem in german")
    assert plan.target_schema.index.language == "german"


def test_two_plugins_claiming_one_difference_is_an_error_naming_both(
        redis_client: Any) -> None:
    make_index(redis_client)
    host = PluginHost(load_entry_points=False, extra=[Language()])
    with pytest.raises(RvlmError, match=r"plugins '\w+' and '\w+' both claim the difference "
                                        r"index language: None -> 'german'; disable one") as e:
        plan_language(redis_client, host)
    assert "'language'" in str(e.value) and "'update_index'" in str(e.value)


def test_a_change_of_a_type_the_plugin_does_not_own_is_a_plugin_error(
        redis_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    make_index(redis_client)
    monkeypatch.setenv("RVLM_DISABLE_PLUGINS", "update_index")
    host = PluginHost(load_entry_points=False, extra=[Language(change_type="add_field")])
    with pytest.raises(PluginError, match="plugin 'language', detect_changes: returned a "
                                          "'add_field' change, a change type it does not own"):
        plan_language(redis_client, host)
