"""A typed registry of components over a pluggy plugin manager.

`Registry` loads plugins lazily on the first lookup and caches what they registered. Plugins come
from three places, in order: the built-in plugin, plugin objects passed to the constructor, and
entry points in the ``neuron_explainer`` group. Environment variables control the entry points:

* ``NEURON_EXPLAINER_DISABLE_PLUGINS=1``: load no entry-point plugins at all;
* ``NEURON_EXPLAINER_PLUGINS=a,b``: load only the entry points named ``a`` and ``b``;
* ``NEURON_EXPLAINER_STRICT_PLUGINS=1``: a plugin that fails to import or to register raises
  `PluginError` instead of a `PluginWarning` (for plugin authors).

Names: plain names for components (``"token-table"``), ``provider:model`` for LLMs
(``"acme:large-1"``). Naming an explainer or simulator as ``provider:model`` builds the default
LLM-backed one around that LLM: `DEFAULT_LLM_EXPLAINER`; `DEFAULT_LLM_SIMULATOR` (chat-logprob)
when the LLM offers ``chat_logprobs``, else `FALLBACK_LLM_SIMULATOR` (JSON output).

Qualified names: ``plugin/name`` (``"acme/token-table"``, ``"builtin/token-table"``, for an LLM
``"acme/acme:large-1"``) names the component that plugin registered, whatever else took the
plain name. Built-in names stay the built-ins': a plugin that registers a built-in's name or
alias keeps its component under the qualified name only, with a `PluginWarning` naming the
plugin (`DuplicateComponentError` in strict mode). Two other plugins that register one name
make the plain name a `DuplicateComponentError`; each component is still reached by its
qualified name.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from typing import Any, Literal, TypeVar

import pluggy

from neuron_explainer.errors import (
    DuplicateComponentError,
    InvalidInputError,
    PluginError,
    PluginWarning,
    UnknownComponentError,
)
from neuron_explainer.interfaces import Explainer, Simulator, Subject
from neuron_explainer.llm.base import LLM
from neuron_explainer.plugins import _builtin, hookspecs
from neuron_explainer.plugins._entries import (
    LABEL,
    QUALIFIER,
    ComponentEntry,
    Kind,
    PluginStatus,
    check_hook_names,
    check_options,
    truthy,
)
from neuron_explainer.scorers.base import Scorer

__all__ = [
    "DEFAULT_LLM_EXPLAINER",
    "DEFAULT_LLM_SIMULATOR",
    "ENTRY_POINT_GROUP",
    "FALLBACK_LLM_SIMULATOR",
    "ComponentEntry",
    "PluginStatus",
    "Registry",
    "default_registry",
    "list_components",
]

ENTRY_POINT_GROUP = "neuron_explainer"
ENV_DISABLE = "NEURON_EXPLAINER_DISABLE_PLUGINS"
ENV_ALLOW = "NEURON_EXPLAINER_PLUGINS"
ENV_STRICT = "NEURON_EXPLAINER_STRICT_PLUGINS"
BUILTIN = "builtin"
"""The plugin name of the built-in components (``builtin/token-table``)."""
DEFAULT_LLM_EXPLAINER = "llm"
DEFAULT_LLM_SIMULATOR = "llm-chat-logprob"
FALLBACK_LLM_SIMULATOR = "llm-json"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
T = TypeVar("T")


class Registry:
    """Explainers, simulators, scorers, subjects and LLM providers registered by plugins.

    Args:
        plugins: extra plugin objects (modules or instances with `hookimpl` functions) to
            register after the built-in one, e.g. in tests.
        entry_points: whether to discover plugins from installed packages' entry points.
        environ: where to read the ``NEURON_EXPLAINER_*`` variables (default ``os.environ``).
    """

    def __init__(
        self,
        *,
        plugins: Iterable[object] = (),
        entry_points: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._extra = list(plugins)
        self._use_entry_points = entry_points
        self._environ = os.environ if environ is None else environ
        self._loaded = False
        self._entries: dict[str, dict[str, list[ComponentEntry]]] = {k: {} for k in LABEL}
        self._qualified: dict[str, dict[str, ComponentEntry]] = {k: {} for k in LABEL}
        self._plugins: list[PluginStatus] = []
        self._sources: dict[str, str] = {}
        self._llms: dict[str, LLM] = {}

    # -- loading -----------------------------------------------------------------------------

    @property
    def strict(self) -> bool:
        """Whether plugin failures raise (``NEURON_EXPLAINER_STRICT_PLUGINS``)."""
        return truthy(self._environ.get(ENV_STRICT))

    def _fail(self, name: str, source: str, what: str, exc: BaseException) -> None:
        message = f"plugin {name!r} ({source}) failed to {what}: {type(exc).__name__}: {exc}"
        if self.strict:
            raise PluginError(message) from exc
        warnings.warn(f"{message}; it is skipped", PluginWarning, stacklevel=4)
        self._plugins.append(PluginStatus(name, "failed", source, f"{type(exc).__name__}: {exc}"))

    def _discover(self, pm: pluggy.PluginManager) -> None:
        if truthy(self._environ.get(ENV_DISABLE)):
            status: Literal["disabled", "not allowed"] = "disabled"
            allowed: set[str] | None = set()
        else:
            status = "not allowed"
            raw = self._environ.get(ENV_ALLOW)
            allowed = None if raw is None else {p.strip() for p in raw.split(",") if p.strip()}
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            source = f"entry point {ep.value}"
            if allowed is not None and ep.name not in allowed:
                self._plugins.append(PluginStatus(ep.name, status, source))
                continue
            try:
                plugin = ep.load()
                if isinstance(plugin, type):
                    plugin = plugin()
                pm.register(plugin, name=ep.name)
                self._sources[ep.name] = source
            except Exception as exc:
                self._fail(ep.name, source, "import", exc)

    def load(self) -> None:
        """Load every plugin and collect what it registers (done once; later calls return).

        Raises:
            PluginError: in strict mode, a plugin failed to load or register
                (`DuplicateComponentError`: it registered a built-in's name); a plugin
                object was passed twice.
        """
        if self._loaded:
            return
        self._entries = {k: {} for k in LABEL}  # a strict load that raised may have begun
        self._qualified = {k: {} for k in LABEL}
        self._plugins = []
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        pm.register(_builtin, name=BUILTIN)
        self._sources = {BUILTIN: "built in"}
        for plugin in self._extra:
            name = getattr(plugin, "__name__", None) or repr(plugin)
            try:
                pm.register(plugin, name=name)
            except ValueError as exc:  # pluggy: the same name or object twice
                raise PluginError(f"cannot register plugin {name!r}: {exc}") from None
            self._sources[name] = "passed to Registry"
        if self._use_entry_points:
            self._discover(pm)
        failed: set[str] = set()
        for name, plugin in pm.list_name_plugin():
            source = self._sources.get(name, "plugin")
            try:
                check_hook_names(plugin)
                found = self._collect(pm, plugin, name)
            except Exception as exc:
                self._fail(name, source, "register", exc)
                failed.add(name)
                continue
            for entry in found:
                for key in (entry.name, *entry.aliases):
                    self._entries[entry.kind].setdefault(key, []).append(entry)
                    self._qualified[entry.kind].setdefault(entry.qualified(key), entry)
        self._keep_builtin_names()
        for name, _ in pm.list_name_plugin():
            if name not in failed:
                self._plugins.append(
                    PluginStatus(name, "loaded", self._sources.get(name, "plugin"))
                )
        self._loaded = True

    def _keep_builtin_names(self) -> None:
        """Give every plain name a built-in registered back to the built-in: another plugin's
        entry under it is rejected there (a `PluginWarning` naming the plugin, or
        `DuplicateComponentError` in strict mode) and stays reachable as ``plugin/name``."""
        for kind, table in self._entries.items():
            for key, entries in table.items():
                kept = [e for e in entries if e.plugin == BUILTIN]
                if not kept or len(kept) == len(entries):
                    continue
                for plugin in sorted({e.plugin for e in entries if e.plugin != BUILTIN}):
                    message = (
                        f"plugin {plugin!r} registers the {LABEL[kind]} name {key!r}, which "
                        f"stays the built-in {LABEL[kind]}'s; choose the plugin's as "
                        f"'{plugin}{QUALIFIER}{key}'"
                    )
                    if self.strict:
                        raise DuplicateComponentError(message)
                    warnings.warn(message, PluginWarning, stacklevel=5)
                table[key] = kept

    def _collect(
        self, pm: pluggy.PluginManager, plugin: object, plugin_name: str
    ) -> list[ComponentEntry]:
        found: list[ComponentEntry] = []
        for kind, hook_name in hookspecs.HOOKS.items():
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                if impl.plugin is not plugin:
                    continue

                def register(
                    factory: Callable[..., Any],
                    *,
                    name: str,
                    aliases: Sequence[str] = (),
                    description: str = "",
                    _kind: str = kind,
                ) -> None:
                    for key in (name, *aliases):
                        if not isinstance(key, str) or not _NAME.match(key):
                            raise PluginError(
                                f"{key!r} is not a valid {LABEL[_kind]} name (letters, digits, "
                                "'.', '_', '+', '-'; no ':', '/' or spaces)"
                            )
                    if not callable(factory):
                        raise PluginError(f"the factory registered as {name!r} is not callable")
                    found.append(
                        ComponentEntry(
                            kind=_kind,  # type: ignore[arg-type]
                            name=name,
                            plugin=plugin_name,
                            factory=factory,
                            aliases=tuple(aliases),
                            description=description,
                        )
                    )

                impl.function(register=register)
        return found

    # -- lookups -----------------------------------------------------------------------------

    def plugins(self) -> list[PluginStatus]:
        """Every plugin seen, with whether it loaded (and why not)."""
        self.load()
        return list(self._plugins)

    def components(self, kind: Kind | None = None) -> list[ComponentEntry]:
        """Registered components, each once, under the name that selects it (its main name,
        or ``plugin/name`` when a built-in or another plugin has that name too; likewise its
        aliases), sorted by kind and name."""
        self.load()
        seen: dict[tuple[str, str, str], ComponentEntry] = {}
        for k, table in self._qualified.items():
            if kind is None or k == kind:
                for entry in table.values():
                    seen.setdefault((entry.kind, entry.name, entry.plugin), entry)
        shown = [
            dataclasses.replace(
                entry,
                name=self._selecting(entry, entry.name),
                aliases=tuple(self._selecting(entry, a) for a in entry.aliases),
            )
            for entry in seen.values()
        ]
        return sorted(shown, key=lambda e: (e.kind, e.name, e.plugin))

    def _selecting(self, entry: ComponentEntry, key: str) -> str:
        """``key`` if the plain name selects ``entry`` alone, else its qualified name."""
        entries = self._entries[entry.kind].get(key, [])
        return (
            key
            if {(e.plugin, e.name) for e in entries} == {(entry.plugin, entry.name)}
            else (entry.qualified(key))
        )

    def entry(self, kind: Kind, name: str) -> ComponentEntry:
        """The entry registered under ``name`` (or an alias), or under ``plugin/name`` by that
        plugin.

        Raises:
            UnknownComponentError: nothing of that kind has that name.
            DuplicateComponentError: two plugins registered that name (each is still reached
                by its qualified name).
        """
        self.load()
        if QUALIFIER in name:
            found = self._qualified[kind].get(name)
            entries = [] if found is None else [found]
            known = list(self._qualified[kind])
        else:
            entries = self._entries[kind].get(name) or []
            known = list(self._entries[kind])
        if not entries:
            loaded = [p.name for p in self._plugins if p.status == "loaded"]
            raise UnknownComponentError(LABEL[kind], name, known, loaded)
        if len({(e.plugin, e.name) for e in entries}) > 1:
            owners = " and ".join(f"plugin {e.plugin!r} (as {e.name!r})" for e in entries)
            qualified = " or ".join(f"'{e.qualified(name)}'" for e in entries)
            raise DuplicateComponentError(
                f"{LABEL[kind]} name {name!r} is registered by {owners}; name one as "
                f"{qualified}, uninstall one, or choose plugins with {ENV_ALLOW}=..."
            )
        return entries[0]

    def _build(self, kind: Kind, name: str, expected: type[T], **options: Any) -> T:
        entry = self.entry(kind, name)
        check_options(entry, (), options)
        built = entry.factory(**options)
        if not isinstance(built, expected):
            raise PluginError(
                f"{LABEL[kind]} {name!r} from plugin {entry.plugin!r} built a "
                f"{type(built).__name__}, not a {expected.__name__}"
            )
        return built

    def llm(self, spec: str, **options: Any) -> LLM:
        """Build the LLM named ``provider:model``.

        Without options, the LLM is built once and shared by every later lookup of the same
        name, so an explainer and a simulator on one model share one client (and its limits).

        Raises:
            InvalidInputError: ``spec`` is not of the form ``provider:model``.
            UnknownComponentError: no provider has that name.
        """
        if not options and spec in self._llms:
            return self._llms[spec]
        provider, sep, model = spec.partition(":")
        if not sep or not provider or not model:
            raise InvalidInputError(
                f"an LLM is named 'provider:model' (e.g. 'openai:gpt-4o-mini'), got {spec!r}"
            )
        entry = self.entry("llm_provider", provider)
        check_options(entry, (model,), options)
        built = entry.factory(model, **options)
        if not isinstance(built, LLM):
            raise PluginError(
                f"LLM provider {provider!r} from plugin {entry.plugin!r} built a "
                f"{type(built).__name__}, not an LLM"
            )
        if not options:
            self._llms[spec] = built
        return built

    def explainer(self, spec: Explainer | str, **options: Any) -> Explainer:
        """Return ``spec`` if it is an `Explainer`; else build the one it names.

        ``"provider:model"`` builds `DEFAULT_LLM_EXPLAINER` around that LLM.

        Raises:
            UnknownComponentError / DuplicateComponentError: see `entry`.
            InvalidInputError: ``spec`` is neither, or the options do not fit.
        """
        return self._component("explainer", spec, Explainer, DEFAULT_LLM_EXPLAINER, options)

    def simulator(self, spec: Simulator | str, **options: Any) -> Simulator:
        """Return ``spec`` if it is a `Simulator`; else build the one it names.

        ``"provider:model"`` builds `DEFAULT_LLM_SIMULATOR` around that LLM when it offers
        ``chat_logprobs``, else `FALLBACK_LLM_SIMULATOR`.

        Raises:
            UnknownComponentError / DuplicateComponentError: see `entry`.
            InvalidInputError: ``spec`` is neither, or the options do not fit.
        """
        return self._component("simulator", spec, Simulator, DEFAULT_LLM_SIMULATOR, options)

    def scorer(self, spec: Scorer | str, **options: Any) -> Scorer:
        """Return ``spec`` if it is a `Scorer`; else build the one registered under it
        (``"detection"``, ``"fuzzing"``, ``"correlation"``, or a plugin's), passing
        ``options`` (an LLM scorer takes ``llm=``: an `LLM` or a ``provider:model`` name).

        Raises:
            UnknownComponentError / DuplicateComponentError: see `entry`.
            InvalidInputError: ``spec`` is neither, or the options do not fit.
        """
        if isinstance(options.get("llm"), str):
            options = {**options, "llm": self.llm(options["llm"])}
        return self._component("scorer", spec, Scorer, None, options)

    def subject(self, spec: Subject | str, **options: Any) -> Subject:
        """Return ``spec`` if it is a `Subject`; else build the one registered under it,
        passing ``options`` to its factory (`explain_neuron` passes ``model=``, ``corpus=`` and
        the ``subject_options``; see `neuron_explainer.plugins.hookspecs.register_subjects`).

        Raises:
            UnknownComponentError / DuplicateComponentError: see `entry`.
            InvalidInputError: ``spec`` is neither, or the options do not fit.
        """
        return self._component("subject", spec, Subject, None, options)

    def _component(
        self,
        kind: Kind,
        spec: object,
        expected: type[T],
        llm_default: str | None,
        options: dict[str, Any],
    ) -> T:
        if isinstance(spec, expected):
            return spec
        if not isinstance(spec, str):
            raise InvalidInputError(
                f"{LABEL[kind]} must be an object of type {expected.__name__} or a registered "
                f"name, got {type(spec).__name__}"
            )
        if ":" in spec and llm_default is not None:
            llm = self.llm(spec)
            if kind == "simulator" and "chat_logprobs" not in llm.capabilities:
                llm_default = FALLBACK_LLM_SIMULATOR
            return self._build(kind, llm_default, expected, llm=llm, **options)
        return self._build(kind, spec, expected, **options)


@cache
def default_registry() -> Registry:
    """The process-wide registry used when no registry is passed (created on first use)."""
    return Registry()


def list_components(kind: Kind | None = None) -> list[ComponentEntry]:
    """Every component the installed plugins register, with the plugin each came from."""
    return default_registry().components(kind)
