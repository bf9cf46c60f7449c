"""A stand-in judge for the classification scorers (detection, fuzzing): answers their
requests by a rule on the words of each excerpt, or by a fixed policy, with logprobs.

Use it as a `ScriptedLLM`'s answer to test code that runs scorers (or, with `OracleJudge.respond`,
as the responder of an `OpenAITestServer`, over real HTTP)::

    judge = ScriptedLLM(default=OracleJudge(fires=lambda word: word.isdigit()))
    score = DetectionScorer(judge).score(explanation, data)

It reads the numbered excerpts of the request (``1. text``), answers every one with a JSON
object ``{"1": 1, "2": 0, ...}`` (or, asked about one ``Text:`` to answer yes or no, "Yes" or
"No") and gives each value top logprobs for "1" and "0" (or "Yes" and "No"), so the
scorer can read the probability of "yes" (``confidence`` for the answer given) when the request
asks for logprobs.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable
from typing import Literal

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.llm.base import ChatRequest, ChatResponse
from neuron_explainer.llm.prompts import unescape_token
from neuron_explainer.testing._replies import ReceivedRequest, Reply
from neuron_explainer.testing._responses import make_response

__all__ = ["OracleJudge", "is_number"]

Policy = Literal["oracle", "yes", "no", "random"]
_ITEM = re.compile(r"^(\d+)\. (.*)$", re.MULTILINE)
_SINGLE = re.compile(r"Text: (.*?)\n\n.*Answer yes or no\.", re.DOTALL)
_MARKED = re.compile(r"<<(.*?)>>")
_WORD = re.compile(r"[\w']+")


def is_number(word: str) -> bool:
    """Whether ``word`` is a number (``"42"``)."""
    return word.isdigit()


class OracleJudge:
    """Answers detection and fuzzing requests.

    Args:
        fires: whether the unit fires on a word (letters, digits and ``'``).
        policy: ``"oracle"``: detection says yes when some word of the excerpt fires;
            fuzzing says yes when the marked words all fire. ``"yes"`` / ``"no"``: always.
            ``"random"``: a fair coin per excerpt (seeded).
        confidence: the probability the logprobs give the answer chosen (in (0.5, 1)).
        seed: seeds the ``"random"`` policy.

    Raises:
        InvalidInputError: an unknown policy or a confidence outside (0.5, 1).
    """

    def __init__(
        self,
        fires: Callable[[str], bool] = is_number,
        *,
        policy: Policy = "oracle",
        confidence: float = 0.9,
        seed: int = 0,
    ) -> None:
        if policy not in ("oracle", "yes", "no", "random"):
            raise InvalidInputError(f"policy is oracle, yes, no or random; got {policy!r}")
        if not 0.5 < confidence < 1:
            raise InvalidInputError(f"confidence must be in (0.5, 1), got {confidence}")
        self.fires, self.policy, self.confidence = fires, policy, confidence
        self._rng = random.Random(seed)
        self.requests: list[ChatRequest] = []

    def _oracle(self, text: str) -> bool:
        marked = _MARKED.findall(text)
        if marked:
            words = [w for span in marked for w in _WORD.findall(span)]
            return bool(words) and all(self.fires(w) for w in words)
        return any(self.fires(w) for w in _WORD.findall(text))

    def answer(self, text: str) -> bool:
        """The answer for one excerpt as the request shows it."""
        if self.policy == "yes":
            return True
        if self.policy == "no":
            return False
        if self.policy == "random":
            return self._rng.random() < 0.5
        return self._oracle(unescape_token(text))

    def _answer_to(self, user: str) -> tuple[list[str], list[dict[str, float]]]:
        """The answer's tokens and each token's logprobs for the request ``user`` message: a
        "Yes" or "No" to a one-excerpt question (``answer="yesno"``), else a JSON object.

        Raises:
            InvalidInputError: the message holds no numbered excerpts and no ``Text:``.
        """
        yes, no = math.log(self.confidence), math.log(1 - self.confidence)
        single = _SINGLE.match(user)
        if single is not None:
            said = self.answer(single.group(1))
            word = "Yes" if said else "No"
            return [word], [{"Yes": yes, "No": no} if said else {"No": yes, "Yes": no}]
        section = user.split("Excerpts:\n", 1)[-1]
        items = _ITEM.findall(section)
        if not items:
            raise InvalidInputError("the request holds no numbered excerpts ('1. text')")
        tokens: list[str] = []
        logprobs: list[dict[str, float]] = []
        for k, (number, text) in enumerate(items):
            head = ("{" if k == 0 else ", ") + json.dumps(number) + ": "
            tokens.append(head)
            logprobs.append({head: 0.0})
            said = self.answer(text)
            tokens.append("1" if said else "0")
            logprobs.append({"1": yes, "0": no} if said else {"0": yes, "1": no})
        tokens.append("}")
        logprobs.append({"}": 0.0})
        return tokens, logprobs

    def __call__(self, request: ChatRequest) -> ChatResponse:
        """The answer to ``request`` (every numbered excerpt of its last user message), as a
        `ScriptedLLM` answer.

        Raises:
            InvalidInputError: the request has no numbered excerpts.
        """
        self.requests.append(request)
        user = next(m.content for m in reversed(request.messages) if m.role == "user")
        tokens, logprobs = self._answer_to(user)
        if not request.logprobs:
            return make_response("".join(tokens))
        return make_response(tokens=tokens, logprobs=logprobs)

    def respond(self, received: ReceivedRequest) -> Reply | str | None:
        """The same answer as a responder of `neuron_explainer.testing.OpenAITestServer`
        (over real HTTP): ``None`` (the server's default) for anything but a chat request
        with numbered excerpts."""
        body = received.body if isinstance(received.body, dict) else {}
        messages = body.get("messages") or []
        if received.endpoint != "chat/completions" or not messages:
            return None
        try:
            tokens, logprobs = self._answer_to(str(messages[-1].get("content", "")))
        except InvalidInputError:
            return None
        if not body.get("logprobs"):
            return "".join(tokens)
        return Reply(content="".join(tokens), tokens=tokens, top_logprobs=logprobs)
