"""A simulator that reads the probability of every activation digit from chat logprobs.

The model is shown the explanation and the excerpt's tokens, numbered (``3<TAB> cat``), and
writes only the activations; the token text is the client's. Two answer formats:

* ``"json"`` (needs ``json_schema``): a JSON object with one property per token, named by its
  number and text (``{"1 The": 0, "2 cat": 10, ...}``), fixed in order by the request's
  ``response_format``. The model's grammar writes every name, so it reads each token just
  before writing its value, and the answer cannot drift (`neuron_explainer.simulators._keyed`).
* ``"lines"``: one ``number<TAB>activation`` line per token (``2\\t10``), for backends without
  structured output.

``format="auto"`` (the default) takes ``"json"`` when the LLM offers ``json_schema``, else
``"lines"``. The request asks for ``logprobs`` with ``top_logprobs``; at the token where each
value starts, the alternatives that stand for a number (``"7"``, ``" 7"``, ``"\\t7"``, ``"10"``)
give a distribution over 0..10, renormalised over the values present, whose mean is the token's
expected activation (10 written as ``"1"`` + ``"0"``: the mass of ``"1"`` is split by the
probability of ``"0"`` next).

Alignment is by number, never by position: each value belongs to the token whose number starts
its line (or its property name); the text after the number is not checked; the first value for
a number counts; numbers outside the excerpt and lines of any other shape are ignored. A token
left without a value makes the answer unusable for its excerpt: the answer is shown back to the
model with what was wrong (which tokens lack a value), up to ``retries`` times; then
`SimulationError` (with its reason class) is raised. A failure is never scored as zeros.

Batching: with ``excerpts_per_request > 1`` several excerpts of one explanation go in one
request. In ``"lines"`` each excerpt's lines follow an ``Excerpt i`` line (without any header, a
number that does not increase starts the next excerpt); in ``"json"`` each excerpt has its own
object under ``"excerpt_i"``. An excerpt whose part of the answer fails is simulated again alone
(with its own retries); the others are kept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from neuron_explainer.errors import BadRequestError, InvalidInputError
from neuron_explainer.interfaces import (
    CallEstimate,
    estimate_prompt_tokens,
    estimate_tokens,
)
from neuron_explainer.llm.base import LLM, Choice, Message, required_llm
from neuron_explainer.llm.prompts import reworded, unit_noun
from neuron_explainer.results import Explanation, SequenceSimulation
from neuron_explainer.simulators import _keyed
from neuron_explainer.simulators._answering import AnsweringSimulator, blame_truncation
from neuron_explainer.simulators._common import (
    EXAMPLE_INTRO,
    EXAMPLE_LEVELS,
    EXAMPLE_TOKENS,
    TASK,
    DigitReader,
    Problem,
    context_error,
    no_logprobs,
    numbered,
    request_groups,
    simulation_from_distributions,
)

__all__ = ["FORMATS", "ChatLogprobSimulator"]

PROMPT_VERSION = "chat-logprob-simulator/2"
FORMATS = ("auto", "json", "lines")
"""The answer formats `ChatLogprobSimulator` can ask for (see the module docstring)."""
Format = Literal["auto", "json", "lines"]

SYSTEM = (
    f"{TASK}\n\nAnswer with one line per token, in order: the token's number, a tab, then its "
    f"activation. Write nothing else.\n\n{EXAMPLE_INTRO}{numbered(EXAMPLE_TOKENS)}\nanswer:\n"
    + "\n".join(f"{i}\t{v}" for i, v in enumerate(EXAMPLE_LEVELS, start=1))
)
"""The system message of the ``"lines"`` format (``"json"`` uses `_keyed.SYSTEM`)."""
_LINE = re.compile(r"[^\w\t]*(\d+)[.:)]?[ ]*\t(?:[^\t]*\t)?[ ]*(10|[0-9])[ ]*\r?")
_HEADER = re.compile(r"\W*excerpt\s*#?\s*(\d+)\b.*", re.IGNORECASE)
_NAME = "llm-chat-logprob"


def _sections(text: str, n_excerpts: int) -> list[list[tuple[int, int, int]]]:
    """Each excerpt's ``(number, offset, value)`` lines in ``text``: by ``Excerpt i`` headers,
    or without any, a new excerpt wherever the number does not increase."""
    sections: list[list[tuple[int, int, int]]] = [[] for _ in range(n_excerpts)]
    headed: list[list[tuple[int, int, int]]] = [[] for _ in range(n_excerpts)]
    current, headers, unheaded, previous = 0 if n_excerpts > 1 else 1, False, 0, 0
    offset = 0
    for raw in text.split("\n"):
        line = _LINE.fullmatch(raw)
        if line:
            entry = (int(line[1]), offset + line.start(2), int(line[2]))
            if current:
                headed[current - 1].append(entry)
            if entry[0] <= previous:
                unheaded += 1
            if unheaded < n_excerpts:
                sections[unheaded].append(entry)
            previous = entry[0]
        elif n_excerpts > 1 and (header := _HEADER.fullmatch(raw.strip())):
            headers = True
            number = int(header[1])
            current = number if 1 <= number <= n_excerpts else 0
        offset += len(raw) + 1
    return headed if headers or n_excerpts == 1 else sections


def _by_number(lines: list[tuple[int, int, int]], n: int) -> list[tuple[int, int]]:
    """The ``(offset, value)`` of tokens 1..n (the first line for each number).

    Raises:
        Problem: a token has no line.
    """
    found: dict[int, tuple[int, int]] = {}
    for number, offset, value in lines:
        if 1 <= number <= n:
            found.setdefault(number, (offset, value))
    missing = [i for i in range(1, n + 1) if i not in found]
    if missing:
        shown = ", ".join(map(str, missing[:8])) + (", ..." if len(missing) > 8 else "")
        plural = "s" if len(missing) > 1 else ""
        raise Problem(f"no line for token{plural} {shown} of {n}")
    return [found[i] for i in range(1, n + 1)]


class ChatLogprobSimulator(AnsweringSimulator):
    """Predicts each token's activation as the expected value of the digits the LLM might
    write for it, read from chat logprobs (see the module docstring for the formats, the
    alignment rule and batching).

    Args:
        llm: the model to ask; it must offer ``chat_logprobs`` (and ``json_schema`` for
            ``format="json"``).
        retries: extra attempts after an unusable answer (each with the problem shown).
        top_logprobs: alternatives asked for at each generated token (1-20).
        excerpts_per_request: excerpts of one explanation sent in one request.
        format: ``"auto"`` (``"json"`` when the LLM offers ``json_schema``, else
            ``"lines"``), ``"json"`` or ``"lines"``.

    Raises:
        InvalidInputError: no ``llm`` given (name the simulator as ``provider:model``), or an
            option out of range.
        CapabilityError: the LLM does not offer ``chat_logprobs`` (or ``json_schema`` for
            ``format="json"``).
    """

    name = _NAME
    version = "2"
    prompt_version = PROMPT_VERSION
    recorded_settings = ("llm", "retries", "top_logprobs", "excerpts_per_request", "format")

    def __init__(
        self,
        llm: LLM | None = None,
        *,
        retries: int = 2,
        top_logprobs: int = 20,
        excerpts_per_request: int = 1,
        format: Format = "auto",
    ) -> None:
        llm = required_llm(
            llm, by="the 'llm-chat-logprob' simulator", kind="simulator", offering="chat logprobs"
        )
        if retries < 0 or not 1 <= top_logprobs <= 20 or excerpts_per_request < 1:
            raise InvalidInputError(
                "need retries >= 0, 1 <= top_logprobs <= 20 and excerpts_per_request >= 1; got "
                f"{retries}, {top_logprobs} and {excerpts_per_request}"
            )
        if format not in FORMATS:
            raise InvalidInputError(f"format must be one of {FORMATS}, got {format!r}")
        llm.require(
            "chat_logprobs",
            by="the 'llm-chat-logprob' simulator (it reads the probability of each activation "
            "digit from the logprobs of the answer)",
        )
        if format == "auto":
            format = "json" if "json_schema" in llm.capabilities else "lines"
        elif format == "json":
            llm.require("json_schema", by="the 'llm-chat-logprob' simulator with format='json'")
        self.llm, self.retries, self.top_logprobs = llm, retries, top_logprobs
        self.excerpts_per_request = excerpts_per_request
        self.format: Literal["json", "lines"] = format

    def messages(
        self, explanation: Explanation, excerpts: Sequence[Sequence[str]]
    ) -> list[Message]:
        """The chat messages that ask for ``excerpts`` (one, or several) in this format; they
        call the unit being explained by its kind (`neuron_explainer.llm.prompts.unit_noun`)."""
        noun = unit_noun()
        if self.format == "json":
            user = _keyed.user_message(explanation.text, excerpts, noun)
            return [
                Message(role="system", content=reworded(_keyed.SYSTEM, noun)),
                Message(role="user", content=user),
            ]
        head = f"Explanation: the {noun} finds {explanation.text}\n\n"
        if len(excerpts) == 1:
            (tokens,) = excerpts
            user = (
                f"{head}Tokens ({len(tokens)}), numbered:\n{numbered(tokens)}\n\nAnswer with "
                f"{len(tokens)} lines, one per token: its number, a tab, and how strongly the "
                f"{noun} that finds {explanation.text} activates on it."
            )
        else:
            parts = [
                f"Excerpt {i} ({len(tokens)} tokens), numbered:\n{numbered(tokens)}"
                for i, tokens in enumerate(excerpts, start=1)
            ]
            user = (
                head
                + "\n\n".join(parts)
                + "\n\nAnswer for each excerpt in order: a line 'Excerpt i', then one line per "
                f"token: its number, a tab, and how strongly the {noun} that finds "
                f"{explanation.text} activates on it."
            )
        return [
            Message(role="system", content=reworded(SYSTEM, noun)),
            Message(role="user", content=user),
        ]

    def _completion_tokens(self, excerpts: Sequence[Sequence[str]]) -> int:
        """The estimated completion: per token its number and value (and, in ``"json"``, its
        property name and punctuation), plus a header or braces per excerpt."""
        if self.format == "json":
            per = sum(
                estimate_tokens(f'"{_keyed.key(i, t)}": 10,') + 1
                for e in excerpts
                for i, t in enumerate(e, start=1)
            )
            return per + 2 * len(excerpts) + (4 * len(excerpts) if len(excerpts) > 1 else 0)
        lines = sum(estimate_tokens(f"{i}\t10") + 1 for e in excerpts for i in range(1, len(e) + 1))
        return lines + (3 * len(excerpts) if len(excerpts) > 1 else 0)

    def estimate(self, explanation: Explanation, excerpts: Sequence[Sequence[str]]) -> CallEstimate:
        """The requests and tokens of simulating ``excerpts``, sending nothing: one request
        per ``excerpts_per_request`` of them (empty ones need none), the prompt `messages`
        counted by `estimate_prompt_tokens`, the completion as, per token, its number and value
        (``"lines"``: ``3<TAB>10`` and a newline; ``"json"``: ``"3 cat": 10,`` and a space),
        plus a header (or an object's braces) per excerpt. Retries are not counted. Not priced
        (``cost_usd`` is ``None``)."""
        requests = prompt = completion = 0
        for group in request_groups(excerpts, self.excerpts_per_request):
            requests += 1
            prompt += estimate_prompt_tokens(m.content for m in self.messages(explanation, group))
            completion += self._completion_tokens(group)
        return CallEstimate.of(
            self, requests=requests, prompt_tokens=prompt, completion_tokens=completion
        )

    async def _ask(self, messages: list[Message], excerpts: Sequence[Sequence[str]]) -> Choice:
        limit = 2 * self._completion_tokens(excerpts) + 32
        try:
            response = await self.llm.acomplete(
                messages,
                temperature=0.0,
                logprobs=True,
                top_logprobs=self.top_logprobs,
                max_tokens=limit,
                response_format=_keyed.schema(excerpts) if self.format == "json" else None,
            )
        except BadRequestError as exc:
            raise context_error(_NAME, self.llm, exc) or exc from exc
        return response.choices[0]

    def _read_one(
        self, reader: DigitReader, tokens: Sequence[str], found: list[tuple[int, int]] | Problem
    ) -> SequenceSimulation | Problem:
        if isinstance(found, Problem):
            return found
        try:
            distributions = [reader.distribution(offset, value) for offset, value in found]
        except Problem as problem:
            return problem
        return simulation_from_distributions(tokens, distributions)

    def _outcomes(
        self, choice: Choice, excerpts: Sequence[Sequence[str]]
    ) -> list[SequenceSimulation | Problem]:
        if not choice.logprobs:
            if not choice.text.strip():
                return [Problem("the answer was empty", "empty")] * len(excerpts)
            raise no_logprobs(_NAME, self.llm)
        reader = DigitReader(choice.logprobs)
        lengths = [len(e) for e in excerpts]
        located: list[list[tuple[int, int]] | Problem]
        if self.format == "json":
            located = _keyed.locate(reader.text, lengths)
        else:
            located = []
            for n, lines in zip(lengths, _sections(reader.text, len(excerpts)), strict=True):
                try:
                    located.append(_by_number(lines, n))
                except Problem as problem:
                    located.append(problem)
        outcomes = [self._read_one(reader, t, f) for t, f in zip(excerpts, located, strict=True)]
        return blame_truncation(choice, outcomes)

    def read(
        self, choice: Choice, excerpts: Sequence[Sequence[str]]
    ) -> list[SequenceSimulation | str]:
        """Each excerpt's simulation from ``choice``, or the problem that makes it unusable.

        Raises:
            SimulationError: the answer carries no logprobs (the backend does not deliver what
                ``chat_logprobs`` promises); reason ``"no_logprobs"``.
        """
        return [
            o if isinstance(o, SequenceSimulation) else str(o)
            for o in self._outcomes(choice, excerpts)
        ]

    def _retry(self, problem: Problem, tokens: Sequence[str]) -> str:
        n = len(tokens)
        if self.format == "json":
            return _keyed.retry_message(problem, n)
        return (
            f"That answer could not be used: {problem}. Answer again with exactly {n} lines, "
            f"one per token from 1 to {n}: the token's number, a tab, and its activation (an "
            "integer from 0 to 10). Write nothing else."
        )

    def request_messages(
        self, explanation: Explanation, excerpts: Sequence[Sequence[str]]
    ) -> list[Message]:
        """The chat messages that ask for ``excerpts`` (`messages`)."""
        return self.messages(explanation, excerpts)

    async def asimulate(
        self, explanation: Explanation, tokens: Sequence[str]
    ) -> SequenceSimulation:
        """Predict every token's activation (expected value over 0-10) with its distribution.

        Raises:
            SimulationError: every attempt gave an unusable answer (its reason class is the
                last problem's: ``"misaligned"``, ``"unparseable"``, ``"empty"``,
                ``"truncated"``), or the backend returned no logprobs (``"no_logprobs"``).
            BadRequestError: the server refused the request (a prompt too long for its context
                is named as such, with what to change).
        """
        return await self._simulate_one(explanation, tokens)
