"""The plugin host as a user sees it through ``rvlm plugins``.

* a plugin registered with the ``rvlm_plugin`` fixture is listed, and gone after its test;
* two plugins claiming one change type is one error line naming both (exit 2);
* ``RVLM_DISABLE_PLUGINS`` blocks built-in and installed plugins;
* an installed plugin whose entry point fails to import, or that implements a hook that does
  not exist (a misspelt ``transform_document``), is listed with its error, is not loaded, and
  the CLI still works (plans of other changes too). Installed plugins are real distributions:
  a ``*.dist-info`` folder with an ``entry_points.txt`` on ``PYTHONPATH``, which is what pip
  leaves in site-packages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rvlm.cli.main import app
from rvlm.core.plugins.host import DEFAULT_PLUGINS, get_host
from rvlm.plugin import ChangeType, hookimpl

pytest_plugins = ["pytester"]

runner = CliRunner()
BUILTINS = sorted(m.rsplit(".", 1)[-1] for m in DEFAULT_PLUGINS)


class ClaimPlugin:
    """A plugin object that owns one change type."""

    def __init__(self, change_type: str, version: str = "9.9.9") -> None:
        self.change_type = change_type
        self.version = version

    @hookimpl
    def rvlm_change_types(self) -> list[ChangeType]:
        return [ChangeType(name=self.change_type, description="a test change")]


def _listed(env: dict[str, str] | None = None) -> dict[str, Any]:
    result = runner.invoke(app, ["plugins", "--json"], env=env)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in data["plugins"]}


def test_builtins_are_listed_with_their_change_types() -> None:
    plugins = _by_name(_listed())
    for name in BUILTINS:
        assert plugins[name]["builtin"] is True
        assert name in plugins[name]["change_types"]  # each built-in owns its namesake
        assert "rvlm_change_types" in plugins[name]["hooks"]
        assert "classify_change" in plugins[name]["hooks"]


def test_registered_plugin_is_listed(rvlm_plugin: Any) -> None:
    rvlm_plugin(ClaimPlugin("probe_change"), name="probe_plugin")
    probe = _by_name(_listed())["probe_plugin"]
    assert probe == {"name": "probe_plugin", "version": "9.9.9", "builtin": False,
                     "hooks": ["rvlm_change_types"], "change_types": ["probe_change"]}
    human = runner.invoke(app, ["plugins"], env={"COLUMNS": "200"})
    assert human.exit_code == 0
    line = next(x for x in human.stdout.splitlines() if "probe_plugin" in x)
    assert "9.9.9" in line and "probe_change" in line and "no" in line


def test_fixture_unregisters_after_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(textwrap.dedent("""
        from rvlm.core.plugins.host import get_host
        from rvlm.plugin import ChangeType, hookimpl

        class Probe:
            @hookimpl
            def rvlm_change_types(self):
                return [ChangeType(name="inner_change", description="x")]

        def test_inner(rvlm_plugin):
            rvlm_plugin(Probe(), name="inner_plugin")
            assert get_host().has("inner_plugin")
    """))
    # the inner session has no ini file: pytest-asyncio (not needed here) would warn about
    # its unset loop scope
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:asyncio", "-q")
    result.assert_outcomes(passed=1)
    assert not get_host().has("inner_plugin")
    assert "inner_plugin" not in _by_name(_listed())


def test_two_plugins_claiming_one_change_type_is_one_error_naming_both(
    rvlm_plugin: Any,
) -> None:
    rvlm_plugin(ClaimPlugin("shared_change"), name="first_plugin")
    rvlm_plugin(ClaimPlugin("shared_change"), name="second_plugin")
    for args in (["plugins"], ["plugins", "--json"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "'first_plugin'" in lines[0] and "'second_plugin'" in lines[0]
        assert "'shared_change'" in lines[0] and "RVLM_DISABLE_PLUGINS" in lines[0]


def test_claiming_a_builtin_change_type_names_the_builtin(rvlm_plugin: Any) -> None:
    rvlm_plugin(ClaimPlugin("add_field"), name="usurper")
    result = runner.invoke(app, ["plugins"])
    assert result.exit_code == 2
    assert "'add_field'" in result.stderr and "'usurper'" in result.stderr


# -- installed plugins (entry points), in a fresh process ------------------------------------


def _install_fake_distribution(site: Path, dist: str, version: str, entry_name: str,
                               module: str, source: str) -> None:
    """What pip leaves behind for a plugin package: the module and its dist-info."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[rvlm]\n{entry_name} = {module}\n")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    _install_fake_distribution(tmp_path, "rvlm_good_plugin", "1.2.3", "good_plugin",
                               "rvlm_good_plugin", """
        from rvlm.plugin import ChangeType, hookimpl

        @hookimpl
        def rvlm_change_types():
            return [ChangeType(name="good_change", description="from an entry point")]
    """)
    _install_fake_distribution(tmp_path, "rvlm_broken_plugin", "0.1", "broken_plugin",
                               "rvlm_broken_plugin", """
        raise ImportError("rvlm_broken_plugin needs libfoo, which is not installed")
    """)
    return tmp_path


def _rvlm(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "RVLM_DISABLE_PLUGINS"}
    environ.update(PYTHONPATH=str(site), COLUMNS="200", **env)
    return subprocess.run([sys.executable, "-m", "rvlm", *args], capture_output=True,
                          text=True, env=environ, timeout=60, check=False)


def test_entry_point_plugins_and_a_broken_one(site: Path) -> None:
    done = _rvlm(site, "plugins", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    good = _by_name(data)["good_plugin"]
    assert good["version"] == "1.2.3" and good["builtin"] is False
    assert good["change_types"] == ["good_change"]
    assert "broken_plugin" not in _by_name(data)
    [broken] = [e for e in data["load_errors"] if e["name"] == "broken_plugin"]
    assert broken["error"] == "ImportError: rvlm_broken_plugin needs libfoo, which is not installed"
    assert set(BUILTINS) <= set(_by_name(data))

    human = _rvlm(site, "plugins")
    assert human.returncode == 0, human.stderr
    assert "Traceback" not in human.stderr
    assert "Failed to load" in human.stdout
    row = next(x for x in human.stdout.splitlines() if "broken_plugin" in x)
    assert "needs libfoo" in row

    # the CLI still works with a broken plugin installed
    version = _rvlm(site, "--version")
    assert version.returncode == 0 and version.stdout.startswith("rvlm ")


def test_disable_plugins_blocks_builtin_and_installed(site: Path) -> None:
    done = _rvlm(site, "plugins", "--json", RVLM_DISABLE_PLUGINS="good_plugin, quantize")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    names = set(_by_name(data))
    assert "good_plugin" not in names and "quantize" not in names
    assert set(BUILTINS) - {"quantize"} <= names
    assert data["disabled"] == ["good_plugin", "quantize"]
    assert not any(e["name"] == "good_plugin" for e in data["load_errors"])
    human = _rvlm(site, "plugins", RVLM_DISABLE_PLUGINS="quantize")
    assert "disabled by RVLM_DISABLE_PLUGINS: quantize" in human.stdout
    assert not any(line.startswith("│ quantize ") for line in human.stdout.splitlines())


MISSPELT = """
    from rvlm.plugin import NO_CHANGE, ChangeType, hookimpl

    @hookimpl
    def rvlm_change_types():
        return [ChangeType(name="misspelt_change", patch_section="misspelt",
                           description="a plugin with a typo in a hook name")]

    @hookimpl
    def transform_document(operation, documents):  # should be transform_documents
        return [NO_CHANGE] * len(documents)
"""


def test_a_misspelt_hook_is_a_load_error_shown_by_rvlm_plugins(site: Path) -> None:
    _install_fake_distribution(site, "rvlm_misspelt_plugin", "2.0", "misspelt_plugin",
                               "rvlm_misspelt_plugin", MISSPELT)
    done = _rvlm(site, "plugins", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert "misspelt_plugin" not in _by_name(data)  # not loaded: it would never transform
    [error] = [e for e in data["load_errors"] if e["name"] == "misspelt_plugin"]
    assert error["error"].startswith(
        "transform_document: no such hook (did you mean transform_documents?)")
    assert "good_plugin" in _by_name(data)  # the others load as usual

    human = _rvlm(site, "plugins")
    assert human.returncode == 0, human.stderr
    assert "Failed to load" in human.stdout and "Traceback" not in human.stderr
    text = " ".join(human.stdout.split())
    assert "misspelt_plugin" in text and "did you mean transform_documents?" in text


def test_a_misspelt_plugin_does_not_take_other_commands_down(site: Path, redis_client: Any,
                                                             redis_url: str,
                                                             tmp_path: Path) -> None:
    _install_fake_distribution(site, "rvlm_misspelt_plugin", "2.0", "misspelt_plugin",
                               "rvlm_misspelt_plugin", MISSPELT)
    redis_client.execute_command("FT.CREATE", "idx", "ON", "HASH", "PREFIX", "1", "doc:",
                                 "SCHEMA", "t", "TEXT", "n", "NUMERIC")
    redis_client.hset("doc:1", mapping={"t": "hello", "n": 1})
    patch = tmp_path / "patch.yaml"
    patch.write_text("version: 1\nchanges:\n  remove_fields: [n]\n")
    done = _rvlm(site, "plan", "--index", "idx", "--schema-patch", str(patch), "--url",
                 redis_url, "--plan-out", str(tmp_path / "plan.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "remove field 'n'" in done.stdout
    # a patch that needs the plugin that did not load: one line, nothing planned
    patch.write_text("version: 1\nchanges:\n  misspelt: {}\n")
    refused = _rvlm(site, "plan", "--index", "idx", "--schema-patch", str(patch), "--url",
                    redis_url, "--plan-out", str(tmp_path / "refused.yaml"))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "misspelt" in refused.stderr
    assert not (tmp_path / "refused.yaml").exists()
