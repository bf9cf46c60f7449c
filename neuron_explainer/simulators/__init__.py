"""Built-in simulators: the offline baseline `TokenTableSimulator` (here) and the LLM simulators
in their modules, `chat_logprob`, `json_output` and `prompt_logprob` (the paper's all-at-once);
``_common`` holds what those share. All implement `neuron_explainer.interfaces.Simulator`,
including its cost estimate."""

from neuron_explainer.simulators.token_table import TokenTableSimulator as TokenTableSimulator

__all__ = ["TokenTableSimulator"]
