"""The plugin host: built-ins from one tuple, third parties from the ``rvlm`` entry points.

* :data:`DEFAULT_PLUGINS` lists the built-in change modules; they load exactly like a
  third-party plugin, through the same :meth:`PluginHost.register` path.
* Entry points in the group ``rvlm`` are loaded one by one. A plugin that fails to import,
  implements a hook that does not exist (pluggy's ``check_pending``: ``transform_document``
  for ``transform_documents``), takes an argument its hook does not offer, or cannot declare
  its change types is not loaded: it is listed with its error by ``rvlm plugins``, named when
  a plan needs it, and every other command keeps working.
* ``RVLM_DISABLE_PLUGINS=name1,name2`` blocks plugins by name.
* Two plugins claiming one change type is an error naming both.

Dispatch. pluggy makes every call, so an implementation may take fewer arguments than its
hook offers, and hook wrappers (``@hookimpl(wrapper=True)``) run around it. Calls go to one
plugin at a time: a change-specific hook (``classify_change``, ``merge_patch_section``,
``transform_documents``) only to the plugin that owns the change type, patch section or
operation, and the other hooks to each implementing plugin in turn (pluggy's call order).
Wrappers of any plugin stay in every call. So a plugin never sees a change that is not its
own, and a failure is always attributed: a hook that raises or returns the wrong shape is a
:class:`~rvlm.core.errors.PluginError` naming the plugin and the hook. An
:class:`~rvlm.core.errors.RvlmError` a hook raises on purpose (bad input in a patch section,
a refused request) passes through unchanged, except from ``transform_documents`` and the
hooks after it, where every failure names the plugin.

``PluginHost`` wraps the pluggy manager with the typed calls the planner and executor make.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import os
import pkgutil
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from typing import Any

import attrs
import pluggy

from rvlm import hookspecs
from rvlm.core.errors import PluginError, RvlmError
from rvlm.core.plugins.changes import Change, ChangeType, Classification, Difference
from rvlm.core.plugins.checks import CheckResult
from rvlm.core.plugins.context import ApplyContext, PlanContext
from rvlm.core.plugins.documents import (
    Document,
    DocumentOperation,
    DocumentUpdate,
    OperationCost,
)
from rvlm.core.schema.model import IndexSchema

ENTRY_POINT_GROUP = "rvlm"
DISABLE_ENV = "RVLM_DISABLE_PLUGINS"

BUILTIN_PACKAGE = "rvlm.plugins.builtin"


def _builtin_modules() -> tuple[str, ...]:
    """Every module of :data:`BUILTIN_PACKAGE`, in name order (found on disk, imported when
    the host loads them: the core does not import the plugins layer)."""
    spec = importlib.util.find_spec(BUILTIN_PACKAGE)
    paths = list(spec.submodule_search_locations or ()) if spec is not None else []
    return tuple(f"{BUILTIN_PACKAGE}.{m.name}"
                 for m in sorted(pkgutil.iter_modules(paths), key=lambda m: m.name)
                 if not m.ispkg and not m.name.startswith("_"))


#: The built-in change types: every module of :data:`BUILTIN_PACKAGE`, so a built-in change
#: type is one file there and nothing else lists it.
DEFAULT_PLUGINS: tuple[str, ...] = _builtin_modules()

#: The hooks of :mod:`rvlm.hookspecs`.
HOOK_NAMES: tuple[str, ...] = tuple(
    n for n in hookspecs.__all__ if n not in ("PROJECT", "hookimpl", "hookspec"))
#: Hooks whose RvlmError is the plugin refusing input: passed through (nothing changed yet).
_PLAN_HOOKS = frozenset({"detect_changes", "merge_patch_section", "classify_change",
                         "pre_drop"})


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
    """A plugin that was not loaded, and why (one line)."""

    name: str
    error: str


def rvlm_version() -> str:
    """rvlm's own version (``rvlm.__version__``), the plugin_version of the core's changes."""
    from rvlm import __version__

    return __version__


def disabled_names() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def _is_wrapper(impl: Any) -> bool:
    return bool(impl.wrapper or impl.hookwrapper)


def _exception(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _shape(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class PluginHost:
    """A pluggy manager with rvlm's hooks, plus the ownership map of change types."""

    def __init__(self, *, load_entry_points: bool = True, extra: Iterable[Any] = ()) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.versions: dict[str, str] = {}
        self.builtin: set[str] = set()
        self.load_errors: list[PluginLoadError] = []
        #: plugin name -> the change types it declared when it was loaded
        self.declared: dict[str, tuple[ChangeType, ...]] = {}
        self._callers: dict[tuple[str, str], Any] = {}
        self._owners: dict[str, tuple[str, ChangeType]] | None = None
        blocked = disabled_names()
        for name in blocked:
            self.pm.set_blocked(name)
        for module_name in DEFAULT_PLUGINS:
            short = module_name.rsplit(".", 1)[-1]
            if short in blocked:
                continue
            self._load(short, functools.partial(importlib.import_module, module_name),
                       rvlm_version())
            if self.has(short):
                self.builtin.add(short)
        if load_entry_points:
            self._load_entry_points(blocked)
        for plugin in extra:
            self.register(plugin)

    # -- loading -------------------------------------------------------------------------
    def _load(self, name: str, load: Callable[[], Any], version: str | None) -> None:
        """Import and register one plugin; on any failure record a load error (one line)."""
        try:
            plugin = load()
            self.register(plugin, name=name, version=version)
        except PluginError as exc:
            self.load_errors.append(PluginLoadError(name, f"{exc.hook}: {exc.problem}"))
        except Exception as exc:  # a broken plugin must not break the CLI
            self.load_errors.append(PluginLoadError(name, _exception(exc)))

    def _load_entry_points(self, blocked: set[str]) -> None:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in blocked or self.pm.get_plugin(ep.name) is not None:
                continue
            dist = getattr(ep, "dist", None)
            self._load(ep.name, ep.load, getattr(dist, "version", None) or "unknown")

    def register(self, plugin: Any, name: str | None = None, version: str | None = None) -> str:
        """Register a plugin object or module; returns the name it got.

        Raises :class:`PluginError` (and leaves nothing registered) when the plugin implements
        a hook that does not exist, takes an argument its hook does not offer, or its
        ``rvlm_change_types`` raises or returns something other than change types.
        """
        name = str(name or getattr(plugin, "name", None) or getattr(plugin, "__name__", None)
                   or type(plugin).__name__)
        if self.pm.get_plugin(name) is not None:
            raise RvlmError(f"a plugin named {name!r} is already registered")
        try:
            if self.pm.register(plugin, name=name) is None:  # blocked (RVLM_DISABLE_PLUGINS)
                return name
        except pluggy.PluginValidationError as exc:
            raise self._invalid(name, exc) from None
        try:
            self._check_pending(name, plugin)
            self.declared[name] = self._declare(name)
        except PluginError:
            self.pm.unregister(plugin, name=name)
            self._forget()
            raise
        self.versions[name] = version or str(getattr(plugin, "version", None) or "unknown")
        self._forget()
        return name

    def _invalid(self, name: str, exc: pluggy.PluginValidationError) -> PluginError:
        """pluggy refused an implementation at registration: which hook, and why, in a line."""
        text = " ".join(str(exc).split())
        found = re.search(r"for hook '([^']+)'", text)
        hook = found.group(1) if found else "register"
        extra = re.search(r"Argument\(s\) (\{.*?\}) are declared", text)
        caller = getattr(self.pm.hook, hook, None)
        spec = getattr(caller, "spec", None)
        if extra and spec is not None:
            return PluginError(name, hook, f"takes argument(s) {extra.group(1)} that the hook "
                                           f"does not offer (it offers {', '.join(spec.argnames)})")
        return PluginError(name, hook, text)

    def _check_pending(self, name: str, plugin: Any) -> None:
        """pluggy's ``check_pending``: every hook the plugin implements must exist. The
        plugins registered before passed it, so a failure is this plugin's."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError:
            unknown = sorted(
                caller.name for caller in self.pm.get_hookcallers(plugin) or ()
                if not caller.has_spec()
                and any(not i.optionalhook for i in caller.get_hookimpls()))
            hook = unknown[0] if unknown else "register"
            close = difflib.get_close_matches(hook, HOOK_NAMES, n=1)
            hint = (f" (did you mean {close[0]}?)" if close else
                    f"; rvlm's hooks are {', '.join(HOOK_NAMES)}")
            raise PluginError(name, hook, f"no such hook{hint}") from None

    def _declare(self, name: str) -> tuple[ChangeType, ...]:
        """The plugin's ``rvlm_change_types`` answer, checked (none if it has no such hook)."""
        if not self.implements("rvlm_change_types", name):
            return ()
        results = self._call_one("rvlm_change_types", name)
        declared: list[ChangeType] = []
        for result in results:
            if isinstance(result, (ChangeType, str, bytes)) or not isinstance(result, Iterable):
                raise PluginError(name, "rvlm_change_types", f"returned {_shape(result)}; "
                                  "expected a list of ChangeType")
            for ct in result:
                if not isinstance(ct, ChangeType):
                    raise PluginError(name, "rvlm_change_types", f"returned {_shape(ct)} in "
                                      "its list; expected ChangeType items")
                declared.append(ct)
        return tuple(declared)

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.versions.pop(name, None)
        self.declared.pop(name, None)
        self._forget()

    def _forget(self) -> None:
        self._callers.clear()
        self._owners = None

    # -- ownership -----------------------------------------------------------------------
    def change_types(self) -> dict[str, tuple[str, ChangeType]]:
        """change type name -> (owning plugin, ChangeType). Raises on a double claim."""
        if self._owners is not None:
            return self._owners
        owners: dict[str, tuple[str, ChangeType]] = {}
        for plugin, declared in self.declared.items():
            for ct in declared:
                if ct.name in owners and owners[ct.name][0] != plugin:
                    raise RvlmError(
                        f"plugins {owners[ct.name][0]!r} and {plugin!r} both claim "
                        f"the change type {ct.name!r}; disable one with {DISABLE_ENV}"
                    )
                owners[ct.name] = (plugin, ct)
        self._owners = owners
        return owners

    def owner(self, change_type: str) -> str:
        owners = self.change_types()
        if change_type not in owners:
            raise RvlmError(f"no installed plugin handles the change type {change_type!r}"
                            f"{self.load_errors_note()}")
        return owners[change_type][0]

    def patch_sections(self) -> dict[str, str]:
        """patch section -> owning plugin."""
        return {ct.patch_section: plugin for plugin, ct in self.change_types().values()
                if ct.patch_section}

    def load_errors_note(self) -> str:
        """``" (plugins that failed to load: ...)"`` when some did, else ``""``: for errors
        that say nothing handles something, which may be a plugin that did not load."""
        if not self.load_errors:
            return ""
        names = ", ".join(e.name for e in self.load_errors)
        return f" (plugins that failed to load: {names}; see 'rvlm plugins')"

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
            hooks = sorted({h.name for h in self.pm.get_hookcallers(plugin) or ()
                            if h.name in HOOK_NAMES})
            out.append(PluginInfo(name, self.versions.get(name, "unknown"), tuple(hooks),
                                  tuple(sorted(types.get(name, []))), name in self.builtin))
        return sorted(out, key=lambda p: (not p.builtin, p.name))

    def version(self, name: str) -> str:
        return self.versions.get(name, "unknown")

    def has(self, name: str) -> bool:
        return self.pm.get_plugin(name) is not None

    # -- dispatch ------------------------------------------------------------------------
    def implements(self, hook: str, plugin_name: str) -> bool:
        """True when ``plugin_name`` has an implementation (not only a wrapper) of ``hook``."""
        return self._caller(hook, plugin_name) is not None

    def implementers(self, hook: str) -> list[str]:
        """Plugins with an implementation of ``hook``, in pluggy's call order."""
        impls = getattr(self.pm.hook, hook).get_hookimpls()
        return list(dict.fromkeys(i.plugin_name for i in reversed(impls) if not _is_wrapper(i)))

    def _caller(self, hook: str, plugin_name: str) -> Any:
        """pluggy's caller of ``hook`` with ``plugin_name``'s implementation and every
        wrapper (the other plugins' implementations removed), or None if it has none."""
        key = (hook, plugin_name)
        if key not in self._callers:
            impls = getattr(self.pm.hook, hook).get_hookimpls()
            own = [i for i in impls if i.plugin_name == plugin_name and not _is_wrapper(i)]
            others = {i.plugin for i in impls
                      if i.plugin_name != plugin_name and not _is_wrapper(i)}
            self._callers[key] = (self.pm.subset_hook_caller(hook, others) if own else None)
        return self._callers[key]

    def _call_one(self, hook: str, plugin_name: str, **kwargs: Any) -> Any:
        """Call ``hook`` on one plugin through pluggy. A non-firstresult hook returns the
        list pluggy gives (empty when the plugin answered None). Raises PluginError."""
        caller = self._caller(hook, plugin_name)
        if caller is None:
            raise PluginError(plugin_name, hook, "not implemented")
        try:
            return caller(**kwargs)
        except PluginError:
            raise
        except RvlmError as exc:
            if hook in _PLAN_HOOKS:
                raise
            raise PluginError(plugin_name, hook, str(exc)) from exc
        except Exception as exc:
            raise PluginError(plugin_name, hook, _exception(exc)) from exc

    # -- typed hook calls ----------------------------------------------------------------
    def detect(self, differences: Sequence[Difference], source: IndexSchema,
               target: IndexSchema) -> tuple[list[Change], list[Difference]]:
        """Every plugin's changes for ``differences``, in plan order (each where its first
        claimed difference is), and the differences nobody claimed.

        Raises :class:`RvlmError` naming both plugins when two claim one difference, and
        :class:`PluginError` for a change of a type the plugin does not own or a claim on a
        difference that was not reported.
        """
        owners = self.change_types()
        position = {id(d): i for i, d in enumerate(differences)}
        claimed: dict[int, str] = {}
        found: list[tuple[int, int, Change]] = []
        for name in self.implementers("detect_changes"):
            for result in self._call_one("detect_changes", name, differences=differences,
                                         source=source, target=target):
                for change in self._items(name, "detect_changes", result, Change,
                                          "Change items"):
                    if owners.get(change.type, ("",))[0] != name:
                        raise PluginError(name, "detect_changes",
                                          f"returned a {change.type!r} change, a change type "
                                          "it does not own")
                    first = len(differences)
                    for d in change.claims:
                        i = position.get(id(d))
                        if i is None:
                            i = next((j for j, e in enumerate(differences) if e == d), None)
                        if i is None:
                            raise PluginError(name, "detect_changes",
                                              f"claims a difference rvlm did not report "
                                              f"({_shape(d)})")
                        if i in claimed:
                            raise RvlmError(
                                f"plugins {claimed[i]!r} and {name!r} both claim the "
                                f"difference {d.label}; disable one with {DISABLE_ENV}")
                        claimed[i] = name
                        first = min(first, i)
                    found.append((first, len(found), change))
        found.sort(key=lambda t: (t[0], t[1]))
        return ([c for _first, _n, c in found],
                [d for i, d in enumerate(differences) if i not in claimed])

    def merge_patch_section(self, section: str, value: Any, target: IndexSchema,
                            context: PlanContext) -> IndexSchema:
        """The section owner's target schema (an RvlmError it raises is bad input)."""
        owner = self.patch_sections().get(section)
        if owner is None:
            raise RvlmError(f"no installed plugin owns the patch section {section!r}"
                            f"{self.load_errors_note()}")
        result = self._call_one("merge_patch_section", owner, section=section, value=value,
                                target=target, context=context)
        if not isinstance(result, IndexSchema):
            raise PluginError(owner, "merge_patch_section",
                              f"returned {_shape(result)} for the section {section!r}; "
                              "expected an IndexSchema")
        return result

    def classify(self, change: Change, context: PlanContext) -> Classification:
        """The owner's verdict on ``change``."""
        owner = self.owner(change.type)
        result = self._call_one("classify_change", owner, change=change, context=context)
        if not isinstance(result, Classification):
            raise PluginError(owner, "classify_change",
                              f"returned {_shape(result)} for {change.label}; expected a "
                              "Classification")
        return result

    def estimate(self, operation: DocumentOperation, plan: Any,
                 sample: Sequence[Document] | None) -> OperationCost | None:
        """The owner's cost per document of ``operation``; None when the owner is not
        installed, has no estimate, or lets rvlm measure."""
        owner = operation.plugin
        if not self.has(owner) or not self.implements("estimate_operation", owner):
            return None
        result = self._call_one("estimate_operation", owner, operation=operation, plan=plan,
                                sample=sample)
        if result is not None and not isinstance(result, OperationCost):
            raise PluginError(owner, "estimate_operation",
                              f"returned {_shape(result)} ({operation.kind}); expected an "
                              "OperationCost or None")
        return result

    def transform(self, operation: DocumentOperation, documents: Sequence[Document],
                  context: ApplyContext) -> list[DocumentUpdate]:
        """The owner's updates for one batch: one DocumentUpdate per document."""
        owner = operation.plugin
        if not self.has(owner):
            raise RvlmError(f"the plan needs plugin {owner!r} to transform documents, "
                            "and it is not installed or is disabled")
        result = self._call_one("transform_documents", owner, operation=operation,
                                documents=documents, context=context)
        if not isinstance(result, (list, tuple)) or len(result) != len(documents):
            got = (f"{len(result)} updates" if isinstance(result, (list, tuple))
                   else _shape(result))
            raise PluginError(owner, "transform_documents",
                              f"returned {got} for {len(documents)} documents "
                              f"({operation.kind}); expected one DocumentUpdate per document")
        for u in result:
            if u.__class__ is not DocumentUpdate:
                raise PluginError(owner, "transform_documents",
                                  f"returned {_shape(u)} among its updates ({operation.kind}); "
                                  "expected DocumentUpdate items")
        return list(result)

    def has_columns(self, operation: DocumentOperation) -> bool:
        """Whether the owner of ``operation`` has the columnar form (``transform_columns``)."""
        owner = operation.plugin
        return self.has(owner) and self.implements("transform_columns", owner)

    def transform_columns(self, operation: DocumentOperation,
                          columns: Mapping[str, Sequence[Any]], size: int,
                          context: ApplyContext) -> dict[str, Sequence[Any]] | None:
        """The owner's new columns for one batch of ``size`` documents (names of the
        operation's ``writes`` only, each ``size`` long), or None: the owner does not handle
        this batch in columns (``transform`` gets it)."""
        owner = operation.plugin
        result = self._call_one("transform_columns", owner, operation=operation,
                                columns=columns, context=context)
        if result is None:
            return None
        if not isinstance(result, Mapping):
            raise PluginError(owner, "transform_columns",
                              f"returned {_shape(result)} ({operation.kind}); expected a "
                              "mapping of name to a list of values, or None")
        allowed = frozenset(operation.writes)
        for name, column in result.items():
            if name not in allowed:
                raise PluginError(owner, "transform_columns",
                                  f"tried to write {name!r}, outside its declared writes "
                                  f"{list(operation.writes)} ({operation.kind})")
            if not isinstance(column, (list, tuple)) or len(column) != size:
                got = (f"{len(column)} values" if isinstance(column, (list, tuple))
                       else _shape(column))
                raise PluginError(owner, "transform_columns",
                                  f"returned {got} for {name!r} and {size} documents "
                                  f"({operation.kind}); expected one value per document")
        return dict(result)

    def pre_drop(self, plan: Any, context: ApplyContext) -> list[str]:
        """Every plugin's problems (one line each); empty: go on."""
        problems: list[str] = []
        for name in self.implementers("pre_drop"):
            for result in self._call_one("pre_drop", name, plan=plan, context=context):
                problems.extend(self._items(name, "pre_drop", result, str, "problem lines"))
        return problems

    def post_create(self, plan: Any, context: ApplyContext) -> None:
        for name in self.implementers("post_create"):
            self._call_one("post_create", name, plan=plan, context=context)

    def validate(self, plan: Any, context: ApplyContext) -> list[CheckResult]:
        """Every plugin's checks, in call order."""
        checks: list[CheckResult] = []
        for name in self.implementers("validate"):
            for result in self._call_one("validate", name, plan=plan, context=context):
                checks.extend(self._items(name, "validate", result, CheckResult,
                                          "CheckResult items"))
        return checks

    @staticmethod
    def _items(plugin: str, hook: str, result: Any, kind: type, what: str) -> list[Any]:
        if result is None:
            return []
        if isinstance(result, (str, bytes)) or not isinstance(result, Iterable):
            raise PluginError(plugin, hook, f"returned {_shape(result)}; expected a list of "
                                            f"{what}")
        items = list(result)
        for item in items:
            if not isinstance(item, kind):
                raise PluginError(plugin, hook, f"returned {_shape(item)} in its list; "
                                                f"expected {what}")
        return items


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
