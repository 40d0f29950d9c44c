"""The plugin host: built-ins from one tuple, third parties from the ``rvlm`` entry points.

* :data:`DEFAULT_PLUGINS` lists the built-in change modules; they register exactly like a
  third-party plugin.
* Entry points in the group ``rvlm`` are loaded one by one; a plugin that fails to import is
  reported (``rvlm plugins`` and a warning line) without breaking the CLI.
* ``RVLM_DISABLE_PLUGINS=name1,name2`` blocks plugins by name.
* Two plugins claiming one change type is an error naming both.

``PluginHost`` wraps the pluggy manager with the typed calls the planner and executor make.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from typing import Any, cast

import attrs
import pluggy

from rvlm import hookspecs
from rvlm.core.errors import RvlmError
from rvlm.core.plugins.changes import Change, ChangeType, Classification
from rvlm.core.plugins.context import ApplyContext, PlanContext
from rvlm.core.plugins.documents import Document, DocumentOperation, DocumentUpdate
from rvlm.core.schema.model import IndexSchema

ENTRY_POINT_GROUP = "rvlm"
DISABLE_ENV = "RVLM_DISABLE_PLUGINS"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "rvlm.plugins.builtin.add_field",
    "rvlm.plugins.builtin.remove_field",
    "rvlm.plugins.builtin.rename_field",
    "rvlm.plugins.builtin.update_field",
    "rvlm.plugins.builtin.vector_index",
    "rvlm.plugins.builtin.quantize",
    "rvlm.plugins.builtin.rename_index",
    "rvlm.plugins.builtin.change_prefix",
    "rvlm.plugins.builtin.update_index",
)


@attrs.frozen
class PluginInfo:
    """One registered plugin, for ``rvlm plugins`` and plans."""

    name: str
    version: str
    hooks: tuple[str, ...]
    change_types: tuple[str, ...]
    builtin: bool


@attrs.frozen
class PluginLoadError:
    name: str
    error: str


def _rvlm_version() -> str:
    from rvlm import __version__

    return __version__


def disabled_names() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


class PluginHost:
    """A pluggy manager with rvlm's hooks, plus the ownership map of change types."""

    def __init__(self, *, load_entry_points: bool = True, extra: Iterable[Any] = ()) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.versions: dict[str, str] = {}
        self.builtin: set[str] = set()
        self.load_errors: list[PluginLoadError] = []
        blocked = disabled_names()
        for name in blocked:
            self.pm.set_blocked(name)
        for module_name in DEFAULT_PLUGINS:
            short = module_name.rsplit(".", 1)[-1]
            if short in blocked:
                continue
            module = importlib.import_module(module_name)
            self.pm.register(module, name=short)
            self.versions[short] = _rvlm_version()
            self.builtin.add(short)
        if load_entry_points:
            self._load_entry_points(blocked)
        for plugin in extra:
            self.register(plugin)
        self._owners: dict[str, str] | None = None

    def _load_entry_points(self, blocked: set[str]) -> None:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in blocked or self.pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
                self.pm.register(plugin, name=ep.name)
            except Exception as exc:  # a broken plugin must not break the CLI
                self.load_errors.append(PluginLoadError(ep.name, f"{type(exc).__name__}: {exc}"))
                continue
            dist = getattr(ep, "dist", None)
            self.versions[ep.name] = getattr(dist, "version", None) or "unknown"

    def register(self, plugin: Any, name: str | None = None, version: str | None = None) -> str:
        """Register a plugin object or module; returns the name it got."""
        name = str(name or getattr(plugin, "name", None) or getattr(plugin, "__name__", None)
                   or type(plugin).__name__)
        if self.pm.get_plugin(name) is not None:
            raise RvlmError(f"a plugin named {name!r} is already registered")
        self.pm.register(plugin, name=name)
        self.versions[name] = version or str(getattr(plugin, "version", None) or "unknown")
        self._owners = None
        return name

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.versions.pop(name, None)
        self._owners = None

    # -- ownership -----------------------------------------------------------------------
    def change_types(self) -> dict[str, tuple[str, ChangeType]]:
        """change type name -> (owning plugin, ChangeType). Raises on a double claim."""
        owners: dict[str, tuple[str, ChangeType]] = {}
        for impl in self.pm.hook.rvlm_change_types.get_hookimpls():
            declared = cast("Iterable[ChangeType]", impl.function() or ())
            for ct in declared:
                if ct.name in owners and owners[ct.name][0] != impl.plugin_name:
                    raise RvlmError(
                        f"plugins {owners[ct.name][0]!r} and {impl.plugin_name!r} both claim "
                        f"the change type {ct.name!r}; disable one with {DISABLE_ENV}"
                    )
                owners[ct.name] = (impl.plugin_name, ct)
        return owners

    def owner(self, change_type: str) -> str:
        owners = self.change_types()
        if change_type not in owners:
            raise RvlmError(f"no installed plugin handles the change type {change_type!r}")
        return owners[change_type][0]

    def patch_sections(self) -> dict[str, str]:
        """patch section -> owning plugin."""
        return {ct.patch_section: plugin for plugin, ct in self.change_types().values()
                if ct.patch_section}

    def check(self) -> None:
        """Raise if the registered plugins conflict (run once per command)."""
        self.change_types()

    def plugins(self) -> list[PluginInfo]:
        types: dict[str, list[str]] = {}
        for type_name, (owner, _ct) in self.change_types().items():
            types.setdefault(owner, []).append(type_name)
        out = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:  # blocked by RVLM_DISABLE_PLUGINS
                continue
            hooks = sorted(
                h.name for h in self.pm.get_hookcallers(plugin) or () if h.name in _HOOK_NAMES
            )
            out.append(PluginInfo(name, self.versions.get(name, "unknown"), tuple(hooks),
                                  tuple(sorted(types.get(name, []))), name in self.builtin))
        return sorted(out, key=lambda p: (not p.builtin, p.name))

    def version(self, name: str) -> str:
        return self.versions.get(name, "unknown")

    # -- typed hook calls ----------------------------------------------------------------
    def merge_patch_section(self, section: str, value: Any, target: IndexSchema,
                            context: PlanContext) -> IndexSchema:
        result = self.pm.hook.merge_patch_section(section=section, value=value, target=target,
                                                  context=context)
        if result is None:
            raise RvlmError(f"no plugin merged the patch section {section!r}")
        merged: IndexSchema = result
        return merged

    def classify(self, change: Change, context: PlanContext) -> Classification:
        owner = self.owner(change.type)
        impl = self._impl("classify_change", owner)
        if impl is None:
            raise RvlmError(f"plugin {owner!r} owns {change.type!r} but has no classify_change")
        result = impl(change=change, context=context)
        if result is None:
            raise RvlmError(f"plugin {owner!r} did not classify the change {change.label}")
        classification: Classification = result
        return classification

    def transform(self, operation: DocumentOperation, documents: Sequence[Document],
                  context: ApplyContext) -> list[DocumentUpdate]:
        impl = self._impl("transform_documents", operation.plugin)
        if impl is None:
            raise RvlmError(f"the plan needs plugin {operation.plugin!r} to transform documents, "
                            "and it is not installed or is disabled")
        result = impl(operation=operation, documents=documents, context=context)
        if result is None or len(result) != len(documents):
            raise RvlmError(f"plugin {operation.plugin!r} returned "
                            f"{'nothing' if result is None else len(result)} updates for "
                            f"{len(documents)} documents ({operation.kind})")
        return list(result)

    def pre_drop(self, plan: Any, context: ApplyContext) -> list[str]:
        problems: list[str] = []
        for result in self.pm.hook.pre_drop(plan=plan, context=context):
            problems.extend(result or ())
        return problems

    def post_create(self, plan: Any, context: ApplyContext) -> None:
        self.pm.hook.post_create(plan=plan, context=context)

    def validate(self, plan: Any, context: ApplyContext) -> list[Any]:
        checks: list[Any] = []
        for result in self.pm.hook.validate(plan=plan, context=context):
            checks.extend(result or ())
        return checks

    def has(self, name: str) -> bool:
        return self.pm.get_plugin(name) is not None

    def _impl(self, hook: str, plugin_name: str) -> Any:
        plugin = self.pm.get_plugin(plugin_name)
        if plugin is None:
            return None
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            if impl.plugin_name == plugin_name:
                return impl.function
        return None


_HOOK_NAMES = {n for n in hookspecs.__all__ if n not in ("PROJECT", "hookimpl", "hookspec")}
_default: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide host (built-ins + entry points), built on first use."""
    global _default
    if _default is None:
        _default = PluginHost()
    return _default


def host_with(plugins: Iterable[Any] = ()) -> PluginHost:
    """The default host, or a fresh one with ``plugins`` added for one run."""
    extra = list(plugins)
    if not extra:
        return get_host()
    host = PluginHost()
    for p in extra:
        host.register(p)
    return host


@contextmanager
def registered(plugin: Any, name: str | None = None) -> Iterator[str]:
    """Register ``plugin`` on the default host for the length of a ``with`` block."""
    host = get_host()
    got = host.register(plugin, name=name)
    try:
        yield got
    finally:
        host.unregister(got)
