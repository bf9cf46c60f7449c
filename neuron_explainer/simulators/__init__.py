"""Built-in simulators."""

from neuron_explainer.simulators.token_table import TokenTableSimulator as TokenTableSimulator

__all__ = ["TokenTableSimulator"]
