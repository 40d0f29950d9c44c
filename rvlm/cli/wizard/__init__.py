"""``rvlm wizard``: build a schema patch interactively, then (optionally) plan it.

The wizard stages changes in a :class:`Staging` (a pure object: no I/O) that always holds a
valid RedisVL schema patch: after every step the patch is checked with
:func:`rvlm.core.schema.patch.patch_from_dict` and :func:`rvlm.core.schema.patch.merge`
against the live schema, and a step that would make it invalid is refused with one line and
undone. What the wizard writes is therefore exactly what ``rvlm plan --schema-patch`` accepts.

Staged changes combine the way a person means them:

* rename ``a -> b`` then ``b -> c`` is ``a -> c``; renaming back to ``a`` cancels the rename;
* rename ``a -> b`` then remove ``b`` removes ``a``; removing an added field un-adds it;
* a removed (or renamed-away) field's name cannot be reused by a rename or an add;
* an update that sets an attribute back to its live value drops it from the patch.

Every prompt explains itself in one line, shows the current value, validates the answer and
asks again on a bad one. Only the datatypes and algorithms the server supports are offered.

The package, one module per job: :mod:`~rvlm.cli.wizard.staging` (the staged changes),
:mod:`~rvlm.cli.wizard.attributes` (what each attribute means),
:mod:`~rvlm.cli.wizard.prompting` (the prompts), :mod:`~rvlm.cli.wizard.session` (the menu and
its actions) and :mod:`~rvlm.cli.wizard.command` (the ``rvlm wizard`` command).
"""

from __future__ import annotations

from rvlm.cli.wizard.command import register, wizard
from rvlm.cli.wizard.prompting import Prompter, WizardAbort
from rvlm.cli.wizard.session import Wizard
from rvlm.cli.wizard.staging import Staging, StagingError

__all__ = ["Prompter", "Staging", "StagingError", "Wizard", "WizardAbort", "register", "wizard"]
