"""Plugins: the pluggy hooks third parties implement and the registry that collects them.

* `neuron_explainer.plugins.hookspecs`: the hooks (``register_llm_providers``,
  ``register_subjects``, ``register_explainers``, ``register_simulators``,
  ``register_scorers``) and `hookimpl`.
* `neuron_explainer.plugins.registry`: `Registry`, which loads the built-in plugin, plugin
  objects and entry points, and builds components by name (``"token-table"``,
  ``"openai:gpt-4o-mini"``).
* ``_builtin``: the built-in components, registered through the same
  hooks by import string (imported when a name is first looked up).

The registry depends only on `neuron_explainer.interfaces` and `neuron_explainer.llm.base`;
the built-in registrations name the stages' classes, so this package sits above the stages.
See docs/plugins.md for a tutorial.
"""

from neuron_explainer.plugins import registry as _registry
from neuron_explainer.plugins.hookspecs import Register as Register
from neuron_explainer.plugins.hookspecs import hookimpl as hookimpl
from neuron_explainer.plugins.registry import DEFAULT_LLM_EXPLAINER as DEFAULT_LLM_EXPLAINER
from neuron_explainer.plugins.registry import DEFAULT_LLM_SIMULATOR as DEFAULT_LLM_SIMULATOR
from neuron_explainer.plugins.registry import ENTRY_POINT_GROUP as ENTRY_POINT_GROUP
from neuron_explainer.plugins.registry import FALLBACK_LLM_SIMULATOR as FALLBACK_LLM_SIMULATOR
from neuron_explainer.plugins.registry import ComponentEntry as ComponentEntry
from neuron_explainer.plugins.registry import PluginStatus as PluginStatus
from neuron_explainer.plugins.registry import Registry as Registry
from neuron_explainer.plugins.registry import default_registry as default_registry
from neuron_explainer.plugins.registry import list_components as list_components

__all__ = ["Register", "hookimpl", *_registry.__all__]
