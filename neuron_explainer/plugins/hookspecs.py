"""Hook specifications: what a ``neuron_explainer`` plugin can implement.

A plugin is a module (or object) named by an entry point in the ``neuron_explainer`` group.
It implements any of the hooks below with `hookimpl`; each hook receives a ``register``
callback and calls it once per component:

    from neuron_explainer.plugins import hookimpl

    @hookimpl
    def register_llm_providers(register):
        register(AcmeLLM, name="acme", description="Acme's chat models")

``register(factory, *, name, aliases=(), description="")`` records ``factory`` under ``name``
(and each alias). Factories are called only when the name is looked up, so import heavy
dependencies inside them. Built-in components register through these same hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import pluggy

__all__ = ["HOOKS", "Register", "hookimpl", "hookspec"]

PROJECT = "neuron_explainer"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
"""Decorator marking a plugin's hook implementations."""


class Register(Protocol):
    """The callback every hook receives."""

    def __call__(
        self,
        factory: Callable[..., Any],
        *,
        name: str,
        aliases: Sequence[str] = (),
        description: str = "",
    ) -> None:
        """Record ``factory`` under ``name`` and each of ``aliases``.

        Args:
            factory: builds the component when its name is looked up (see each hook for the
                arguments it receives).
            name: the name users write; letters, digits, ``.``, ``_``, ``+`` and ``-`` (no
                ``:``, which separates ``provider:model``).
            aliases: more names for the same component.
            description: one line shown by `list_components`.

        Raises:
            PluginError: an invalid name, or a factory that is not callable.
        """


@hookspec
def register_llm_providers(register: Register) -> None:
    """Register LLM providers.

    ``factory(model: str, **options) -> LLM`` builds a `neuron_explainer.llm.LLM` for a model
    of the provider; ``name`` is the provider prefix users write before the colon in
    ``provider:model`` (e.g. ``"acme"`` for ``"acme:large-1"``).
    """


@hookspec
def register_subjects(register: Register) -> None:
    """Register subjects (models whose units can be recorded).

    ``factory(*, model, corpus, **options) -> Subject``. ``model`` is what to record, as the
    user gave it (a name, a path, an object: whatever your subject understands); ``corpus`` is
    the text to record it over, ``None`` when none was given (a subject that needs one raises
    `InvalidInputError` saying so; one that does not need it raises when one is given);
    ``options`` are the caller's ``subject_options``. Import heavy dependencies (torch, a
    model) inside the factory or the subject, not at import time.

    `neuron_explainer.explain_neuron` builds a subject this way:
    ``explain_neuron(model, subject="name", layer=..., neuron=..., corpus=...,
    subject_options={...})`` calls ``factory(model=model, corpus=corpus, **subject_options)``
    and explains the record of ``subject.unit(layer, neuron)``. ``registry.subject("name",
    **options)`` passes exactly the options it is given. The built-in subjects are ``"hf"``
    (a Hugging Face causal LM recorded in memory; the default) and ``"collection"`` (``model``
    is a collection folder written by ``collect``; no corpus).
    """


@hookspec
def register_explainers(register: Register) -> None:
    """Register explainers.

    ``factory(**options) -> Explainer``. An explainer that needs an LLM takes it as the keyword
    argument ``llm``. When a user names an explainer as ``provider:model``, the registry builds
    the default LLM explainer (``"llm"``) with ``llm=`` that model; any other explainer gets
    ``llm=`` only from a caller who passes it.
    """


@hookspec
def register_simulators(register: Register) -> None:
    """Register simulators.

    ``factory(**options) -> Simulator``. A simulator that needs an LLM takes it as the keyword
    argument ``llm``; ``provider:model`` builds the default LLM simulator (``"llm-json"``).
    """


@hookspec
def register_scorers(register: Register) -> None:
    """Register scorers (`neuron_explainer.scorers.base.Scorer`).

    ``factory(**options) -> Scorer``. A scorer that asks an LLM takes it as the keyword
    argument ``llm``; one that scores by simulation takes ``simulator``. When a run names an
    LLM scorer without an LLM, it is given the simulator's LLM. Built in: ``"correlation"``
    (the simulation score), ``"detection"`` and ``"fuzzing"``.
    """


HOOKS: dict[str, str] = {
    "llm_provider": "register_llm_providers",
    "subject": "register_subjects",
    "explainer": "register_explainers",
    "simulator": "register_simulators",
    "scorer": "register_scorers",
}
"""Component kind → the hook that registers it."""
