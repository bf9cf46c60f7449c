"""Pieces shared by the LLM-backed simulators: the task preamble and the numbered token listing,
reading a distribution over activation digits from logprobs, the errors a simulator raises
(with their reason classes), and simulating excerpts in batches with per-excerpt failures."""

from __future__ import annotations

import bisect
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence

from neuron_explainer._aio import gather_or_cancel
from neuron_explainer.errors import BadRequestError, SimulationError
from neuron_explainer.interfaces import SEQUENCE_FAILURES, failure_of, record_retry
from neuron_explainer.llm.base import LLM, TokenLogprob
from neuron_explainer.llm.prompts import digit_value as digit_value
from neuron_explainer.llm.prompts import escape_token
from neuron_explainer.results import SequenceSimulation, SimulationFailure

TASK = (
    "We're studying neurons in a neural network. Each neuron looks for one particular thing in "
    "a short document. Given an explanation of what a neuron looks for, predict how strongly "
    "it activates on each token of a document, as an integer from 0 (not at all) to 10 "
    "(the strongest match). Most tokens are usually 0."
)
ESCAPES = (
    "Tabs, newlines and backslashes inside tokens are written as \\t, \\n and \\\\; copy them "
    "as written."
)
EXAMPLE_TOKENS = (
    *("Yesterday", " my", " neighbour", "'s", " old", " dog", " chased", " a", " cat", " up"),
    *(" the", " tree", "."),
)
"""The few-shot excerpt of the simulators' system prompts, for a neuron that finds animals.
Thirteen tokens firing at the 6th and 9th: a seven-token example firing at the 2nd and 6th
taught a 0.5B model to copy those positions into every answer, and an example told in words
(no numbered answer) made it answer 10 everywhere."""
EXAMPLE_LEVELS = (0, 0, 0, 0, 0, 10, 0, 0, 10, 0, 0, 0, 0)
EXAMPLE_INTRO = "For example, for a neuron that finds animals and the tokens\n"


class Problem(Exception):
    """Why one answer is unusable for one excerpt, with its reason class (a label of
    `neuron_explainer.interfaces.FAILURE_REASONS`). Raised and caught inside the simulators;
    the last problem of an excerpt becomes its `SimulationError`."""

    def __init__(self, message: str, reason: str = "misaligned") -> None:
        super().__init__(message)
        self.reason = reason


def numbered(tokens: Sequence[str]) -> str:
    """One ``number<TAB>escaped token`` line per token, numbered from 1."""
    return "\n".join(f"{i}\t{escape_token(t)}" for i, t in enumerate(tokens, start=1))


def request_groups(excerpts: Sequence[Sequence[str]], size: int) -> Iterator[list[Sequence[str]]]:
    """The excerpts one request of an estimate holds: ``size`` at a time in order, empty
    excerpts left out (they need no request), groups left empty skipped."""
    for start in range(0, len(excerpts), size):
        group = [e for e in excerpts[start : start + size] if e]
        if group:
            yield group


def check_count(n_values: int, n_tokens: int) -> None:
    """The alignment rule for an answer that carries values without their tokens' numbers:
    exactly one value per token.

    Raises:
        ValueError: saying how many values came for how many tokens.
    """
    if n_values != n_tokens:
        raise ValueError(f"{n_values} activations for {n_tokens} tokens")


def digit_probabilities(alternatives: Iterable[tuple[str, float]]) -> dict[int, float]:
    """Probability of each activation value among ``(token, logprob)`` alternatives (tokens
    standing for the same value, e.g. ``"7"`` and ``" 7"``, add up; others are ignored)."""
    found: dict[int, float] = {}
    for token, logprob in alternatives:
        value = digit_value(token)
        if value is not None:
            found[value] = found.get(value, 0.0) + math.exp(logprob)
    return found


def expectation(
    probabilities: dict[int, float],
) -> tuple[float, tuple[float, ...], tuple[float, ...]]:
    """Renormalise ``probabilities`` over the values present; returns the expected value and
    the distribution (values ascending, probabilities summing to 1)."""
    total = sum(probabilities.values())
    values = tuple(sorted(probabilities))
    probs = tuple(probabilities[v] / total for v in values)
    return sum(v * p for v, p in zip(values, probs, strict=True)), tuple(map(float, values)), probs


def simulation_from_distributions(
    tokens: Sequence[str], distributions: Sequence[dict[int, float]]
) -> SequenceSimulation:
    """A `SequenceSimulation` holding the expected value and distribution of every token."""
    stats = [expectation(d) for d in distributions]
    return SequenceSimulation(
        tokens=tuple(tokens),
        expected_activations=tuple(s[0] for s in stats),
        distribution_values=tuple(s[1] for s in stats),
        distribution_probabilities=tuple(s[2] for s in stats),
    )


def _alternatives(position: TokenLogprob) -> list[tuple[str, float]]:
    found = {alt.token: alt.logprob for alt in position.top_logprobs}
    found.setdefault(position.token, position.logprob)
    return list(found.items())


class DigitReader:
    """Reads the distribution over 0..10 at a number written in an answer, from the
    generated tokens' logprobs. ``text`` is the generated tokens joined: offsets are into it.

    The token where the number starts gives the distribution (its alternatives and the sampled
    token itself, renormalised later). 10 written as ``"1"`` then ``"0"``: the mass of ``"1"``
    is split between 10 and 1 by the probability of ``"0"`` at the next position.
    """

    def __init__(self, positions: Sequence[TokenLogprob]) -> None:
        self.positions = positions
        self.text = "".join(p.token for p in positions)
        self.starts: list[int] = []
        offset = 0
        for p in positions:
            self.starts.append(offset)
            offset += len(p.token)

    def distribution(self, start: int, number: int) -> dict[int, float]:
        """The probability of each value at the number ``number`` written at ``start``.

        Raises:
            Problem: the number shares its token with text before it, or its token's
                alternatives do not include the value written (the text and the logprobs
                disagree).
        """
        j = bisect.bisect_right(self.starts, start) - 1
        token = self.positions[j]
        if self.text[self.starts[j] : start].strip():
            raise Problem(
                f"the number {number} shares the token {token.token!r} with the text before it",
                "unparseable",
            )
        found = digit_probabilities(_alternatives(token))
        end = start + len(str(number))
        if number == 10 and self.starts[j] + len(token.token) < end and j + 1 < len(self.positions):
            following = _alternatives(self.positions[j + 1])
            zero = sum(math.exp(lp) for t, lp in following if t.strip() == "0")
            digit = sum(math.exp(lp) for t, lp in following if t.strip()[:1].isdigit())
            one = found.pop(1, 0.0)
            found[10] = found.get(10, 0.0) + one * zero
            if one * (1.0 - digit) > 0:
                found[1] = one * (1.0 - digit)
        if number not in found:
            raise Problem(
                f"the logprobs at the number {number} ({token.token!r}) do not include it "
                f"(alternatives: {[t for t, _ in _alternatives(token)]})",
                "unparseable",
            )
        return found


def no_logprobs(simulator: str, llm: LLM) -> SimulationError:
    """The error for an answer without logprobs from an LLM that declared them."""
    return SimulationError(
        f"the {simulator!r} simulator got an answer without logprobs from {llm.name}, which "
        "declares 'chat_logprobs': make the server return logprobs for chat completions "
        "(logprobs/top_logprobs), or declare the LLM without 'chat_logprobs' and use "
        "'llm-json'",
        reason="no_logprobs",
    )


def failed(simulator: str, llm: LLM, attempts: int, problems: Sequence[Problem]) -> SimulationError:
    """The `SimulationError` of an excerpt no attempt could simulate: its reason class is the
    last problem's; an answer that was empty every time names what to change."""
    last = problems[-1]
    hint = ""
    if all(p.reason == "empty" for p in problems):
        hint = (
            f"; {llm.name} answered nothing: check that the model has a chat template and the "
            "server generates (a context large enough for the prompt and the answer)"
        )
    elif last.reason == "truncated":
        hint = (
            f"; the answer was cut off: give {llm.name} a larger context (llama.cpp: -c) or "
            "simulate shorter excerpts (fewer per request)"
        )
    return SimulationError(
        f"the {simulator!r} simulator got no usable answer from {llm.name} in {attempts} "
        f"attempt{'s' if attempts > 1 else ''}: " + "; ".join(map(str, problems)) + hint,
        reason=last.reason,
    )


def context_error(simulator: str, llm: LLM, exc: BadRequestError) -> BadRequestError | None:
    """A clearer `BadRequestError` when ``exc`` says the prompt did not fit the model's context
    (naming the simulator, the server and what to change), else ``None``."""
    text = str(exc).lower()
    if "context" not in text and "too long" not in text and "maximum" not in text:
        return None
    return BadRequestError(
        f"the {simulator!r} simulator's prompt does not fit the context of {llm.name}: give the "
        "server a larger context (llama.cpp: -c / n_ctx; vLLM: --max-model-len), or simulate "
        f"shorter excerpts or fewer per request (excerpts_per_request). The server said: {exc}",
        status_code=exc.status_code,
        attempts=exc.attempts,
    )


Outcome = SequenceSimulation | SimulationFailure


async def settle(run: Awaitable[SequenceSimulation]) -> Outcome:
    """``run``'s simulation, or the failure it raised (one of `SEQUENCE_FAILURES`)."""
    try:
        return await run
    except SEQUENCE_FAILURES as exc:
        return failure_of(exc)


async def simulate_in_batches(
    sequences: Sequence[Sequence[str]],
    size: int,
    batch: Callable[[list[Sequence[str]]], Awaitable[list[SequenceSimulation | str]]],
    single: Callable[[Sequence[str]], Awaitable[SequenceSimulation]],
    *,
    keep_failures: bool = True,
) -> list[Outcome]:
    """Simulate ``sequences`` ``size`` at a time with ``batch`` (which returns, per excerpt, a
    simulation or the problem with it), concurrently; every excerpt a batch could not simulate
    is retried alone with ``single`` (counted as a ``"batch_failed"`` retry). Empty excerpts
    and batches of one go to ``single``. Results are in the order of ``sequences``: each a
    simulation or, with ``keep_failures``, the `SimulationFailure` of an excerpt that could not
    be simulated.

    Raises:
        Exception: without ``keep_failures``, the first error of any excerpt (the others are
            cancelled); with it, only errors outside `SEQUENCE_FAILURES`.
    """
    nonempty = [i for i, s in enumerate(sequences) if s]
    groups = [nonempty[i : i + size] for i in range(0, len(nonempty), size)]

    async def alone(excerpt: Sequence[str], retried: bool) -> Outcome:
        if retried:
            record_retry("batch_failed")
        return await (settle(single(excerpt)) if keep_failures else single(excerpt))

    async def run(group: list[int]) -> list[Outcome]:
        excerpts = [sequences[i] for i in group]
        if len(excerpts) == 1:
            return [await alone(excerpts[0], False)]
        try:
            outcomes = await batch(excerpts)
        except SEQUENCE_FAILURES:
            outcomes = ["the batch failed"] * len(excerpts)

        async def one(outcome: SequenceSimulation | str, excerpt: Sequence[str]) -> Outcome:
            if isinstance(outcome, SequenceSimulation):
                return outcome
            return await alone(excerpt, True)

        return await gather_or_cancel(*map(one, outcomes, excerpts))

    results: dict[int, Outcome] = {}
    for group, simulated in zip(
        groups, await gather_or_cancel(*(run(g) for g in groups)), strict=True
    ):
        results.update(zip(group, simulated, strict=True))
    empty = [i for i, s in enumerate(sequences) if not s]
    for i, outcome in zip(
        empty, await gather_or_cancel(*(alone(sequences[i], False) for i in empty)), strict=True
    ):
        results[i] = outcome
    return [results[i] for i in range(len(sequences))]
