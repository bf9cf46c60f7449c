"""A simulator that asks an LLM for a JSON list of activations, for backends without logprobs."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from neuron_explainer.errors import InvalidInputError, SimulationError
from neuron_explainer.interfaces import Simulator
from neuron_explainer.llm.base import LLM, Message
from neuron_explainer.llm.prompts import extract_json_object
from neuron_explainer.results import ComponentInfo, Explanation, SequenceSimulation

__all__ = ["JSONSimulator"]

PROMPT_VERSION = "json-simulator/1"
SYSTEM = (
    "We're studying neurons in a neural network. Each neuron looks for one particular thing in "
    "a short document. Given an explanation of what a neuron looks for, predict how strongly "
    "it activates on each token of a document, as an integer from 0 (not at all) to 10 "
    "(the strongest match). Most tokens are usually 0."
)


def _schema(n: int) -> dict[str, object]:
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "activations",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {
                    "activations": {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 0, "maximum": 10},
                        "minItems": n,
                        "maxItems": n,
                    }
                },
                "required": ["activations"],
                "additionalProperties": False,
            },
        },
    }


def parse_activations(text: str, n: int) -> list[float]:
    """The ``activations`` list of the JSON object in ``text``, checked to hold ``n`` numbers in
    0..10.

    Raises:
        ValueError: saying what is wrong with the output.
    """
    data = extract_json_object(text)
    values = data.get("activations") if isinstance(data, dict) else None
    if not isinstance(values, list):
        raise ValueError('the JSON object has no "activations" list')
    if len(values) != n:
        raise ValueError(f"{len(values)} activations for {n} tokens")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"activation {i} is {v!r}, not a number")
        if not 0 <= v <= 10:
            raise ValueError(f"activation {i} is {v}, outside 0..10")
        out.append(float(v))
    return out


class JSONSimulator(Simulator):
    """Asks an LLM for one 0-10 activation per token as JSON, validated and aligned.

    Uses the backend's JSON-schema output when it offers ``json_schema``. When an answer does
    not parse or has the wrong length, the model is shown its answer and the problem and asked
    again, up to ``retries`` times; then `SimulationError` is raised. A failure is never scored
    as zeros.

    Args:
        llm: the model to ask.
        retries: extra attempts after an unusable answer.

    Raises:
        InvalidInputError: no ``llm`` given (name the simulator as ``provider:model``).
    """

    name = "llm-json"

    def __init__(self, llm: LLM | None = None, *, retries: int = 2) -> None:
        if llm is None:
            raise InvalidInputError(
                "the 'llm-json' simulator needs an LLM: name it as 'provider:model' "
                "(e.g. simulator='openai:gpt-4o-mini') or pass llm=..."
            )
        self.llm, self.retries = llm, retries

    @property
    def info(self) -> ComponentInfo:
        return ComponentInfo(
            name=self.name,
            version="1",
            prompt_version=PROMPT_VERSION,
            settings={"llm": self.llm.name, "retries": self.retries},
        )

    def messages(self, explanation: Explanation, tokens: Sequence[str]) -> list[Message]:
        """The chat messages sent to simulate ``tokens``."""
        user = (
            f"Explanation: the neuron finds {explanation.text}\n\n"
            f"Tokens ({len(tokens)}), as a JSON list:\n{json.dumps(list(tokens))}\n\n"
            f'Answer with a JSON object {{"activations": [...]}} holding exactly {len(tokens)} '
            "integers, one per token, in order."
        )
        return [Message(role="system", content=SYSTEM), Message(role="user", content=user)]

    async def asimulate(
        self, explanation: Explanation, tokens: Sequence[str]
    ) -> SequenceSimulation:
        """Predict every token's activation on the 0-10 scale.

        Raises:
            SimulationError: every attempt gave an unusable answer.
        """
        structured = "json_schema" in self.llm.capabilities
        messages = self.messages(explanation, tokens)
        problems: list[str] = []
        for _ in range(self.retries + 1):
            response = await self.llm.acomplete(
                messages,
                temperature=0.0,
                response_format=_schema(len(tokens)) if structured else None,
            )
            text = response.choices[0].text
            try:
                values = parse_activations(text, len(tokens))
            except ValueError as exc:
                problems.append(f"{exc} (output began {text[:80]!r})")
                # Show the model its answer and what was wrong, so a retry is not the same
                # request again (a deterministic backend would only repeat itself).
                retry = (
                    f"That answer could not be used: {exc}. Reply with only the JSON object "
                    f'{{"activations": [...]}} holding exactly {len(tokens)} integers from 0 to 10.'
                )
                messages = [
                    *messages,
                    Message(role="assistant", content=text),
                    Message(role="user", content=retry),
                ]
                continue
            return SequenceSimulation(tokens=tuple(tokens), expected_activations=tuple(values))
        raise SimulationError(
            f"{self.llm.name} gave no usable JSON simulation in {self.retries + 1} attempts: "
            + "; ".join(problems)
        )
