"""LLM providers: the chat contract plugins implement (`LLM`, `ChatRequest`, `ChatResponse`)."""

from neuron_explainer.llm.base import CAPABILITIES as CAPABILITIES
from neuron_explainer.llm.base import LLM as LLM
from neuron_explainer.llm.base import Capability as Capability
from neuron_explainer.llm.base import ChatRequest as ChatRequest
from neuron_explainer.llm.base import ChatResponse as ChatResponse
from neuron_explainer.llm.base import Choice as Choice
from neuron_explainer.llm.base import Message as Message
from neuron_explainer.llm.base import PromptLogprobsRequest as PromptLogprobsRequest
from neuron_explainer.llm.base import PromptLogprobsResponse as PromptLogprobsResponse
from neuron_explainer.llm.base import PromptToken as PromptToken
from neuron_explainer.llm.base import TokenLogprob as TokenLogprob
from neuron_explainer.llm.base import TopLogprob as TopLogprob
from neuron_explainer.llm.base import Usage as Usage

__all__ = [
    "CAPABILITIES",
    "LLM",
    "Capability",
    "ChatRequest",
    "ChatResponse",
    "Choice",
    "Message",
    "PromptLogprobsRequest",
    "PromptLogprobsResponse",
    "PromptToken",
    "TokenLogprob",
    "TopLogprob",
    "Usage",
]
