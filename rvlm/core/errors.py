"""The two kinds of failure a user sees, and the exit codes they map to.

* :class:`RvlmError` is bad input or a refused request (a malformed YAML, an unknown field, a
  wrong URL, a corrupt backup, a blocked change). It is raised *before* anything is mutated; the
  CLI prints its one-line message and exits with code 2.
* :class:`MigrationFailed` is a migration that ran and did not succeed (validation failed, the
  server went away mid-way). The CLI exits with code 1; the journal says how to resume.
"""

from __future__ import annotations


class RvlmError(Exception):
    """Bad input or a refused request: one clear line, exit code 2, nothing mutated."""

    exit_code = 2


class MigrationFailed(RvlmError):
    """A migration ran and did not succeed: exit code 1."""

    exit_code = 1
