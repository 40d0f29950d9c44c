"""The CLI's conventions and output, as a user meets them: in a terminal (a pty, through
pexpect) and without one (a pipe, as in CI or ``| tee``), with and without ``NO_COLOR``, and
``--json`` parsed.

Each test names the point of the "a CLI people like" issue it covers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest
import yaml
from test_apply_helpers import BadPlugin, build_plan, make_hash_index, rename_op, snapshot
from typer.testing import CliRunner

from rvlm.cli.main import app
from rvlm.cli.output import human_bytes
from rvlm.cli.progress import LineReporter
from rvlm.core.redis.connection import read_index

runner = CliRunner()
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: SGR sequences that set a colour (foreground/background, 8/16/256/true colour)
COLOUR_SGR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;[0-9;]*)?m")
PATCH = """\
version: 1
changes:
  rename_fields:
    - {old_name: t, new_name: title}
  update_fields:
    - name: v
      attrs: {datatype: float16}
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "NO_COLOR", "FORCE_COLOR", "COLUMNS", "RVLM_DEBUG")}
    env.update(extra)
    return env


#: the installed command, as a user runs it
RVLM = str(Path(sys.executable).parent / "rvlm")


def rvlm(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
         stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``rvlm ARGS`` in a fresh process, stdout and stderr pipes (no terminal)."""
    return subprocess.run([RVLM, *args], capture_output=True,
                          text=True, env=env or _env(COLUMNS="100"), cwd=cwd, timeout=300,
                          check=False, input=stdin)


def in_terminal(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                answers: tuple[tuple[str, str], ...] = (), width: int = 100,
                ) -> tuple[str, int]:
    """``rvlm ARGS`` in a pseudo-terminal: (everything it drew, exit status). ``answers``:
    (prompt regex, reply) pairs, answered in order."""
    child = pexpect.spawn(RVLM, list(args), env=env or _env(),
                          cwd=str(cwd) if cwd else None, dimensions=(40, width),
                          encoding="utf-8", timeout=300)
    seen = []
    for prompt, reply in answers:
        child.expect(prompt)
        seen.append(child.before + child.after)
        child.sendline(reply)
    child.expect(pexpect.EOF)
    seen.append(child.before)
    child.close()
    return "".join(seen), child.exitstatus if child.exitstatus is not None else -1


def plain(text: str) -> str:
    return ANSI.sub("", text).replace("\r", "")


@pytest.fixture
def planned(redis_client: Any, redis_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """An index ``idx`` (40 hash documents) and a lossy plan (rename + float16) for it."""
    make_hash_index(redis_client, n=40)
    (tmp_path / "patch.yaml").write_text(PATCH)
    done = rvlm("plan", "-i", "idx", "--schema-patch", "patch.yaml",
                "-o", "plan.yaml", "--url", redis_url,
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    yield {"url": redis_url, "dir": tmp_path, "client": redis_client}


# -- conventions: colour --------------------------------------------------------------------


def test_no_color_turns_colour_off_everywhere_and_color_forces_it() -> None:
    """NO_COLOR honoured everywhere (the error line, help), plus --color/--no-color."""
    bad_url = ("index", "list", "--url", "redis://127.0.0.1:1")
    out, code = in_terminal(*bad_url)
    assert code == 2 and "error:" in out
    assert COLOUR_SGR.search(out), "the error line is red in a terminal"
    for env, flag, commands in (
            (_env(NO_COLOR="1"), (), (bad_url, ("plan", "--no-such-option"), ("plan", "--help"))),
            (_env(), ("--no-color",), (bad_url, ("--help",)))):
        for args in commands:
            out, _ = in_terminal(*flag, *args, env=env)
            assert not COLOUR_SGR.search(out), (flag, args, out[:300])
            assert plain(out).strip()
    # --no-color after the command works too
    out, _ = in_terminal(*bad_url, "--no-color")
    assert not COLOUR_SGR.search(out)
    # --color: colour even into a pipe (and over NO_COLOR)
    piped = rvlm("--color", *bad_url, env=_env(NO_COLOR="1"))
    assert COLOUR_SGR.search(piped.stderr), piped.stderr
    assert not COLOUR_SGR.search(rvlm(*bad_url).stderr), "no colour into a pipe by default"


# -- conventions: help and usage errors -----------------------------------------------------


def _commands() -> list[tuple[str, Any]]:
    import typer.main

    root = typer.main.get_command(app)
    found = []
    stack = [("", root)]
    while stack:
        path, cmd = stack.pop()
        found.append((path, cmd))
        for name, sub in getattr(cmd, "commands", {}).items():
            stack.append((f"{path} {name}".strip(), sub))
    return found


def test_help_text_survives_rich_markup() -> None:
    """Help: the ``[default: ...]`` text that rich markup swallowed (server start --dir)."""
    from rich.text import Text

    for path, cmd in _commands():
        for param in cmd.params:
            help_text = getattr(param, "help", None) or ""
            shown = Text.from_markup(help_text).plain
            assert shown == help_text.replace("\\[", "["), (path, param.name, help_text)
    out = rvlm("server", "start", "--help", env=_env(COLUMNS="250")).stdout
    assert "Directory for the server's data and log." in out
    assert re.search(r"\[default: \(?~/\.rvlm/server-PORT, or \$RVLM_HOME/server-PORT\)?\]",
                     out), out


def test_help_has_no_type_on_flags_and_mode_is_a_choice_list() -> None:
    """Help: no ``<bool>`` on flags; ``--mode`` offered as a choice list."""
    wide = CliRunner(env={"COLUMNS": "250"})
    for path, _cmd in _commands():  # in-process: the same rendering, a fraction of the time
        out = wide.invoke(app, [*path.split(), "--help"])
        assert out.exit_code == 0, out.output
        assert "<bool>" not in out.stdout, path
        for verbose in (x for x in out.stdout.splitlines() if "--verbose" in x):
            assert "<int>" not in verbose, (path, verbose)  # -v counts; it takes no value
        assert "--help" in out.stdout
    assert "--verbose" in wide.invoke(app, ["plan", "--help"]).stdout
    plan_help = rvlm("plan", "--help", env=_env(COLUMNS="250")).stdout
    assert "drop_recreate|online" in plan_help
    assert "fail_fast|continue_on_error" in rvlm("batch", "plan", "--help",
                                                 env=_env(COLUMNS="250")).stdout
    bad = rvlm("plan", "-i", "x", "--schema-patch", "p.yaml", "--mode", "sideways")
    assert bad.returncode == 2
    assert "'drop_recreate', 'online'" in bad.stderr


@pytest.mark.parametrize("args", [
    ("plan", "--no-such-option"),      # unknown option
    ("plna",),                         # unknown command
    ("plan", "--schema-patch", "patch.yaml"),      # missing required option
    ("apply", "--plan"),               # option without its value
    ("index", "info", "-i", "x", "extra"),  # stray argument
])
def test_usage_errors_are_one_line(args: tuple[str, ...]) -> None:
    """Help: usage errors as one line like every other error, not a framed panel."""
    done = rvlm(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "--help" in lines[0]  # it says where to look
    assert not re.search("[╭╮╰╯│─]", done.stderr)
    assert done.stdout == ""
    # the same line with NO_COLOR (in-process, to keep the test quick)
    again = CliRunner().invoke(app, list(args), env={"NO_COLOR": "1"}, prog_name="rvlm")
    assert again.exit_code == 2 and again.stderr == done.stderr


# -- conventions: completion, quiet / verbose / debug, deprecations --------------------------


def test_shell_completion(tmp_path: Path) -> None:
    """Shell completion available (rvlm --install-completion)."""
    script = RVLM
    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        # from bash, as a user would (typer finds the shell among the parent processes;
        # the "; exit" keeps bash from replacing itself with rvlm)
        line = " ".join([script, *args])
        return subprocess.run(["bash", "-c", f"{line}; exit $?"], capture_output=True, text=True,
                              env=_env(**env), timeout=60, check=False)

    shown = run("--show-completion")
    assert shown.returncode == 0, shown.stderr
    assert "_RVLM_COMPLETE" in shown.stdout and "complete " in shown.stdout
    # what the script asks when you type "rvlm pl<TAB>", and "rvlm batch <TAB>"
    asked = run(_RVLM_COMPLETE="complete_bash", COMP_WORDS="rvlm pl", COMP_CWORD="1")
    assert asked.stdout.split() == ["plan", "plugins"], asked.stdout
    asked = run(_RVLM_COMPLETE="complete_bash", COMP_WORDS="rvlm batch ", COMP_CWORD="2")
    assert set(asked.stdout.split()) == {"plan", "apply", "resume", "status"}, asked.stdout
    installed = run("--install-completion", HOME=str(tmp_path))
    assert installed.returncode == 0, installed.stderr
    assert "rvlm" in (tmp_path / ".bashrc").read_text()


def test_quiet_and_verbose(planned: dict[str, Any]) -> None:
    """--quiet/-q and --verbose/-v, backed by logging, before or after the command."""
    url, work = planned["url"], planned["dir"]
    quiet = rvlm("plan", "-i", "idx", "--schema-patch", "patch.yaml",
                 "-o", "p2.yaml", "--url", url, "-q",
                 cwd=work)
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""
    assert (work / "p2.yaml").exists()
    loud = rvlm("-vv", "apply", "--plan", "plan.yaml", "--backup-dir", "b", "--url", url,
                "--accept-data-loss", "--yes", cwd=work)
    assert loud.returncode == 0, loud.stderr
    for phase in ("checked", "keys_enumerated", "dropped", "transformed", "created", "done"):
        assert f"info: phase {phase}" in loud.stderr
    assert "debug: connecting to" in loud.stderr and "debug: batch done" in loud.stderr
    silent = rvlm("rollback", "--backup-dir", "b", "--url", url, "--yes", "--quiet", cwd=work)
    assert silent.returncode == 0 and silent.stdout == "" and silent.stderr == "", silent
    normal = rvlm("validate", "--plan", "plan.yaml", "--url", url, cwd=work)
    assert "info:" not in normal.stderr and "debug:" not in normal.stderr


def test_debug_flag_exists_and_shows_the_traceback() -> None:
    """The error hint names --debug, and --debug exists (RVLM_DEBUG stays)."""
    boom = ("import sys, rvlm.cli.plugins as p\n"
            "def fail(): raise ValueError('boom')\n"
            "p.plugins_dict = fail\n"
            "from rvlm.cli.main import main\n"
            "sys.argv[0] = 'rvlm'\n"
            "main()\n")

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", boom, *args], capture_output=True,
                              text=True, env=_env(**env), timeout=60, check=False)

    plain_run = run("plugins")
    assert plain_run.returncode == 1
    assert plain_run.stderr.strip().splitlines() == [
        "error: unexpected ValueError: boom (--debug or RVLM_DEBUG=1 shows the traceback)"]
    done = run("--debug", "plugins")
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "ValueError: boom" in done.stderr


@pytest.mark.parametrize(("args", "env"), [(["plugins", "--debug"], {}),
                                           (["plugins"], {"RVLM_DEBUG": "1"})])
def test_debug_after_the_command_and_rvlm_debug(args: list[str], env: dict[str, str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """--debug after the command, and RVLM_DEBUG=1, let the exception through (a traceback)."""
    import rvlm.cli.plugins

    def fail() -> None:
        raise ValueError("boom")

    monkeypatch.setattr(rvlm.cli.plugins, "plugins_dict", fail)
    result = CliRunner().invoke(app, args, env=env)
    assert isinstance(result.exception, ValueError) and str(result.exception) == "boom"
    monkeypatch.delenv("RVLM_DEBUG", raising=False)
    quiet = CliRunner().invoke(app, ["plugins"], env={"RVLM_DEBUG": ""})
    assert quiet.exit_code == 1 and "--debug" in quiet.stderr


def test_deprecation_warnings_fail_the_run() -> None:
    """No deprecation warnings in the test run: the suite turns them into errors."""
    with pytest.raises(DeprecationWarning):
        warnings.warn("old", DeprecationWarning, stacklevel=1)
    with pytest.raises(PendingDeprecationWarning):
        warnings.warn("soon old", PendingDeprecationWarning, stacklevel=1)


# -- output ---------------------------------------------------------------------------------


def test_bytes_have_one_human_form(planned: dict[str, Any]) -> None:
    """Bytes in one human-readable form everywhere, with the right unit label."""
    assert human_bytes(812) == "812 bytes"
    assert human_bytes(5_308_890) == "5.3 MB"
    assert human_bytes(1000) == "1.0 kB"
    assert human_bytes(None) == "unknown"
    url, work = planned["url"], planned["dir"]
    size = re.compile(r"^\d+(?:\.\d)? (?:bytes|kB|MB|GB|TB)$")
    estimate = rvlm("estimate", "--plan", "plan.yaml", "--url", url, cwd=work)
    rows = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1)
                for line in estimate.stdout.splitlines() if "  " in line.strip())
    for label in ("bytes rewritten", "backup disk needed", "vector bytes before",
                  "index memory before"):
        assert size.match(rows[label]), (label, rows[label])
    applied = rvlm("apply", "--plan", "plan.yaml", "--backup-dir", "b", "--url", url,
                   "--accept-data-loss", "--yes", "--report-out", "r.yaml", cwd=work)
    assert applied.returncode == 0, applied.stderr
    rewritten = yaml.safe_load((work / "r.yaml").read_text())["rvlm"]["bytes_rewritten"]
    assert f"({human_bytes(rewritten)})" in applied.stdout
    assert f"{rewritten} bytes" not in applied.stdout or rewritten < 1000
    # the core's messages use the same form (an online plan's memory warning)
    (work / "online.yaml").write_text(
        "version: 1\nchanges:\n  update_fields: [{name: v, attrs: {algorithm: hnsw}}]\n"
        "  index: {name: idx_v2}\n")
    online = json.loads(rvlm("plan", "-i", "idx", "--schema-patch", "online.yaml",
                             "-o", "o.yaml", "--mode", "online", "--alias", "live", "--json",
                             "--url", url, cwd=work).stdout)
    memory = next(w for w in online["warnings"] if w.startswith("memory: "))
    assert re.search(r"about \d+(?:\.\d)? (?:bytes|kB|MB|GB) of extra index memory", memory)
    info = rvlm("index", "info", "-i", "idx", "--url", url, env=_env(COLUMNS="200"))
    memory = next(line for line in info.stdout.splitlines() if "index memory" in line)
    assert size.match(re.split(r"\s{2,}", memory.strip())[-1]), memory


def test_progress_lines_without_a_terminal(planned: dict[str, Any]) -> None:
    """Without a terminal: a progress line every few seconds instead of nothing; named
    phases, a rate only where it means something."""
    url, work = planned["url"], planned["dir"]
    done = rvlm("apply", "--plan", "plan.yaml", "--backup-dir", "b", "--url", url,
                "--accept-data-loss", "--yes", "--batch-size", "5",
                env=_env(COLUMNS="100", RVLM_PROGRESS_SECONDS="0"), cwd=work)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    transform = [x for x in lines if x.startswith("backup + transform: ")]
    assert transform[-1].startswith("backup + transform: 8/8 batches, 100%")
    assert "(done)" in transform[-1]
    assert any(x.startswith("keys: ") and "40/40 keys" in x for x in lines)
    indexing = [x for x in lines if x.startswith("indexing: ")]
    assert indexing and indexing[-1].startswith("indexing: 100%")
    assert not any("/s" in x for x in indexing), "no rate on a percentage"
    assert not any(x.startswith(("keys:", "backup + transform:", "indexing:"))
                   for x in done.stdout.splitlines()), "progress goes to stderr"


def test_line_reporter_writes_every_few_seconds() -> None:
    """The no-terminal reporter: a line at the start, at most one per interval, one at the
    end; a rate in the unit of the phase."""
    now = [0.0]
    lines: list[str] = []
    report = LineReporter(lines.append, every=5.0, clock=lambda: now[0])
    for step in range(0, 101):
        now[0] = step * 0.5  # 50 s in all, a call every half second
        report("transform", step, 100)
    assert len(lines) == 11  # the start, one every 5 s, the end (at 50 s)
    assert lines[0] == "backup + transform: 0/100 batches, 0% (started)"
    assert lines[1].startswith("backup + transform: 10/100 batches, 10%, 2.0 batches/s")
    assert lines[-1].startswith("backup + transform: 100/100 batches, 100%, 2.0 batches/s")
    assert lines[-1].endswith("(done)")
    report("indexing", 50, 100)
    now[0] += 1
    report("indexing", 100, 100)
    assert lines[-2:] == ["indexing: 50% (started)", "indexing: 100%, 1.0 s (done)"]


def test_progress_bars_in_a_terminal(planned: dict[str, Any]) -> None:
    """Progress bars named by phase (keys, backup + transform, indexing); a rate only where
    it means something."""
    url, work = planned["url"], planned["dir"]
    out, code = in_terminal("apply", "--plan", "plan.yaml", "--backup-dir", "b", "--url", url,
                            "--accept-data-loss", "--yes", "--batch-size", "5", cwd=work,
                            width=140)
    assert code == 0, out
    text = plain(out)
    assert "━" in text  # a bar was drawn
    final = {}
    for line in text.splitlines():
        for label in ("keys", "backup + transform", "indexing"):
            if line.strip().startswith(label + " ") or line.strip().startswith(label + "  "):
                final[label] = line
    assert set(final) == {"keys", "backup + transform", "indexing"}, text[-2000:]
    assert "8/8 batches" in final["backup + transform"]
    assert "40/40 keys" in final["keys"]
    assert "100%" in final["indexing"] and "/s" not in final["indexing"]
    # the end of apply in a terminal: the result, one line per check, the backup dir and the
    # command that rolls back; in colour
    assert "apply idx: succeeded" in text and "    ok   schema_match" in text
    assert f"  backup dir: {work / 'b'}" in text and "  roll back with:" in text
    assert COLOUR_SGR.search(out)
    # NO_COLOR in a terminal: the same bars and summary, no colour anywhere
    assert rvlm("rollback", "--backup-dir", "b", "--url", url, "--yes", "-q",
                cwd=work).returncode == 0
    out, code = in_terminal("apply", "--plan", "plan.yaml", "--backup-dir", "b2", "--url", url,
                            "--accept-data-loss", "--yes", "--batch-size", "5", cwd=work,
                            width=140, env=_env(NO_COLOR="1"))
    assert code == 0, out
    assert "━" in out and "apply idx: succeeded" in plain(out)
    assert not COLOUR_SGR.search(out), out[-500:]


def test_json_on_plan_apply_validate_rollback(planned: dict[str, Any]) -> None:
    """--json on plan, apply, validate and rollback: the result as JSON on stdout (report
    keys), progress and everything else on stderr."""
    url, work = planned["url"], planned["dir"]
    report_keys = {"version", "mode", "source_index", "target_index", "result", "started_at",
                   "finished_at", "timings", "validation", "benchmark_summary", "backup",
                   "warnings", "manual_actions", "rvlm"}
    plan = rvlm("plan", "-i", "idx", "--schema-patch", "patch.yaml",
                "-o", "plan.yaml", "--url", url,
                "--json", cwd=work)
    data = json.loads(plan.stdout)
    on_disk = yaml.safe_load((work / "plan.yaml").read_text())
    assert set(data) == set(on_disk)
    assert data["rvlm"]["plan_path"] == "plan.yaml"
    assert data["rvlm"]["fingerprint"] == on_disk["rvlm"]["fingerprint"]
    assert data["source"]["keyspace"]["key_sample"] == on_disk["source"]["keyspace"][
        "key_sample"]
    applied = rvlm("apply", "--plan", "plan.yaml", "--backup-dir", "b", "--url", url,
                   "--accept-data-loss", "--yes", "--json",
                   env=_env(COLUMNS="100", RVLM_PROGRESS_SECONDS="0"), cwd=work)
    assert applied.returncode == 0, applied.stderr
    report = json.loads(applied.stdout)
    assert set(report) >= report_keys and report["result"] == "succeeded"
    assert report["rvlm"]["documents_rewritten"] == 40
    assert "backup + transform:" in applied.stderr  # progress stays on stderr
    checked = json.loads(rvlm("validate", "--plan", "plan.yaml", "--backup-dir", "b", "--url",
                              url, "--json", cwd=work).stdout)
    assert checked["mode"] == "validate" and checked["result"] == "succeeded"
    assert {c["name"] for c in checked["validation"]["checks"]} >= {"schema_match",
                                                                   "doc_count_match"}
    undone = rvlm("rollback", "--backup-dir", "b", "--url", url, "--yes", "--json", cwd=work)
    back = json.loads(undone.stdout)
    assert set(back) >= report_keys and back["mode"] == "rollback"
    assert back["result"] == "succeeded" and back["rvlm"]["restored_records"] == 40
    # bad input: nothing on stdout, one line on stderr, exit 2
    refused = rvlm("apply", "--plan", "plan.yaml", "--backup-dir", "b2", "--url", url,
                   "--json", cwd=work)
    assert refused.returncode == 2 and refused.stdout == ""


def test_apply_and_rollback_end_with_checks_backup_dir_and_command(
        planned: dict[str, Any]) -> None:
    """apply and rollback end with the validation checks (one line each), the backup dir
    and the exact command to roll back."""
    url, work, client = planned["url"], planned["dir"], planned["client"]
    before = snapshot(client)
    applied = rvlm("apply", "--plan", "plan.yaml", "--backup-dir", "b", "--url", url,
                   "--accept-data-loss", "--yes", cwd=work)
    assert applied.returncode == 0, applied.stderr
    lines = applied.stdout.rstrip("\n").splitlines()
    assert lines[0] == "apply idx: succeeded"  # the result first
    checks = lines.index("  checks:")
    check_lines = lines[checks + 1:lines.index(f"  backup dir: {work / 'b'}")]
    assert check_lines and all(re.match(r"    (ok  |FAIL) \S", x) for x in check_lines)
    assert not any(x.rstrip().endswith(":") for x in check_lines), "no empty check lines"
    assert "    ok   schema_match" in check_lines
    # check names print as they are (rich would turn "vector_bytes:v:" into an emoji)
    assert any(x.startswith("    ok   vector_bytes:v: ") for x in check_lines), check_lines
    assert lines[-2:] == ["  roll back with:", f"    rvlm rollback --backup-dir b --url {url}"]
    # the command printed is the one that works
    undone = rvlm(*lines[-1].split()[1:], "--yes", cwd=work)
    assert undone.returncode == 0, undone.stderr
    assert snapshot(client) == before
    out = undone.stdout.splitlines()
    assert out[0] == "rollback idx -> idx: succeeded"
    assert "  checks:" in out and out[-1] == f"  backup dir: {work / 'b'}"


def test_failed_apply_says_how_to_resume_and_how_to_roll_back(
        redis_client: Any, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        rvlm_plugin: Any) -> None:
    """A migration that ran and failed exits 1 and ends with the exact commands that resume
    it and that roll it back."""
    make_hash_index(redis_client, n=20)
    rvlm_plugin(BadPlugin())  # writes a field it did not declare: the transform fails
    src = read_index(redis_client, "idx").schema
    op = rename_op().__class__(plugin="t_bad", kind="x", reads=("t",), writes=("t",))
    build_plan(redis_client, "idx", src, [op]).write(tmp_path / "plan.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REDIS_URL", raising=False)
    res = runner.invoke(app, ["apply", "--plan", "plan.yaml", "--backup-dir", "b", "--url",
                              redis_url, "--yes"])
    assert res.exit_code == 1, res.output
    out = res.stdout.splitlines()
    assert out[0] == "apply idx: failed"
    error = next(i for i, x in enumerate(out) if x.startswith("  error: "))
    # the message may wrap (at the terminal's width): its words, in order
    assert "outside its declared writes" in " ".join(" ".join(out[error:error + 3]).split())
    assert f"  backup dir: {tmp_path / 'b'}" in out
    # the exact commands, once: not also as a "next: re-run the same command" line
    assert not any(x.startswith("  next: ") for x in out), res.stdout
    tail = out[out.index("  resume with:"):]
    assert tail == ["  resume with:",
                    f"    rvlm apply --plan plan.yaml --backup-dir b --url {redis_url}",
                    "  or roll back with:",
                    f"    rvlm rollback --backup-dir b --url {redis_url}"]
    # with the URL from REDIS_URL, the commands leave it out
    monkeypatch.setenv("REDIS_URL", redis_url)
    res = runner.invoke(app, ["apply", "--plan", "plan.yaml", "--backup-dir", "b", "--yes"])
    assert res.exit_code == 1
    assert res.stdout.splitlines()[-3:] == ["    rvlm apply --plan plan.yaml --backup-dir b",
                                            "  or roll back with:",
                                            "    rvlm rollback --backup-dir b"]


def test_lossy_prompt_says_what_is_true(planned: dict[str, Any]) -> None:
    """The lossy prompt says what is true: the change loses precision, and rollback
    restores the originals from the backup."""
    url, work, client = planned["url"], planned["dir"], planned["client"]
    before = snapshot(client)
    out, code = in_terminal("apply", "--plan", "plan.yaml", "--backup-dir", "b", "--url", url,
                            cwd=work, answers=((r"Apply it\? \[y/N\]", "n"),), width=200)
    prompt = " ".join(plain(out).split())
    assert "loses precision" in prompt and "float32 -> float16" in prompt
    assert "The originals are kept in the backup dir and 'rvlm rollback' restores them " \
           "exactly" in prompt
    assert "cannot be restored" not in prompt
    assert code == 2 and snapshot(client) == before


def test_long_plan_lines_wrap_at_word_boundaries(planned: dict[str, Any]) -> None:
    """Long plan lines wrap at word boundaries (not mid-word, not off the screen)."""
    url, work = planned["url"], planned["dir"]
    done = rvlm("plan", "-i", "idx", "--schema-patch", "patch.yaml",
                "-o", "plan.yaml", "--url", url,
                env=_env(COLUMNS="60"), cwd=work)
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    commands = [x for x in lines if x.startswith("  rvlm ")]
    assert commands == ["  rvlm estimate --plan plan.yaml",
                        "  rvlm apply --plan plan.yaml --backup-dir BACKUP_DIR "
                        "--accept-data-loss"]  # a command to copy is never wrapped
    assert all(len(x) <= 60 for x in lines if x not in commands), lines
    # into a pipe, no line ends in the blanks rich pads table cells with
    assert not [x for x in lines if x != x.rstrip()], lines
    estimate = rvlm("estimate", "--plan", "plan.yaml", cwd=work).stdout.splitlines()
    assert estimate and not [x for x in estimate if x != x.rstrip()], estimate
    plan = yaml.safe_load((work / "plan.yaml").read_text())
    text = " ".join(done.stdout.split())
    for warning in plan["warnings"]:
        if warning.startswith("downtime: "):
            warning = warning[len("downtime: "):]
        assert " ".join(warning.split()) in text, warning  # every word whole, in order


def test_batch_table_header_lines_up(redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    """The batch table's header lines up with its columns."""
    for name in ("alpha_idx", "beta_idx"):
        make_hash_index(redis_client, name=name, prefix=f"{name}:", n=1200 if name ==
                        "alpha_idx" else 5)
    redis_client.execute_command("FT.CREATE", "other_idx", "ON", "HASH", "PREFIX", "1", "o:",
                                 "SCHEMA", "x", "TEXT")
    (tmp_path / "patch.yaml").write_text(PATCH)
    done = rvlm("batch", "plan", "--schema-patch", "patch.yaml",
                "--pattern", "*_idx", "--url", redis_url,
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    head = next(i for i, x in enumerate(lines) if x.startswith("index "))
    header, rows = lines[head], [x for x in lines[head + 1:head + 4]]
    starts = {name: header.index(name) for name in ("index", "action", "plan / reason")}
    ends = {"documents": header.index("documents") + len("documents")}
    for row in rows:
        for name, col in starts.items():
            assert row[col] != " " and (col == 0 or row[col - 1] == " "), (name, header, row)
        col = ends["documents"]
        assert row[col - 1].isdigit() and (len(row) == col or row[col] == " "), (header, row)
    assert any("1,200" in row for row in rows)


def test_demo_prints_no_python_reprs_or_empty_checks(redis_client: Any, redis_url: str,
                                                     tmp_path: Path) -> None:
    """The demo prints no Python reprs (b'product:0', tuples) and no empty check lines."""
    done = rvlm("demo", "--url", redis_url, "--documents", "20", "--work-dir", "demo",
                cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "b'" not in out and 'b"' not in out and "('" not in out and "[(" not in out
    checks = [x for x in out.splitlines() if re.match(r"\s+(ok  |FAIL) ", x)]
    assert len(checks) >= 5
    assert not any(x.rstrip().endswith(":") for x in checks)
    assert "product:7" in out and "same neighbours, same order" in out
    # a second run says at once why it cannot run and what to do, in one line
    again = rvlm("demo", "--url", redis_url, "--documents", "20", "--work-dir", "demo2",
                 cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "'demo_products' already exists" in again.stderr
    assert "rvlm server stop; rvlm server start" in again.stderr
    redis_client.execute_command("FT.DROPINDEX", "demo_products")
    redis_client.flushall()
    same_dir = rvlm("demo", "--url", redis_url, "--documents", "20", "--work-dir", "demo",
                    cwd=tmp_path)
    assert same_dir.returncode == 2 and "give a new --work-dir" in same_dir.stderr


def test_resumed_apply_says_what_the_resume_did(planned: dict[str, Any]) -> None:
    """Resumed runs say what the resume did ("rewrote 12,000 of 20,000; 8,000 were done
    before the crash"), not "0.0 docs/s"."""
    url, work = planned["url"], planned["dir"]
    args = ("apply", "--plan", "plan.yaml", "--backup-dir", "b", "--url", url,
            "--accept-data-loss", "--yes", "--batch-size", "5", "--report-out", "r.yaml")
    crashed = rvlm(*args, env=_env(COLUMNS="100", RVLM_FAULT="after_batch:2"), cwd=work)
    assert crashed.returncode == 137
    resumed = rvlm(*args, env=_env(COLUMNS="100", RVLM_PROGRESS_SECONDS="0"), cwd=work)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    report = yaml.safe_load((work / "r.yaml").read_text())["rvlm"]
    before = report["documents_done_before"]
    assert report["resumed"] and report["resumed_from"] == "transforming"
    assert 0 < before < 40 and before == 5 * report["batches_done_before"]
    text = " ".join(resumed.stdout.split())
    assert (f"resumed: rewrote {40 - before} of 40 documents; {before} were done before the "
            "interruption") in text
    assert not re.search(r"(?<![\d,.])0(\.0)? (docs|documents)/s", text)
    assert f"in {8 - report['batches_done_before']} batches" in text
    # the progress line starts where the interrupted run stopped
    first = next(x for x in resumed.stderr.splitlines() if x.startswith("backup + transform"))
    assert first.startswith(f"backup + transform: {report['batches_done_before']}/8 batches")


def test_resume_after_the_transform_and_the_rollback_indexing_bar(
        redis_client: Any, redis_url: str, tmp_path: Path) -> None:
    """A resume after the last batch says every document was done before; rollback shows
    progress while it waits for indexing (a bar in a terminal, lines without one)."""
    make_hash_index(redis_client, n=40)
    (tmp_path / "patch.yaml").write_text("version: 1\nchanges:\n  rename_fields:\n"
                                         "    - {old_name: t, new_name: title}\n")
    assert rvlm("plan", "-i", "idx", "--schema-patch", "patch.yaml", "-o", "plan.yaml", "--url",
                redis_url, cwd=tmp_path).returncode == 0
    args = ("apply", "--plan", "plan.yaml", "--backup-dir", "b", "--url", redis_url, "--yes")
    assert rvlm(*args, env=_env(RVLM_FAULT="after_transform"), cwd=tmp_path).returncode == 137
    resumed = rvlm(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    text = " ".join(resumed.stdout.split())
    assert ("resumed: every document had been rewritten before the interruption (it stopped "
            "after phase transformed); this run created the index, waited for indexing and "
            "validated") in text
    assert "documents 40" in text and "rewritten 0" not in text
    lines = rvlm("rollback", "--backup-dir", "b", "--url", redis_url, "--yes",
                 env=_env(RVLM_PROGRESS_SECONDS="0"), cwd=tmp_path)
    assert lines.returncode == 0, lines.stderr
    assert any(x.startswith("restore: ") for x in lines.stderr.splitlines())
    assert any(x.startswith("indexing: 100%") for x in lines.stderr.splitlines()), lines.stderr
    # and in a terminal: a bar named indexing
    assert rvlm(*args[:4], "b2", *args[5:], cwd=tmp_path).returncode == 0
    out, code = in_terminal("rollback", "--backup-dir", "b2", "--url", redis_url, "--yes",
                            cwd=tmp_path, width=120)
    assert code == 0, out
    bars = [x.strip() for x in plain(out).splitlines() if x.strip().startswith("indexing")]
    assert bars and "100%" in bars[-1] and "━" in bars[-1]


def test_rvl_flags_key_sample_aof_and_rollback_index(planned: dict[str, Any]) -> None:
    """rvl's flags from the migrating page: plan --key-sample-limit, estimate --aof-enabled
    (an estimate near the AOF's real growth), rollback --index (a multi-index backup dir, or
    a check of one index's)."""
    url, work, client = planned["url"], planned["dir"], planned["client"]
    done = rvlm("plan", "-i", "idx", "--schema-patch", "patch.yaml", "-o", "plan.yaml",
                "--url", url, "--key-sample-limit", "5", cwd=work)
    assert done.returncode == 0, done.stderr
    assert len(yaml.safe_load((work / "plan.yaml").read_text())["source"]["keyspace"][
        "key_sample"]) == 5
    off = json.loads(rvlm("estimate", "--plan", "plan.yaml", "--url", url, "--json",
                          cwd=work).stdout)
    assert off["aof_enabled"] is False and off["aof_growth_bytes"] is None
    estimate = rvlm("estimate", "--plan", "plan.yaml", "--aof-enabled", "--url", url, cwd=work)
    assert re.search(r"AOF growth \(est\.\)\s+\d+(?:\.\d)? (?:bytes|kB|MB)", estimate.stdout)
    client.config_set("appendonly", "yes")
    try:
        on = json.loads(rvlm("estimate", "--plan", "plan.yaml", "--url", url, "--json",
                             cwd=work).stdout)
        assert on["aof_enabled"] is True and on["aof_growth_bytes"] > on["bytes_rewritten"]
        for _ in range(200):  # the AOF rewrite that enabling it starts
            info = client.info("persistence")
            if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
                break
            time.sleep(0.05)
        size = client.info("persistence")["aof_current_size"]
        applied = rvlm("apply", "--plan", "plan.yaml", "--backup-dir", "all/idx", "--url", url,
                       "--accept-data-loss", "--yes", "-q", cwd=work)
        assert applied.returncode == 0, applied.stderr
        grown = client.info("persistence")["aof_current_size"] - size
        assert 0.5 * grown <= on["aof_growth_bytes"] <= 2 * grown, (grown, on)
    finally:
        client.config_set("appendonly", "no")
    wrong = rvlm("rollback", "--backup-dir", "all/idx", "--index", "other", "--url", url,
                 "--yes", cwd=work)
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == ("error: backup dir all/idx holds the migration of index "
                                    "'idx' -> 'idx', not of 'other'")
    undone = rvlm("rollback", "--backup-dir", "all", "--index", "idx", "--url", url, "--yes",
                  cwd=work)
    assert undone.returncode == 0, undone.stderr
    assert undone.stdout.splitlines()[0] == "rollback idx -> idx: succeeded"
