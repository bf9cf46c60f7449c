"""The registry's records: one registered component (`ComponentEntry`), one plugin's load
status (`PluginStatus`), and the checks run on what plugins register."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from neuron_explainer.errors import InvalidInputError, PluginError
from neuron_explainer.plugins import hookspecs

__all__ = [
    "LABEL",
    "QUALIFIER",
    "ComponentEntry",
    "Kind",
    "PluginStatus",
    "check_hook_names",
    "check_options",
    "truthy",
]

QUALIFIER = "/"
"""What separates a plugin's name from its component's in a qualified name (``acme/x``)."""
Kind = Literal["llm_provider", "subject", "explainer", "simulator", "scorer"]
LABEL: dict[str, str] = {
    "llm_provider": "LLM provider",
    "subject": "subject",
    "explainer": "explainer",
    "simulator": "simulator",
    "scorer": "scorer",
}
"""Component kind -> how messages name it."""


@dataclass(frozen=True)
class ComponentEntry:
    """One registered component: what it is, under which names, and which plugin added it.

    In `Registry.components` (and `list_components`), ``name`` and ``aliases`` are the names
    that select the component: a name taken by a built-in, or by two plugins, is shown
    qualified (``acme/token-table``).
    """

    kind: Kind
    name: str
    plugin: str
    factory: Callable[..., Any] = field(repr=False, compare=False)
    aliases: tuple[str, ...] = ()
    description: str = ""

    def qualified(self, key: str | None = None) -> str:
        """``plugin/name`` (or ``plugin/key`` for one of its aliases): the name that selects
        this component whatever else registered its plain name."""
        return f"{self.plugin}{QUALIFIER}{key or self.name}"


@dataclass(frozen=True)
class PluginStatus:
    """Whether a plugin loaded: ``status`` is "loaded", "failed", "disabled" or "not allowed"."""

    name: str
    status: Literal["loaded", "failed", "disabled", "not allowed"]
    source: str
    error: str | None = None


def check_hook_names(plugin: object) -> None:
    """Refuse hook implementations whose names match no hookspec (a typo registers nothing)."""
    marker = f"{hookspecs.PROJECT}_impl"
    for attr in dir(plugin):
        if attr not in hookspecs.HOOKS.values() and hasattr(getattr(plugin, attr, None), marker):
            raise PluginError(
                f"{attr!r} is marked as a hook but no such hook exists; the hooks are "
                f"{', '.join(sorted(hookspecs.HOOKS.values()))}"
            )


def check_options(entry: ComponentEntry, args: tuple[Any, ...], options: dict[str, Any]) -> None:
    """Raise `InvalidInputError` if ``entry``'s factory cannot take these arguments.

    Checked against the signature before the call, so a TypeError raised inside a factory (a
    bug in it) is not mistaken for bad options.
    """
    try:
        signature = inspect.signature(entry.factory)
    except (TypeError, ValueError):  # some builtins have no signature; let the call decide
        return
    try:
        signature.bind(*args, **options)
    except TypeError as exc:
        raise InvalidInputError(
            f"{LABEL[entry.kind]} {entry.name!r} (from plugin {entry.plugin!r}) does not accept "
            f"these options: {exc}"
        ) from None


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")
