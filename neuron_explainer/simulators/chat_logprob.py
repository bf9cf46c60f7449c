"""A simulator that reads the probability of every activation digit from chat logprobs.

The model is shown the explanation and the excerpt's tokens, one escaped token per line, and
answers with one line per token: the token echoed exactly as shown, a tab, and an integer from
0 to 10. The request asks for ``logprobs`` with ``top_logprobs``; at the token where each
line's number starts, the alternatives that stand for a number (``"7"``, ``" 7"``, ``"\\t7"``,
``"10"``) give a distribution over 0..10, renormalised over the values present, whose mean is
the token's expected activation. Echoing the tokens costs completion tokens but lets every
number be checked against the token it belongs to.

Alignment: the answer must hold exactly one ``token<TAB>number`` line per token, in order, and
each echoed token must equal the escaped token (surrounding whitespace ignored; a token holding
an unprintable character, such as a byte fragment shown as ``\\ufffd``, matches any echo).
Lines without a tab (``<start>``, code fences) are ignored. An answer that fails is shown back to
the model with the problem, up to ``retries`` times; then `SimulationError` is raised. A
failure is never scored as zeros.

Digits: tokenizers may write 10 as ``"1"`` + ``"0"``; then the mass of ``"1"`` is split between
10 and 1 by the probability of ``"0"`` at the next position. Where the model wrote a single
digit, an alternative ``"1"`` counts as 1. The sampled token is always among the candidates, so a
number position with no digit means the text and the logprobs disagree: the answer is treated
as unusable (retried), never filled in.

Batching: with ``excerpts_per_request > 1`` several excerpts of one explanation go in one
request, each under an ``Excerpt i`` header which the answer repeats (a line without a tab
that starts with "Excerpt <i>"; without any header, lines are split by count); an excerpt whose
part of the answer fails is simulated again alone (with its own retries), the others are kept.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from neuron_explainer.errors import InvalidInputError, SimulationError
from neuron_explainer.interfaces import (
    CallEstimate,
    Simulator,
    estimate_prompt_tokens,
    estimate_tokens,
)
from neuron_explainer.llm.base import LLM, Choice, Message, TokenLogprob, required_llm
from neuron_explainer.llm.prompts import escape_token
from neuron_explainer.results import Explanation, SequenceSimulation
from neuron_explainer.simulators._common import (
    ESCAPES,
    TASK,
    digit_probabilities,
    request_groups,
    simulate_in_batches,
    simulation_from_distributions,
)

__all__ = ["ChatLogprobSimulator"]

PROMPT_VERSION = "chat-logprob-simulator/1"
SYSTEM = (
    f"{TASK}\n\nAnswer with one line per token, in order: the token exactly as shown, a tab, "
    f"then the number. {ESCAPES} Write nothing else.\n\nFor example, for a neuron that finds "
    'animals and the tokens "The", " cat", " sat", answer:\nThe\t0\n cat\t10\n sat\t0'
)
_NUMBER = re.compile(r"\s*(10|[0-9])\s*")
_HEADER = re.compile(r"\W*excerpt\s*#?\s*(\d+)\b.*", re.IGNORECASE)


@dataclass(frozen=True)
class _Line:
    """One ``token<TAB>number`` line of an answer; offsets are into the text parsed."""

    echo: str
    number: int | None
    start: int  # where the number starts
    end: int
    problem: str | None = None


@dataclass
class _Parsed:
    sections: dict[int, list[_Line]]
    flat: list[_Line]
    headers: bool


def _parse(text: str, n_excerpts: int) -> _Parsed:
    parsed = _Parsed(sections={}, flat=[], headers=False)
    current = 1 if n_excerpts == 1 else 0  # 0: before any header (ignored)
    offset = 0
    for raw in text.split("\n"):
        if "\t" in raw:
            echo, _, number = raw.rpartition("\t")
            base = offset + len(echo) + 1
            match = _NUMBER.fullmatch(number)
            line = (
                _Line(echo, int(match[1]), base + match.start(1), base + match.end(1))
                if match
                else _Line(echo, None, base, base, f"{raw!r} does not end in a number 0-10")
            )
            parsed.flat.append(line)
            if current:
                parsed.sections.setdefault(current, []).append(line)
        elif n_excerpts > 1 and (header := _HEADER.fullmatch(raw.strip())):
            parsed.headers = True
            current = int(header[1]) if 1 <= int(header[1]) <= n_excerpts else 0
        offset += len(raw) + 1
    return parsed


def _excerpt_lines(parsed: _Parsed, lengths: Sequence[int]) -> list[list[_Line] | str]:
    """Each excerpt's lines, by header, or (no headers at all) by count."""
    if len(lengths) == 1 or parsed.headers:
        return [parsed.sections.get(i + 1, []) for i in range(len(lengths))]
    if len(parsed.flat) != sum(lengths):
        problem = (
            f"the answer has no 'Excerpt i' headers and {len(parsed.flat)} token lines for "
            f"{sum(lengths)} tokens"
        )
        return [problem] * len(lengths)
    bounds = [0]
    for n in lengths:
        bounds.append(bounds[-1] + n)
    return [parsed.flat[a:b] for a, b in itertools.pairwise(bounds)]


def _wildcard(shown: str) -> bool:
    return any(c == "\ufffd" or unicodedata.category(c)[0] == "C" for c in shown)


def _alignment_problem(lines: list[_Line], tokens: Sequence[str]) -> str | None:
    if len(lines) != len(tokens):
        return f"{len(lines)} token lines for {len(tokens)} tokens"
    for i, (line, token) in enumerate(zip(lines, tokens, strict=True), start=1):
        if line.problem:
            return f"line {i}: {line.problem}"
        shown = escape_token(token).strip()
        if line.echo.strip() != shown and not _wildcard(shown):
            return f"line {i} shows the token {line.echo.strip()!r} but token {i} is {shown!r}"
    return None


def _alternatives(position: TokenLogprob) -> list[tuple[str, float]]:
    found = {alt.token: alt.logprob for alt in position.top_logprobs}
    found.setdefault(position.token, position.logprob)
    return list(found.items())


class _Reader:
    """Locates each number of an answer among the generated tokens."""

    def __init__(self, positions: Sequence[TokenLogprob]) -> None:
        self.positions = positions
        self.text = "".join(p.token for p in positions)
        self.starts = []
        offset = 0
        for p in positions:
            self.starts.append(offset)
            offset += len(p.token)

    def distribution(self, line: _Line) -> dict[int, float] | str:
        j = bisect.bisect_right(self.starts, line.start) - 1
        if j < 0 or line.number is None:  # pragma: no cover - parsed from this text
            return "the number is outside the generated tokens"
        token = self.positions[j]
        before = self.text[self.starts[j] : line.start]
        if before.strip():
            return (
                f"the number {line.number} shares the token {token.token!r} with the text before it"
            )
        found = digit_probabilities(_alternatives(token))
        if line.number == 10 and self.starts[j] + len(token.token) < line.end:
            # 10 written as "1" then "0": split the mass of "1" by P("0") at the next position.
            if j + 1 >= len(self.positions):  # pragma: no cover - the text says "10"
                return "the number 10 ends the answer early"
            following = _alternatives(self.positions[j + 1])
            zero = sum(math.exp(lp) for t, lp in following if t.strip() == "0")
            digit = sum(math.exp(lp) for t, lp in following if t.strip()[:1].isdigit())
            one = found.pop(1, 0.0)
            found[10] = found.get(10, 0.0) + one * zero
            if one * (1.0 - digit) > 0:
                found[1] = one * (1.0 - digit)
        if line.number not in found:
            return (
                f"the logprobs at the number {line.number} ({token.token!r}) do not include it "
                f"(alternatives: {[t for t, _ in _alternatives(token)]})"
            )
        return found


class ChatLogprobSimulator(Simulator):
    """Predicts each token's activation as the expected value of the digits the LLM might
    write for it, read from chat logprobs (see the module docstring for the format, the
    alignment rule and batching).

    Args:
        llm: the model to ask; it must offer ``chat_logprobs``.
        retries: extra attempts after an unusable answer.
        top_logprobs: alternatives asked for at each generated token (1-20).
        excerpts_per_request: excerpts of one explanation sent in one request.

    Raises:
        InvalidInputError: no ``llm`` given (name the simulator as ``provider:model``), or an
            option out of range.
        CapabilityError: the LLM does not offer ``chat_logprobs``.
    """

    name = "llm-chat-logprob"
    version = "1"
    prompt_version = PROMPT_VERSION
    recorded_settings = ("llm", "retries", "top_logprobs", "excerpts_per_request")

    def __init__(
        self,
        llm: LLM | None = None,
        *,
        retries: int = 2,
        top_logprobs: int = 20,
        excerpts_per_request: int = 1,
    ) -> None:
        llm = required_llm(
            llm, by="the 'llm-chat-logprob' simulator", kind="simulator", offering="chat logprobs"
        )
        if retries < 0 or not 1 <= top_logprobs <= 20 or excerpts_per_request < 1:
            raise InvalidInputError(
                "need retries >= 0, 1 <= top_logprobs <= 20 and excerpts_per_request >= 1; got "
                f"{retries}, {top_logprobs} and {excerpts_per_request}"
            )
        llm.require(
            "chat_logprobs",
            by="the 'llm-chat-logprob' simulator (it reads the probability of each activation "
            "digit from the logprobs of the answer)",
        )
        self.llm, self.retries, self.top_logprobs = llm, retries, top_logprobs
        self.excerpts_per_request = excerpts_per_request

    def messages(
        self, explanation: Explanation, excerpts: Sequence[Sequence[str]]
    ) -> list[Message]:
        """The chat messages that ask for ``excerpts`` (one, or several with headers)."""

        def listing(tokens: Sequence[str]) -> str:
            return "<start>\n" + "".join(f"{escape_token(t)}\n" for t in tokens) + "<end>"

        head = f"Explanation: the neuron finds {explanation.text}\n\n"
        if len(excerpts) == 1:
            (tokens,) = excerpts
            user = (
                f"{head}Tokens ({len(tokens)}), one per line:\n{listing(tokens)}\n\n"
                f"Answer with {len(tokens)} lines: each token as shown, a tab, its activation."
            )
        else:
            parts = [
                f"Excerpt {i} ({len(tokens)} tokens), one per line:\n{listing(tokens)}"
                for i, tokens in enumerate(excerpts, start=1)
            ]
            user = (
                head
                + "\n\n".join(parts)
                + "\n\nAnswer for each excerpt in order: a line 'Excerpt i', then one line per "
                "token: the token as shown, a tab, its activation."
            )
        return [Message(role="system", content=SYSTEM), Message(role="user", content=user)]

    def estimate(self, explanation: Explanation, excerpts: Sequence[Sequence[str]]) -> CallEstimate:
        """The requests and tokens of simulating ``excerpts``, sending nothing: one request
        per ``excerpts_per_request`` of them (empty ones need none), the prompt `messages`
        counted by `estimate_prompt_tokens`, the completion as, per token, the echoed token, a
        tab, the number and a newline (plus an ``Excerpt i`` header per excerpt when batched).
        Retries are not counted. Not priced (``cost_usd`` is ``None``)."""
        requests = prompt = completion = 0
        for group in request_groups(excerpts, self.excerpts_per_request):
            requests += 1
            prompt += estimate_prompt_tokens(m.content for m in self.messages(explanation, group))
            echoed = sum(estimate_tokens(escape_token(t)) + 3 for e in group for t in e)
            completion += echoed + (2 * len(group) if len(group) > 1 else 0)
        return CallEstimate.of(
            self, requests=requests, prompt_tokens=prompt, completion_tokens=completion
        )

    async def _ask(self, messages: list[Message], excerpts: Sequence[Sequence[str]]) -> Choice:
        limit = sum(2 * sum(len(escape_token(t)) + 4 for t in e) + 16 for e in excerpts)
        response = await self.llm.acomplete(
            messages,
            temperature=0.0,
            logprobs=True,
            top_logprobs=self.top_logprobs,
            max_tokens=max(64, limit),
        )
        return response.choices[0]

    def read(
        self, choice: Choice, excerpts: Sequence[Sequence[str]]
    ) -> list[SequenceSimulation | str]:
        """Each excerpt's simulation from ``choice``, or the problem that makes it unusable.

        Raises:
            SimulationError: the answer carries no logprobs (the backend does not deliver what
                ``chat_logprobs`` promises).
        """
        if not choice.logprobs:
            raise SimulationError(
                f"{self.llm.name} returned no logprobs although it offers 'chat_logprobs'; "
                "check that the server returns logprobs for chat completions"
            )
        reader = _Reader(choice.logprobs)
        lengths = [len(e) for e in excerpts]
        shown = _excerpt_lines(_parse(choice.text, len(excerpts)), lengths)
        located = (
            shown
            if reader.text == choice.text
            else _excerpt_lines(_parse(reader.text, len(excerpts)), lengths)
        )
        outcomes: list[SequenceSimulation | str] = []
        for tokens, lines, positions in zip(excerpts, shown, located, strict=True):
            if isinstance(lines, str) or isinstance(positions, str):
                outcomes.append(lines if isinstance(lines, str) else str(positions))
                continue
            problem = _alignment_problem(lines, tokens)
            if problem is None and [ln.number for ln in lines] != [p.number for p in positions]:
                problem = "the logprob tokens do not spell the answer's numbers"
            distributions = []
            for i, line in enumerate(positions, start=1):
                if problem is not None:
                    break
                found = reader.distribution(line)
                if isinstance(found, str):
                    problem = f"line {i}: {found}"
                else:
                    distributions.append(found)
            outcomes.append(
                problem
                if problem is not None
                else simulation_from_distributions(tokens, distributions)
            )
        return outcomes

    async def asimulate(
        self, explanation: Explanation, tokens: Sequence[str]
    ) -> SequenceSimulation:
        """Predict every token's activation (expected value over 0-10) with its distribution.

        Raises:
            SimulationError: every attempt gave an unusable answer, or the backend returned no
                logprobs.
        """
        if not tokens:
            return SequenceSimulation(tokens=(), expected_activations=())
        messages = self.messages(explanation, [tokens])
        problems: list[str] = []
        for _ in range(self.retries + 1):
            choice = await self._ask(messages, [tokens])
            (outcome,) = self.read(choice, [tokens])
            if isinstance(outcome, SequenceSimulation):
                return outcome
            problems.append(outcome)
            retry = (
                f"That answer could not be used: {outcome}. Answer again with exactly "
                f"{len(tokens)} lines, one per token in order: the token exactly as shown, a "
                "tab, and an integer from 0 to 10."
            )
            messages = [
                *messages,
                Message(role="assistant", content=choice.text),
                Message(role="user", content=retry),
            ]
        raise SimulationError(
            f"{self.llm.name} gave no usable logprob simulation in {self.retries + 1} attempts: "
            + "; ".join(problems)
        )

    async def asimulate_many(
        self, explanation: Explanation, sequences: Sequence[Sequence[str]]
    ) -> list[SequenceSimulation]:
        """Simulate several excerpts, ``excerpts_per_request`` per request (concurrently);
        results are in the order of ``sequences``."""

        async def batch(excerpts: list[Sequence[str]]) -> list[SequenceSimulation | str]:
            choice = await self._ask(self.messages(explanation, excerpts), excerpts)
            return self.read(choice, excerpts)

        async def single(tokens: Sequence[str]) -> SequenceSimulation:
            return await self.asimulate(explanation, tokens)

        return await simulate_in_batches(sequences, self.excerpts_per_request, batch, single)
