"""Built-in explainers."""

from neuron_explainer.explainers.token_table import TokenTableExplainer as TokenTableExplainer

__all__ = ["TokenTableExplainer"]
