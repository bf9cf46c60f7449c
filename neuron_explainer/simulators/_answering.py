"""What the chat simulators that read a numbered answer share: the retry loop that shows an
unusable answer back to the model with its problem, and batching several excerpts per request
with a failed excerpt retried alone (`AnsweringSimulator`)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

from neuron_explainer.interfaces import Simulator, record_retry
from neuron_explainer.llm.base import LLM, Choice, Message
from neuron_explainer.results import Explanation, SequenceSimulation, SimulationFailure
from neuron_explainer.simulators._common import Outcome, Problem, failed, simulate_in_batches

__all__ = ["AnsweringSimulator", "blame_truncation"]


def blame_truncation(
    choice: Choice, outcomes: list[SequenceSimulation | Problem]
) -> list[SequenceSimulation | Problem]:
    """``outcomes`` with every problem replaced by "cut off" (reason ``"truncated"``) when the
    answer stopped at its length limit: the cut, not what it left missing, is the cause."""
    if choice.finish_reason != "length":
        return outcomes
    cut = Problem("the answer was cut off at its length limit", "truncated")
    return [cut if isinstance(o, Problem) else o for o in outcomes]


class AnsweringSimulator(Simulator):
    """A simulator that asks a chat LLM for a numbered answer, retries an unusable one with a
    changed prompt, and sends ``excerpts_per_request`` excerpts per request.

    Subclasses set ``llm``, ``retries`` and ``excerpts_per_request`` and implement
    `request_messages`, `_ask`, `_outcomes` and `_retry`.
    """

    llm: LLM
    retries: int
    excerpts_per_request: int

    @abstractmethod
    def request_messages(
        self, explanation: Explanation, excerpts: Sequence[Sequence[str]]
    ) -> list[Message]:
        """The chat messages that ask for ``excerpts`` (one, or several)."""

    @abstractmethod
    async def _ask(self, messages: list[Message], excerpts: Sequence[Sequence[str]]) -> Choice:
        """Send ``messages`` and return the answer's first choice."""

    @abstractmethod
    def _outcomes(
        self, choice: Choice, excerpts: Sequence[Sequence[str]]
    ) -> list[SequenceSimulation | Problem]:
        """Each excerpt's simulation from ``choice``, or the problem that makes it unusable."""

    @abstractmethod
    def _retry(self, problem: Problem, tokens: Sequence[str]) -> str:
        """The user message that asks again after an answer with ``problem``."""

    async def _simulate_one(
        self, explanation: Explanation, tokens: Sequence[str]
    ) -> SequenceSimulation:
        """Ask for ``tokens``; after an unusable answer, show the model its answer and what was
        wrong (so a retry is not the same request again, which a deterministic backend would
        only repeat), up to ``retries`` times.

        Raises:
            SimulationError: every attempt was unusable (the last problem's reason class).
        """
        if not tokens:
            return SequenceSimulation(tokens=(), expected_activations=())
        messages = self.request_messages(explanation, [tokens])
        problems: list[Problem] = []
        for attempt in range(self.retries + 1):
            if attempt:
                record_retry(problems[-1].reason)
            choice = await self._ask(messages, [tokens])
            (outcome,) = self._outcomes(choice, [tokens])
            if isinstance(outcome, SequenceSimulation):
                return outcome
            problems.append(outcome)
            messages = [
                *messages[:2],
                Message(role="assistant", content=choice.text),
                Message(role="user", content=self._retry(outcome, tokens)),
            ]
        raise failed(self.name, self.llm, self.retries + 1, problems)

    async def _each(
        self, explanation: Explanation, sequences: Sequence[Sequence[str]], keep: bool
    ) -> list[Outcome]:
        async def batch(excerpts: list[Sequence[str]]) -> list[SequenceSimulation | str]:
            choice = await self._ask(self.request_messages(explanation, excerpts), excerpts)
            outcomes = self._outcomes(choice, excerpts)
            return [o if isinstance(o, SequenceSimulation) else str(o) for o in outcomes]

        async def single(tokens: Sequence[str]) -> SequenceSimulation:
            return await self.asimulate(explanation, tokens)

        return await simulate_in_batches(
            sequences, self.excerpts_per_request, batch, single, keep_failures=keep
        )

    async def asimulate_many(
        self, explanation: Explanation, sequences: Sequence[Sequence[str]]
    ) -> list[SequenceSimulation]:
        """Simulate several excerpts, ``excerpts_per_request`` per request (concurrently);
        results are in the order of ``sequences``.

        Raises:
            SimulationError: an excerpt could not be simulated (the others are cancelled).
        """
        outcomes = await self._each(explanation, sequences, keep=False)
        return [o for o in outcomes if isinstance(o, SequenceSimulation)]

    async def asimulate_each(
        self, explanation: Explanation, sequences: Sequence[Sequence[str]]
    ) -> list[SequenceSimulation | SimulationFailure]:
        """Simulate each excerpt as `asimulate_many` does, keeping every excerpt's outcome
        apart: its simulation, or the `SimulationFailure` saying why it could not be simulated
        (an excerpt that failed within a batch is retried alone first)."""
        return await self._each(explanation, sequences, keep=True)
