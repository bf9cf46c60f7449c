"""An LLM stand-in that knows the answer: a responder for `OpenAITestServer` that plays both
roles of the pipeline for a neuron whose rule it is given.

It reads the prompts the built-in components send and answers them the way a perfect model
would: the explainer's prompt gets the explanation; the simulators' prompts (their numbered
token listings) get the rule's level for every token, as the numbered JSON object
(``{"1 The": 0, ...}``) when the system prompt asks for JSON, else as ``number<TAB>level``
lines, with top logprobs around the level when the request asks for logprobs. The JSON
simulator's firing prompt (tokens listed as ``Tokens: The | cat``, no logprobs) gets the tokens
whose level is above 0, by their text (``{"cat": 10}``). Anything else gets ``None`` (the
server's default answer). Use it to test a whole pipeline, or a batch run, over real HTTP::

    with OpenAITestServer(responder=OracleResponder()) as server:
        os.environ["OPENAI_BASE_URL"] = server.base_url
        result = explain_neuron(number_neuron_record(), explainer="openai:m", simulator="openai:m")
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence

from neuron_explainer.llm.prompts import unescape_token
from neuron_explainer.testing.server import ReceivedRequest, Reply

__all__ = ["OracleResponder", "fires_on_numbers"]

_LISTING = re.compile(r"(?:Tokens \((\d+)\)|Excerpt (\d+) \((\d+) tokens\)), numbered:\n")
_FIRING = re.compile(r"^(?:Tokens|Excerpt (\d+)): (.*)$", re.MULTILINE)
_EXPLAINING = re.compile(r"Explanation of [\w -]+ behavior: the main thing this")
"""The explainer's answer line, for a neuron or any other unit kind."""


def fires_on_numbers(token: str) -> int:
    """10 on a token that is a number (``" 42"``), else 0."""
    return 10 if token.strip().isdigit() else 0


class OracleResponder:
    """Answers the built-in explainer and simulators' prompts for the neuron ``rule`` describes.

    Args:
        rule: the true level (0-10) of a token, given the token's text.
        explanation: what the explainer answers (after its "the main thing this neuron does
            is find" prefix).
        test_sentences: what the explainer answers when asked for sentences to test its
            explanation (one per line).
        confidence: the probability the simulator's answer puts on the rule's level at each
            token (the rest goes to the neighbouring level).
    """

    def __init__(
        self,
        rule: Callable[[str], int] = fires_on_numbers,
        *,
        explanation: str = "numbers",
        confidence: float = 0.9,
        test_sentences: Sequence[str] = ("There were 42 of them in 1999.", "Nothing to count."),
    ) -> None:
        if not 0.0 < confidence <= 1.0:
            raise ValueError(f"confidence must be in (0, 1], got {confidence}")
        self.rule = rule
        self.explanation = explanation
        self.confidence = confidence
        self.test_sentences = tuple(test_sentences)

    def __call__(self, request: ReceivedRequest) -> Reply | str | None:
        body = request.body if isinstance(request.body, dict) else {}
        messages = body.get("messages") or []
        if request.endpoint != "chat/completions" or not messages:
            return None
        prompt = str(messages[-1].get("content", ""))
        if _EXPLAINING.search(prompt):
            return Reply(content=f" {self.explanation}.")
        if "new sentences to test that explanation" in prompt:
            return Reply(content="\n".join(self.test_sentences))
        listings = _listings(prompt)
        if not listings:
            return self._firing(prompt)
        as_json = "JSON" in str(messages[0].get("content", ""))
        reply = self._answer(listings, as_json=as_json)
        return reply if body.get("logprobs") else "".join(reply.tokens or ())

    def _firing(self, prompt: str) -> str | None:
        """The firing answer (the tokens whose level is above 0, by their text) to the JSON
        simulator's firing prompt, or ``None`` for another prompt."""
        found = _FIRING.findall(prompt)
        if not found:
            return None
        kept = {
            header: {
                w: level for w in words.split(" | ") if (level := self.rule(unescape_token(w)))
            }
            for header, words in found
        }
        if len(kept) == 1 and "" in kept:
            return json.dumps(kept[""])
        return json.dumps({f"excerpt_{h}": o for h, o in kept.items()})

    def _answer(self, listings: list[tuple[int | None, list[str]]], *, as_json: bool) -> Reply:
        """The answer, token by token: every token certain except each value, which has the
        rule's level at ``confidence`` and a neighbouring level with the rest."""
        tokens: list[str] = []
        tops: list[dict[str, float]] = []

        def certain(text: str) -> None:
            tokens.append(text)
            tops.append({text: 0.0})

        def value(shown: str) -> None:
            level = self.rule(unescape_token(shown))
            other = level - 1 if level > 0 else 1
            alternatives = {str(level): math.log(self.confidence)}
            if self.confidence < 1.0:
                alternatives[str(other)] = math.log(1.0 - self.confidence)
            tokens.append(str(level))
            tops.append(alternatives)

        batched = len(listings) > 1
        if as_json and batched:
            certain("{")
        for j, (header, shown) in enumerate(listings):
            if as_json:
                certain(f'"excerpt_{header}": {{' if batched else "{")
                for i, text in enumerate(shown, start=1):
                    certain(json.dumps(f"{i} {text.strip() or text}") + ": ")
                    value(text)
                    certain(", " if i < len(shown) else "}")
                certain(", " if batched and j + 1 < len(listings) else "")
            else:
                if batched:
                    certain(f"Excerpt {header}\n")
                for i, text in enumerate(shown, start=1):
                    certain(f"{i}\t")
                    value(text)
                    certain("\n")
        if as_json and batched:
            certain("}")
        kept = [(t, top) for t, top in zip(tokens, tops, strict=True) if t]
        return Reply(
            content="".join(t for t, _ in kept),
            tokens=[t for t, _ in kept],
            logprobs=[top[t] for t, top in kept],
            top_logprobs=[top for _, top in kept],
        )


def _listings(prompt: str) -> list[tuple[int | None, list[str]]]:
    """Each excerpt the prompt lists: its header number (``None`` alone) and its escaped
    tokens (read by count, so no token can end a listing early)."""
    found = []
    for match in _LISTING.finditer(prompt):
        count = int(match[1] or match[3])
        lines = prompt[match.end() :].split("\n")[:count]
        found.append((int(match[2]) if match[2] else None, [ln.partition("\t")[2] for ln in lines]))
    return found
