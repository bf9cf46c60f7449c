"""Prototype chat-logprob prompts for issue 16's prompt work (dev half only), used through the
puzzle benchmark as ``prototypes.chat_logprob_prompts:ContrastingPair`` with
``PYTHONPATH=benchmarks``.

* `ContrastingPair`: the system prompt's one example (a neuron that finds animals) is followed
  by the same tokens under a second explanation (a neuron that finds plants) that
  fires elsewhere, and one sentence saying why: the same tokens get different activations
  under different explanations. Concepts chosen to overlap no benchmark puzzle (verbs of
  motion, tried first on paper, would overlap the test puzzle forms-of-run).

Only the ``"json"`` format (the one the benchmark's backends use) is changed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from neuron_explainer.llm.base import Message
from neuron_explainer.results import Explanation
from neuron_explainer.simulators import _keyed
from neuron_explainer.simulators._common import (
    EXAMPLE_INTRO,
    EXAMPLE_LEVELS,
    EXAMPLE_TOKENS,
    TASK,
    numbered,
)
from neuron_explainer.simulators.chat_logprob import ChatLogprobSimulator

PLANT_LEVELS = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 0)
"""The example tokens under "plants": only " tree" fires."""


def _answer(levels: Sequence[int]) -> str:
    return json.dumps(
        {
            _keyed.key(i, t): v
            for i, (t, v) in enumerate(zip(EXAMPLE_TOKENS, levels, strict=True), start=1)
        }
    )


PAIR_SYSTEM = (
    f"{TASK}\n\nAnswer with a JSON object that has one property per token, in order: its name "
    'is the token\'s number and the token (such as "9 cat"), its value the activation. Write '
    f"nothing else.\n\n{EXAMPLE_INTRO}{numbered(EXAMPLE_TOKENS)}\nanswer:\n"
    f"{_answer(EXAMPLE_LEVELS)}\n\nFor a neuron that finds plants, the same tokens get "
    f"a different answer:\n{_answer(PLANT_LEVELS)}\n\nThe explanation decides which tokens "
    "activate, not the words alone: a token that does not match the explanation is 0."
)


class ContrastingPair(ChatLogprobSimulator):
    def __init__(self, llm: Any = None, **kwargs: Any) -> None:
        super().__init__(llm, **kwargs)

    def messages(
        self, explanation: Explanation, excerpts: Sequence[Sequence[str]]
    ) -> list[Message]:
        out = super().messages(explanation, excerpts)
        if self.format == "json":
            out[0] = Message(role="system", content=PAIR_SYSTEM)
        return out


EVERY = 10
"""`Restated` writes the explanation again before every this many tokens."""


def _restated_schema(explanation: str, tokens: Sequence[str]) -> dict[str, object]:
    names: list[str] = []
    properties: dict[str, object] = {}
    for i, token in enumerate(tokens, start=1):
        if (i - 1) % EVERY == 0:
            name = "the neuron finds" if i == 1 else f"the neuron finds (tokens {i}+)"
            names.append(name)
            properties[name] = {"const": explanation}
        name = _keyed.key(i, token)
        names.append(name)
        properties[name] = {"type": "integer", "minimum": 0, "maximum": 10}
    return {
        "type": "object",
        "properties": properties,
        "required": names,
        "additionalProperties": False,
    }


def _restated_answer(explanation: str, tokens: Sequence[str], levels: Sequence[int]) -> str:
    out: dict[str, object] = {}
    for i, (t, v) in enumerate(zip(tokens, levels, strict=True), start=1):
        if (i - 1) % EVERY == 0:
            out["the neuron finds" if i == 1 else f"the neuron finds (tokens {i}+)"] = explanation
        out[_keyed.key(i, t)] = v
    return json.dumps(out)


RESTATED_SYSTEM = (
    f'{TASK}\n\nAnswer with a JSON object. It restates the explanation ("the neuron finds") '
    f"before every {EVERY} tokens; each token has one property, in order: its name is the "
    'token\'s number and the token (such as "9 cat"), its value the activation, which depends '
    "on whether the token matches the explanation. Write nothing else.\n\n"
    f"{EXAMPLE_INTRO}{numbered(EXAMPLE_TOKENS)}\nanswer:\n"
    f"{_restated_answer('animals', EXAMPLE_TOKENS, EXAMPLE_LEVELS)}"
)

_HEAD = "Explanation: the neuron finds "


class Restated(ChatLogprobSimulator):
    """The answer restates the explanation (a constant property the grammar writes) before
    token 1 and every `EVERY` tokens after, so it is always near the token being valued."""

    def __init__(self, llm: Any = None, **kwargs: Any) -> None:
        super().__init__(llm, **kwargs)
        if self.format != "json" or self.excerpts_per_request != 1:
            raise ValueError("Restated is a prototype of the one-excerpt json format only")

    def messages(
        self, explanation: Explanation, excerpts: Sequence[Sequence[str]]
    ) -> list[Message]:
        out = super().messages(explanation, excerpts)
        out[0] = Message(role="system", content=RESTATED_SYSTEM)
        return out

    async def _ask(self, messages: list[Message], excerpts: Sequence[Sequence[str]]) -> Any:
        user = messages[1].content
        assert user.startswith(_HEAD)
        explanation = user[len(_HEAD) : user.index("\n\n")]
        (tokens,) = excerpts
        limit = 2 * self._completion_tokens(excerpts) + 32 + 40 * (len(tokens) // EVERY + 1)
        response = await self.llm.acomplete(
            messages,
            temperature=0.0,
            logprobs=True,
            top_logprobs=self.top_logprobs,
            max_tokens=limit,
            response_format=_keyed.response_format(
                "activations", [_restated_schema(explanation, tokens)]
            ),
        )
        return response.choices[0]
