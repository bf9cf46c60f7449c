"""Plugins: the pluggy hooks third parties implement and the registry that collects them.

See docs/plugins.md for a tutorial. The hooks are in `neuron_explainer.plugins.hookspecs`.
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
