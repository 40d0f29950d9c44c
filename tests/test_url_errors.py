"""A bad or refused Redis URL is one line, exit code 2, and never shows the password (#12).

The hostile trial found passwords printed for ``redis:/:PW@...`` / ``redis//:PW@...`` ("bad
Redis URL ...") and for an unescaped ``#`` in the password ("Port could not be cast ..."),
and ``redis://:PW@host:notaport`` exiting 1 "unexpected". Every URL here carries a password
made of pieces that must not appear anywhere in the output.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from rvlm.cli.main import app
from rvlm.core.redis.connection import redact

runner = CliRunner()

SECRET = "Zq8Sec"  # no URL or message is likely to contain it by chance
PIECES = [SECRET, "pa9Wrd", "Zq8", "Sec", "pa9"]

URLS = [
    f"redis:/:{SECRET}@localhost:6379",
    f"redis//:{SECRET}@localhost:6379",
    f"redis://:pa9Wrd#{SECRET}@localhost:6379",
    f"redis://user:pa9Wrd#{SECRET}@127.0.0.1:1",
    f"redis://:pa9Wrd?{SECRET}@127.0.0.1:1",
    f"redis://:pa9Wrd/{SECRET}@127.0.0.1:1",
    f"redis://:{SECRET}@host:notaport",
    f"redis://:{SECRET}@127.0.0.1:99999",
    f"redis://:{SECRET}@[::1:6379",
    f"http://:{SECRET}@127.0.0.1:1",
    f"redis://:{SECRET}@127.0.0.1:1",
    f"redis://{SECRET}@127.0.0.1:1",
    f"unix://:{SECRET}@/nonexistent/redis.sock",
]


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("command", [["index", "list"], ["server", "info"]])
def test_bad_url_is_one_line_exit_2_without_the_password(url, command):
    r = runner.invoke(app, [*command, "--url", url])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "unexpected" not in lines[0] and "Traceback" not in r.output
    for piece in PIECES:
        assert piece not in r.output, (piece, r.output)


def test_an_unescaped_special_character_gets_the_percent_encoding_advice():
    r = runner.invoke(app, ["index", "list", "--url", f"redis://:pa9Wrd#{SECRET}@h:1"])
    assert r.exit_code == 2 and "%23" in r.stderr


def test_wrong_password_on_the_real_server(redis_client, redis_url):
    """A refused login names the URL without its password (ACL user on the session server)."""
    redis_client.execute_command("ACL", "SETUSER", "harden_u", "on", f">{SECRET}x", "+@all",
                                 "~*")
    try:
        host = redis_url.split("://", 1)[1]
        url = f"redis://harden_u:{SECRET}@{host}"
        r = runner.invoke(app, ["index", "list", "--url", url])
        assert r.exit_code == 2, r.output
        assert "refused the credentials" in r.stderr or "invalid" in r.stderr.lower()
        assert SECRET not in r.output and "harden_u:***@" in r.stderr
        good = runner.invoke(app, ["index", "list", "--url",
                                   f"redis://harden_u:{SECRET}x@{host}"])
        assert good.exit_code == 0, good.output
    finally:
        redis_client.execute_command("ACL", "DELUSER", "harden_u")


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ("redis://u:p@h:1/0", "redis://u:***@h:1/0"),
    ("redis://:p@ss@h:1", "redis://:***@h:1"),
    ("redis://p@h:1", "redis://***@h:1"),
    ("rediss://u:p#q@h", "rediss://u:***@h"),
    ("redis:/:p@h", "redis:/:***@h"),
    ("redis//:p@h", "redis//:***@h"),
    (":p@h", ":***@h"),
])
def test_redact(url, shown):
    assert redact(url) == shown
