"""An explainer that asks an LLM what the top-activating excerpts have in common."""

from __future__ import annotations

import re
from collections.abc import Sequence

from neuron_explainer.errors import ExplanationError, InvalidInputError
from neuron_explainer.interfaces import Explainer
from neuron_explainer.llm.base import LLM, Message
from neuron_explainer.llm.prompts import render_records
from neuron_explainer.records import ActivationRecord
from neuron_explainer.results import ComponentInfo, Explanation, PromptScale

__all__ = ["LLMExplainer"]

PROMPT_VERSION = "llm-explainer/1"
ANSWER_PREFIX = "the main thing this neuron does is find"
SYSTEM = (
    "We're studying neurons in a neural network. Each neuron looks for one particular thing in "
    "a short document. Look at the parts of the document the neuron activates for and "
    "summarize in a single sentence what the neuron is looking for. Don't list examples of "
    "words.\n\nThe activation format is token<tab>activation. Activation values range from 0 "
    "to 10. A neuron finding what it's looking for is represented by a non-zero activation "
    "value. The higher the activation value, the stronger the match. Tabs, newlines and "
    "backslashes inside tokens are written as \\t, \\n and \\\\."
)


def clean_explanation(raw: str) -> str:
    """Strip the answer prefix, surrounding quotes and whitespace, and a trailing period."""
    text = " ".join(raw.split())
    text = re.sub(rf"^(?:{re.escape(ANSWER_PREFIX)})\s*", "", text, flags=re.IGNORECASE)
    text = text.strip(" \"'`")
    return text[:-1].rstrip() if text.endswith(".") else text


class LLMExplainer(Explainer):
    """Shows an LLM the train records on the 0-10 scale and keeps its one-sentence answer.

    Args:
        llm: the model to ask (any registered provider).
        max_tokens: length limit of the answer.
        temperature: sampling temperature (0 = greedy).

    Raises:
        InvalidInputError: no ``llm`` given (name the explainer as ``provider:model``).
    """

    name = "llm"

    def __init__(self, llm: LLM | None = None, *, max_tokens: int = 80, temperature: float = 0.0):
        if llm is None:
            raise InvalidInputError(
                "the 'llm' explainer needs an LLM: name it as 'provider:model' "
                "(e.g. explainer='openai:gpt-4o-mini') or pass llm=..."
            )
        self.llm, self.max_tokens, self.temperature = llm, max_tokens, temperature

    @property
    def info(self) -> ComponentInfo:
        return ComponentInfo(
            name=self.name,
            version="1",
            prompt_version=PROMPT_VERSION,
            settings={
                "llm": self.llm.name,
                "max_tokens": self.max_tokens,
                "temperature": self.temperature,
            },
        )

    def messages(self, records: Sequence[ActivationRecord], scale: PromptScale) -> list[Message]:
        """The chat messages sent for ``records``."""
        user = (
            f"Neuron\nActivations:\n{render_records(records, scale)}\n\n"
            f"Explanation of neuron behavior: {ANSWER_PREFIX}"
        )
        return [Message(role="system", content=SYSTEM), Message(role="user", content=user)]

    async def aexplain(self, records: Sequence[ActivationRecord]) -> Explanation:
        """Ask the LLM; the cleaned answer is the explanation, the raw one is kept.

        Raises:
            ExplanationError: no positive activation to show, or an empty answer.
        """
        scale = PromptScale.for_records(records)
        if scale is None:
            raise ExplanationError("no train record has a positive activation to show the LLM")
        response = await self.llm.acomplete(
            self.messages(records, scale), max_tokens=self.max_tokens, temperature=self.temperature
        )
        raw = response.choices[0].text
        text = clean_explanation(raw)
        if not text:
            raise ExplanationError(f"{self.llm.name} returned no explanation (raw output {raw!r})")
        return Explanation(text=text, scale=scale, raw_output=raw, explainer=self.info)
