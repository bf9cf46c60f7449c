"""Pieces shared by the LLM-backed simulators: the task preamble, the alignment rule, reading a
distribution over activation digits from top logprobs, and batching excerpts into requests."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence

from neuron_explainer._aio import gather_or_cancel
from neuron_explainer.llm.prompts import digit_value as digit_value
from neuron_explainer.results import SequenceSimulation

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


def request_groups(excerpts: Sequence[Sequence[str]], size: int) -> Iterator[list[Sequence[str]]]:
    """The excerpts one request of an estimate holds: ``size`` at a time in order, empty
    excerpts left out (they need no request), groups left empty skipped."""
    for start in range(0, len(excerpts), size):
        group = [e for e in excerpts[start : start + size] if e]
        if group:
            yield group


def check_count(n_values: int, n_tokens: int) -> None:
    """The alignment rule every simulator shares: exactly one value per token.

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


async def simulate_in_batches(
    sequences: Sequence[Sequence[str]],
    size: int,
    batch: Callable[[list[Sequence[str]]], Awaitable[list[SequenceSimulation | str]]],
    single: Callable[[Sequence[str]], Awaitable[SequenceSimulation]],
) -> list[SequenceSimulation]:
    """Simulate ``sequences`` ``size`` at a time with ``batch`` (which returns, per excerpt, a
    simulation or the problem with it), concurrently; every excerpt a batch could not simulate
    is retried alone with ``single``. Empty excerpts and batches of one go to ``single``.
    Results are in the order of ``sequences``."""
    nonempty = [i for i, s in enumerate(sequences) if s]
    groups = [nonempty[i : i + size] for i in range(0, len(nonempty), size)]

    async def run(group: list[int]) -> list[SequenceSimulation]:
        excerpts = [sequences[i] for i in group]
        if len(excerpts) == 1:
            return [await single(excerpts[0])]
        outcomes = await batch(excerpts)

        async def settle(
            outcome: SequenceSimulation | str, excerpt: Sequence[str]
        ) -> SequenceSimulation:
            return outcome if isinstance(outcome, SequenceSimulation) else await single(excerpt)

        return await gather_or_cancel(*map(settle, outcomes, excerpts))

    results: dict[int, SequenceSimulation] = {}
    for group, simulated in zip(
        groups, await gather_or_cancel(*(run(g) for g in groups)), strict=True
    ):
        results.update(zip(group, simulated, strict=True))
    empty = [i for i, s in enumerate(sequences) if not s]
    for i, simulation in zip(
        empty, await gather_or_cancel(*(single(sequences[i]) for i in empty)), strict=True
    ):
        results[i] = simulation
    return [results[i] for i in range(len(sequences))]
