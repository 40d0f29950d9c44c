"""The kinds of failure a user sees, and the exit codes they map to.

* :class:`RvlmError` is bad input or a refused request (a malformed YAML, an unknown field, a
  wrong URL, a corrupt backup, a blocked change). It is raised *before* anything is mutated; the
  CLI prints its one-line message and exits with code 2.
* :class:`MigrationFailed` is a migration that ran and did not succeed (validation failed, the
  server went away mid-way). The CLI exits with code 1; the journal says how to resume.
* :class:`PluginError` is a plugin that raised, or answered a hook with the wrong shape. It
  names the plugin and the hook, and exits with code 1: the input was fine, the plugin was
  not. Raised while planning or before the drop, nothing has changed; after the drop the
  executor turns it into a failed, resumable migration like any other failure.
"""

from __future__ import annotations


class RvlmError(Exception):
    """Bad input or a refused request: one clear line, exit code 2, nothing mutated."""

    exit_code = 2


class MigrationFailed(RvlmError):
    """A migration ran and did not succeed: exit code 1."""

    exit_code = 1


class PluginError(RvlmError):
    """A plugin raised or answered a hook with the wrong shape: exit code 1.

    ``plugin`` and ``hook`` name where it happened; ``problem`` says what (the exception's type
    and message, or what was returned instead of what was expected).
    """

    exit_code = 1

    def __init__(self, plugin: str, hook: str, problem: str) -> None:
        self.plugin = plugin
        self.hook = hook
        self.problem = problem
        super().__init__(f"plugin {plugin!r}, {hook}: {problem}")

    def __reduce__(self) -> tuple[type[PluginError], tuple[str, str, str]]:
        # picklable with its three arguments (worker processes send errors to the parent)
        return (PluginError, (self.plugin, self.hook, self.problem))
