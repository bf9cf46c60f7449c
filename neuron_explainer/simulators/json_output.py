"""A simulator that asks an LLM for a JSON list of activations, for backends without logprobs.

Alignment is the rule every simulator shares: exactly one number per token (the JSON carries no
tokens to compare). With ``excerpts_per_request > 1`` several excerpts go in one request and the
answer holds one list per excerpt (``{"excerpt_1": [...], "excerpt_2": [...]}``); an excerpt
whose list is unusable is simulated again alone, with its own retries.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from neuron_explainer.errors import InvalidInputError, SimulationError
from neuron_explainer.interfaces import CallEstimate, Simulator, estimate_prompt_tokens
from neuron_explainer.llm.base import LLM, Message, required_llm
from neuron_explainer.llm.prompts import extract_json_object
from neuron_explainer.results import Explanation, SequenceSimulation
from neuron_explainer.simulators._common import (
    TASK,
    check_count,
    request_groups,
    simulate_in_batches,
)

__all__ = ["JSONSimulator"]

PROMPT_VERSION = "json-simulator/1"
SYSTEM = TASK


def _array(n: int) -> dict[str, object]:
    return {
        "type": "array",
        "items": {"type": "integer", "minimum": 0, "maximum": 10},
        "minItems": n,
        "maxItems": n,
    }


def _schema(*lengths: int) -> dict[str, object]:
    """One ``activations`` list, or one ``excerpt_i`` list per excerpt."""
    keys = (
        ["activations"] if len(lengths) == 1 else [f"excerpt_{i + 1}" for i in range(len(lengths))]
    )
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "activations",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {k: _array(n) for k, n in zip(keys, lengths, strict=True)},
                "required": keys,
                "additionalProperties": False,
            },
        },
    }


def parse_activations(text: str, n: int, key: str = "activations") -> list[float]:
    """The ``key`` list of the JSON object in ``text``, checked to hold ``n`` numbers in 0..10.

    Raises:
        ValueError: saying what is wrong with the output.
    """
    data = extract_json_object(text)
    return _check_values(data.get(key) if isinstance(data, dict) else None, n, key)


def _check_values(values: object, n: int, key: str) -> list[float]:
    if not isinstance(values, list):
        raise ValueError(f'the JSON object has no "{key}" list')
    check_count(len(values), n)
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
    version = "1"
    prompt_version = PROMPT_VERSION
    recorded_settings = ("llm", "retries", "excerpts_per_request")

    def __init__(
        self, llm: LLM | None = None, *, retries: int = 2, excerpts_per_request: int = 1
    ) -> None:
        llm = required_llm(llm, by="the 'llm-json' simulator", kind="simulator")
        if retries < 0 or excerpts_per_request < 1:
            raise InvalidInputError(
                f"need retries >= 0 and excerpts_per_request >= 1, got {retries} and "
                f"{excerpts_per_request}"
            )
        llm.require("chat", by="the 'llm-json' simulator")
        self.llm, self.retries, self.excerpts_per_request = llm, retries, excerpts_per_request

    def messages(self, explanation: Explanation, tokens: Sequence[str]) -> list[Message]:
        """The chat messages sent to simulate ``tokens``."""
        user = (
            f"Explanation: the neuron finds {explanation.text}\n\n"
            f"Tokens ({len(tokens)}), as a JSON list:\n{json.dumps(list(tokens))}\n\n"
            f'Answer with a JSON object {{"activations": [...]}} holding exactly {len(tokens)} '
            "integers, one per token, in order."
        )
        return [Message(role="system", content=SYSTEM), Message(role="user", content=user)]

    def batch_messages(
        self, explanation: Explanation, excerpts: Sequence[Sequence[str]]
    ) -> list[Message]:
        """The chat messages that ask for several excerpts in one request."""
        parts = [
            f"Excerpt {i} ({len(tokens)} tokens), as a JSON list:\n{json.dumps(list(tokens))}"
            for i, tokens in enumerate(excerpts, start=1)
        ]
        keys = ", ".join(f'"excerpt_{i}": [...]' for i in range(1, len(excerpts) + 1))
        user = (
            f"Explanation: the neuron finds {explanation.text}\n\n"
            + "\n\n".join(parts)
            + f"\n\nAnswer with a JSON object {{{keys}}} holding, for each excerpt, exactly one "
            "integer per token, in order."
        )
        return [Message(role="system", content=SYSTEM), Message(role="user", content=user)]

    def estimate(self, explanation: Explanation, excerpts: Sequence[Sequence[str]]) -> CallEstimate:
        """The requests and tokens of simulating ``excerpts``, sending nothing: one request
        per ``excerpts_per_request`` of them (empty ones need none), the prompt (`messages`,
        or `batch_messages` for several) counted by `estimate_prompt_tokens`, the completion
        as two tokens per number and six more per excerpt. Retries are not counted. Not
        priced (``cost_usd`` is ``None``)."""
        requests = prompt = completion = 0
        for group in request_groups(excerpts, self.excerpts_per_request):
            messages = (
                self.messages(explanation, group[0])
                if len(group) == 1
                else self.batch_messages(explanation, group)
            )
            requests += 1
            prompt += estimate_prompt_tokens(m.content for m in messages)
            completion += sum(2 * len(e) + 6 for e in group)
        return CallEstimate.of(
            self, requests=requests, prompt_tokens=prompt, completion_tokens=completion
        )

    async def asimulate_many(
        self, explanation: Explanation, sequences: Sequence[Sequence[str]]
    ) -> list[SequenceSimulation]:
        """Simulate several excerpts, ``excerpts_per_request`` per request (concurrently);
        results are in the order of ``sequences``."""
        structured = "json_schema" in self.llm.capabilities

        async def batch(excerpts: list[Sequence[str]]) -> list[SequenceSimulation | str]:
            lengths = [len(e) for e in excerpts]
            response = await self.llm.acomplete(
                self.batch_messages(explanation, excerpts),
                temperature=0.0,
                response_format=_schema(*lengths) if structured else None,
            )
            text = response.choices[0].text
            try:
                data = extract_json_object(text)
            except ValueError as exc:
                return [str(exc)] * len(excerpts)
            outcomes: list[SequenceSimulation | str] = []
            for i, tokens in enumerate(excerpts, start=1):
                try:
                    values = _check_values(
                        data.get(f"excerpt_{i}") if isinstance(data, dict) else None,
                        len(tokens),
                        f"excerpt_{i}",
                    )
                except ValueError as exc:
                    outcomes.append(str(exc))
                    continue
                outcomes.append(
                    SequenceSimulation(tokens=tuple(tokens), expected_activations=tuple(values))
                )
            return outcomes

        async def single(tokens: Sequence[str]) -> SequenceSimulation:
            return await self.asimulate(explanation, tokens)

        return await simulate_in_batches(sequences, self.excerpts_per_request, batch, single)

    async def asimulate(
        self, explanation: Explanation, tokens: Sequence[str]
    ) -> SequenceSimulation:
        """Predict every token's activation on the 0-10 scale.

        Raises:
            SimulationError: every attempt gave an unusable answer.
        """
        if not tokens:
            return SequenceSimulation(tokens=(), expected_activations=())
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
