"""An LLM stand-in that knows the answer: a responder for `OpenAITestServer` that plays both
roles of the pipeline for a neuron whose rule it is given.

It reads the prompts the built-in components send and answers them the way a perfect model
would: the explainer's prompt gets the explanation; the chat-logprob simulator's prompt gets one
``token<TAB>number`` line per token with top logprobs around the rule's level; the JSON
simulator's prompt gets the JSON list. Anything else gets ``None`` (the server's default
answer). Use it to test a whole pipeline, or a batch run, over real HTTP::

    with OpenAITestServer(responder=OracleResponder()) as server:
        os.environ["OPENAI_BASE_URL"] = server.base_url
        result = explain_neuron(number_neuron_record(), explainer="openai:m", simulator="openai:m")
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable

from neuron_explainer.llm.prompts import unescape_token
from neuron_explainer.testing.server import ReceivedRequest, Reply

__all__ = ["OracleResponder", "fires_on_numbers"]

_LISTING = re.compile(
    r"(?:Tokens \((\d+)\)|Excerpt (\d+) \((\d+) tokens\)), one per line:\n<start>\n"
)
_JSON_LISTING = re.compile(r"as a JSON list:\n(\[.*\])")


def fires_on_numbers(token: str) -> int:
    """10 on a token that is a number (``" 42"``), else 0."""
    return 10 if token.strip().isdigit() else 0


class OracleResponder:
    """Answers the built-in explainer and simulators' prompts for the neuron ``rule`` describes.

    Args:
        rule: the true level (0-10) of a token, given the token's text.
        explanation: what the explainer answers (after its "the main thing this neuron does
            is find" prefix).
        confidence: the probability the simulator's answer puts on the rule's level at each
            token (the rest goes to the neighbouring level).
    """

    def __init__(
        self,
        rule: Callable[[str], int] = fires_on_numbers,
        *,
        explanation: str = "numbers",
        confidence: float = 0.9,
    ) -> None:
        if not 0.0 < confidence <= 1.0:
            raise ValueError(f"confidence must be in (0, 1], got {confidence}")
        self.rule = rule
        self.explanation = explanation
        self.confidence = confidence

    def __call__(self, request: ReceivedRequest) -> Reply | str | None:
        body = request.body if isinstance(request.body, dict) else {}
        messages = body.get("messages") or []
        if request.endpoint != "chat/completions" or not messages:
            return None
        prompt = str(messages[-1].get("content", ""))
        if "Explanation of neuron behavior" in prompt:
            return Reply(content=f" {self.explanation}.")
        if _LISTING.search(prompt):
            return self._lines(prompt)
        found = _JSON_LISTING.search(prompt)
        if found:
            tokens = json.loads(found[1])
            return json.dumps({"activations": [self.rule(t) for t in tokens]})
        return None

    def _lines(self, prompt: str) -> Reply:
        listings = list(_LISTING.finditer(prompt))
        tokens: list[str] = []
        tops: list[dict[str, float]] = []

        def certain(text: str) -> None:
            tokens.append(text)
            tops.append({text: 0.0})

        for match in listings:
            count = int(match[1] or match[3])
            shown = prompt[match.end() :].split("\n")[:count]
            if match[2]:
                certain(f"Excerpt {match[2]}")
                certain("\n")
            for echo in shown:
                level = self.rule(unescape_token(echo))
                if echo:
                    certain(echo)
                certain("\t")
                other = level - 1 if level > 0 else 1
                alternatives = {str(level): math.log(self.confidence)}
                if self.confidence < 1.0:
                    alternatives[str(other)] = math.log(1.0 - self.confidence)
                tokens.append(str(level))
                tops.append(alternatives)
                certain("\n")
        return Reply(
            content="".join(tokens),
            tokens=tokens,
            logprobs=[top[t] for t, top in zip(tokens, tops, strict=True)],
            top_logprobs=tops,
        )
