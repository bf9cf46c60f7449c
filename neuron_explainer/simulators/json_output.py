"""A simulator that asks an LLM for the activations as JSON; it works with or without logprobs.

The model is shown the explanation and the excerpt's tokens, numbered, and answers with a JSON
object that has one property per token, named by its number and text, whose value is the
activation 0-10: ``{"1 The": 0, "2 cat": 10, ...}`` (`neuron_explainer.simulators._keyed`).
With a backend that offers ``json_schema`` the request's ``response_format`` fixes every name in
order, so the model writes only the values and reads each token just before its value.

Answers: ``answer="all"`` asks for every token's value as above; ``answer="firing"`` asks
only for the tokens the neuron activates on, named by their text (``{"cat": 8}``, ``{}`` when
none; every token left out is 0 by the question asked, and a name that is not one of the
tokens makes the answer unusable: `neuron_explainer.simulators._firing`). The default
(``None``) is ``"all"`` when the digits' logprobs are read and ``"firing"`` when they are not:
greedy integers from a small model asked for every token come back all zeros on many
sentences that fire, because 0 is each token's likeliest value even when the model gives a
firing token real weight.

Values: where the LLM offers ``chat_logprobs`` (``logprobs=None``, the default, or ``True``),
each value is the expected value over the digits' top logprobs at the number written (as the
chat-logprob simulator reads them), so a token the model is unsure about is not flattened to
0; an answer that comes back without logprobs is read from its integers. Without logprobs
(``logprobs=False`` or a backend without them) the integers written are the prediction.

Alignment is by number: each value belongs to the token whose number starts its property name
(the text after it is not checked; the first value for a number counts; other numbers are
ignored; a JSON list of exactly one value per token, as ``{"activations": [...]}``, is also
accepted). A token left without a value makes the answer unusable: it is shown back to the
model with the problem, up to ``retries`` times, then `SimulationError` is raised. A failure is
never scored as zeros.

With ``excerpts_per_request > 1`` several excerpts go in one request and the answer holds one
object per excerpt (``{"excerpt_1": {...}, "excerpt_2": {...}}``); an excerpt whose part is
unusable is simulated again alone, with its own retries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from neuron_explainer.errors import BadRequestError, InvalidInputError
from neuron_explainer.interfaces import (
    CallEstimate,
    estimate_prompt_tokens,
    estimate_tokens,
)
from neuron_explainer.llm.base import LLM, Choice, Message, required_llm
from neuron_explainer.llm.prompts import extract_json_object, reworded, unit_noun
from neuron_explainer.results import Explanation, SequenceSimulation
from neuron_explainer.simulators import _firing, _keyed
from neuron_explainer.simulators._answering import AnsweringSimulator, blame_truncation
from neuron_explainer.simulators._common import (
    DigitReader,
    Problem,
    check_count,
    context_error,
    request_groups,
    simulation_from_distributions,
)

__all__ = ["JSONSimulator"]

PROMPT_VERSION = "json-simulator/2"
SYSTEM = _keyed.SYSTEM
_NAME = "llm-json"


def parse_activations(text: str, n: int, key: str = "activations") -> list[float]:
    """The ``key`` list of the JSON object in ``text``, checked to hold ``n`` numbers in 0..10
    (the answer format of version 1; `JSONSimulator` reads it too).

    Raises:
        ValueError: saying what is wrong with the output.
    """
    data = extract_json_object(text)
    values = data.get(key) if isinstance(data, dict) else None
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


class JSONSimulator(AnsweringSimulator):
    """Asks an LLM for one 0-10 activation per token as a JSON object, validated and aligned
    by the tokens' numbers (see the module docstring).

    Uses the backend's JSON-schema output when it offers ``json_schema``, and the digits'
    logprobs when it offers ``chat_logprobs`` (unless ``logprobs=False``).

    Args:
        llm: the model to ask.
        retries: extra attempts after an unusable answer (each with the problem shown).
        excerpts_per_request: excerpts of one explanation sent in one request.
        logprobs: read expected values from the digits' logprobs: ``None`` (default) when the
            LLM offers ``chat_logprobs`` and ``answer`` is not ``"firing"``, ``True`` (it
            must), ``False`` never.
        answer: ``"all"`` (every token's value), ``"firing"`` (only the tokens that fire; read
            from the integers written) or ``None`` (default: ``"all"`` when logprobs are read,
            else ``"firing"``).

    Raises:
        InvalidInputError: no ``llm`` given (name the simulator as ``provider:model``), an
            option out of range, or ``answer="firing"`` with ``logprobs=True``.
        CapabilityError: the LLM does not offer ``chat`` (or ``chat_logprobs`` with
            ``logprobs=True``).
    """

    name = _NAME
    version = "3"
    prompt_version = PROMPT_VERSION
    recorded_settings = ("llm", "retries", "excerpts_per_request", "logprobs", "answer")

    def __init__(
        self,
        llm: LLM | None = None,
        *,
        retries: int = 2,
        excerpts_per_request: int = 1,
        logprobs: bool | None = None,
        answer: Literal["all", "firing"] | None = None,
    ) -> None:
        llm = required_llm(llm, by="the 'llm-json' simulator", kind="simulator")
        if retries < 0 or excerpts_per_request < 1:
            raise InvalidInputError(
                f"need retries >= 0 and excerpts_per_request >= 1, got {retries} and "
                f"{excerpts_per_request}"
            )
        if answer not in (None, "all", "firing"):
            raise InvalidInputError(f"answer must be 'all' or 'firing', got {answer!r}")
        if answer == "firing" and logprobs:
            raise InvalidInputError(
                "answer='firing' reads the integers written; pass logprobs=False (or None), "
                "or answer='all' to read the digits' logprobs"
            )
        llm.require("chat", by="the 'llm-json' simulator")
        if logprobs:
            llm.require("chat_logprobs", by="the 'llm-json' simulator with logprobs=True")
        self.llm, self.retries, self.excerpts_per_request = llm, retries, excerpts_per_request
        if logprobs is None:
            logprobs = answer != "firing" and "chat_logprobs" in llm.capabilities
        self.logprobs: bool = logprobs
        self.answer: Literal["all", "firing"] = answer or ("all" if logprobs else "firing")

    def messages(self, explanation: Explanation, tokens: Sequence[str]) -> list[Message]:
        """The chat messages sent to simulate ``tokens``."""
        return self.batch_messages(explanation, [tokens])

    def batch_messages(
        self, explanation: Explanation, excerpts: Sequence[Sequence[str]]
    ) -> list[Message]:
        """The chat messages that ask for ``excerpts`` (several in one request, or one); they
        call the unit being explained by its kind (`neuron_explainer.llm.prompts.unit_noun`)."""
        noun = unit_noun()
        if self.answer == "firing":
            system, user = _firing.SYSTEM, _firing.user_message(explanation.text, excerpts, noun)
        else:
            system, user = SYSTEM, _keyed.user_message(explanation.text, excerpts, noun)
        return [
            Message(role="system", content=reworded(system, noun)),
            Message(role="user", content=user),
        ]

    @staticmethod
    def _completion_tokens(excerpts: Sequence[Sequence[str]]) -> int:
        """Per token its property name, the value and punctuation; braces per excerpt."""
        per = sum(
            estimate_tokens(f'"{_keyed.key(i, t)}": 10,') + 1
            for e in excerpts
            for i, t in enumerate(e, start=1)
        )
        return per + 2 * len(excerpts) + (4 * len(excerpts) if len(excerpts) > 1 else 0)

    def estimate(self, explanation: Explanation, excerpts: Sequence[Sequence[str]]) -> CallEstimate:
        """The requests and tokens of simulating ``excerpts``, sending nothing: one request
        per ``excerpts_per_request`` of them (empty ones need none), the prompt
        (`batch_messages`) counted by `estimate_prompt_tokens`, the completion as, per token,
        ``"3 cat": 10,`` and a space, plus braces (and an ``"excerpt_i"`` name when batched)
        per excerpt (for ``answer="firing"`` an upper bound: every token named). Retries are
        not counted. Not priced (``cost_usd`` is ``None``)."""
        requests = prompt = completion = 0
        for group in request_groups(excerpts, self.excerpts_per_request):
            requests += 1
            messages = self.batch_messages(explanation, group)
            prompt += estimate_prompt_tokens(m.content for m in messages)
            completion += self._completion_tokens(group)
        return CallEstimate.of(
            self, requests=requests, prompt_tokens=prompt, completion_tokens=completion
        )

    async def _ask(self, messages: list[Message], excerpts: Sequence[Sequence[str]]) -> Choice:
        structured = "json_schema" in self.llm.capabilities
        try:
            response = await self.llm.acomplete(
                messages,
                temperature=0.0,
                max_tokens=2 * self._completion_tokens(excerpts) + 32,
                response_format=None if not structured else self._schema(excerpts),
                **({"logprobs": True, "top_logprobs": 20} if self.logprobs else {}),
            )
        except BadRequestError as exc:
            raise context_error(_NAME, self.llm, exc) or exc from exc
        return response.choices[0]

    def _schema(self, excerpts: Sequence[Sequence[str]]) -> dict[str, object]:
        return (_firing.schema if self.answer == "firing" else _keyed.schema)(excerpts)

    def _outcomes(
        self, choice: Choice, excerpts: Sequence[Sequence[str]]
    ) -> list[SequenceSimulation | Problem]:
        if not choice.text.strip() and not choice.logprobs:
            return [Problem("the answer was empty", "empty")] * len(excerpts)
        lengths = [len(e) for e in excerpts]
        outcomes: list[SequenceSimulation | Problem] = []
        if self.logprobs and choice.logprobs:
            reader = DigitReader(choice.logprobs)
            for tokens, found in zip(excerpts, _keyed.locate(reader.text, lengths), strict=True):
                try:
                    if isinstance(found, Problem):
                        raise found
                    distributions = [reader.distribution(o, v) for o, v in found]
                except Problem as problem:
                    outcomes.append(problem)
                    continue
                outcomes.append(simulation_from_distributions(tokens, distributions))
        else:
            parsed = (
                _firing.parse(choice.text, excerpts)
                if self.answer == "firing"
                else _keyed.parse_values(choice.text, lengths)
            )
            for tokens, values in zip(excerpts, parsed, strict=True):
                outcomes.append(
                    values
                    if isinstance(values, Problem)
                    else SequenceSimulation(
                        tokens=tuple(tokens), expected_activations=tuple(values)
                    )
                )
        return blame_truncation(choice, outcomes)

    def _retry(self, problem: Problem, tokens: Sequence[str]) -> str:
        if self.answer == "firing":
            return _firing.retry_message(problem, unit_noun())
        return _keyed.retry_message(problem, len(tokens))

    def request_messages(
        self, explanation: Explanation, excerpts: Sequence[Sequence[str]]
    ) -> list[Message]:
        """The chat messages that ask for ``excerpts`` (`batch_messages`)."""
        return self.batch_messages(explanation, excerpts)

    async def asimulate(
        self, explanation: Explanation, tokens: Sequence[str]
    ) -> SequenceSimulation:
        """Predict every token's activation on the 0-10 scale (an expected value with its
        distribution where logprobs are read).

        Raises:
            SimulationError: every attempt gave an unusable answer (its reason class is the
                last problem's: ``"misaligned"``, ``"unparseable"``, ``"empty"``,
                ``"truncated"``).
            BadRequestError: the server refused the request (a prompt too long for its context
                is named as such, with what to change).
        """
        return await self._simulate_one(explanation, tokens)
