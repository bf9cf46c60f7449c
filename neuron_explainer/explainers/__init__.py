"""Built-in explainers: the offline baseline `TokenTableExplainer` (here) and the LLM explainer
`neuron_explainer.explainers.llm.LLMExplainer` (import it from its module). Both implement
`neuron_explainer.interfaces.Explainer`, including its cost estimate."""

from neuron_explainer.explainers.token_table import TokenTableExplainer as TokenTableExplainer

__all__ = ["TokenTableExplainer"]
