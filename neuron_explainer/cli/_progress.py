"""Progress that follows the work: the ETA column of the bars, and the explaining and
simulating phases of one explained neuron shown as steps of their own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from neuron_explainer._aio import gather_or_cancel
from neuron_explainer.interfaces import Explainer, Simulator

if TYPE_CHECKING:
    from neuron_explainer.cli._support import Steps, Task
    from neuron_explainer.records import ActivationRecord
    from neuron_explainer.results import (
        ComponentInfo,
        Explanation,
        SequenceSimulation,
        SimulationFailure,
    )

T = TypeVar("T")


class Phases:
    """The explaining and the simulating of one `explain_neuron` call as two steps of
    ``steps``: `explainer` and `simulator` wrap the components so that their calls move the
    bars (a step starts at its first call; explaining is shown done when simulating starts).
    Call `finish` when the call returns."""

    def __init__(self, steps: Steps) -> None:
        self._steps = steps
        self._explaining: Task | None = None
        self._simulating: Task | None = None
        self._explained = self._simulated = self._to_simulate = 0

    def explainer(self, inner: Explainer) -> Explainer:
        """``inner``, reporting its explanations to the "explaining" step."""
        return _ShownExplainer(inner, self)

    def simulator(self, inner: Simulator) -> Simulator:
        """``inner``, reporting the excerpts it simulates to the "simulating" step."""
        return _ShownSimulator(inner, self)

    def finish(self) -> None:
        """Show both steps as done (call when the explained neuron is complete)."""
        for task in (self._explaining, self._simulating):
            if task is not None:
                task.finish()

    async def explaining(self, call: Awaitable[T], count: int = 1) -> T:
        """Await ``call`` (``count`` explanations) inside the "explaining" step."""
        if self._explaining is None:
            self._explaining = self._steps.task("explaining (explanations)")
        result = await call
        self._explained += count
        self._explaining.update(self._explained)
        return result

    def simulating(self, excerpts: int) -> Callable[[int], None]:
        """Add ``excerpts`` to the "simulating" step (started, and explaining shown done, on
        the first call); returns the function to call with each one that is done."""
        if self._explaining is not None:
            self._explaining.finish()
        if self._simulating is None:
            self._simulating = self._steps.task("simulating and scoring (excerpts)")
        self._to_simulate += excerpts
        task = self._simulating
        task.update(self._simulated, self._to_simulate)

        def done(n: int) -> None:
            self._simulated += n
            task.update(self._simulated)

        return done


class _ShownExplainer(Explainer):
    """An explainer that runs ``inner`` inside the "explaining" step of its `Phases`; every
    other attribute is ``inner``'s."""

    def __init__(self, inner: Explainer, phases: Phases) -> None:
        self._inner, self._phases = inner, phases

    @property
    def info(self) -> ComponentInfo:
        return self._inner.info

    async def aexplain(self, records: Sequence[ActivationRecord]) -> Explanation:
        return await self._phases.explaining(self._inner.aexplain(records))

    def estimate(self, records: Sequence[ActivationRecord], *, best_of: int = 1) -> Any:
        return self._inner.estimate(records, best_of=best_of)

    def __getattr__(self, name: str) -> Any:
        value = _inner_attribute(self, name)
        if name != "aexplain_candidates":
            return value

        async def candidates(records: Sequence[ActivationRecord], k: int) -> Any:
            return await self._phases.explaining(value(records, k), count=k)

        return candidates


class _ShownSimulator(Simulator):
    """A simulator that runs ``inner`` inside the "simulating" step of its `Phases`, counting
    excerpts as they finish when ``inner`` simulates them one by one (all at once when it
    overrides `asimulate_many`); every other attribute is ``inner``'s."""

    def __init__(self, inner: Simulator, phases: Phases) -> None:
        self._inner, self._phases = inner, phases

    @property
    def info(self) -> ComponentInfo:
        return self._inner.info

    async def asimulate(
        self, explanation: Explanation, tokens: Sequence[str]
    ) -> SequenceSimulation:
        return (await self.asimulate_many(explanation, [tokens]))[0]

    async def asimulate_many(
        self, explanation: Explanation, sequences: Sequence[Sequence[str]]
    ) -> list[SequenceSimulation]:
        done = self._phases.simulating(len(sequences))
        inner = self._inner
        if type(inner).asimulate_many is not Simulator.asimulate_many:
            simulations = await inner.asimulate_many(explanation, sequences)
            done(len(sequences))
            return simulations

        async def one(tokens: Sequence[str]) -> SequenceSimulation:
            simulation = await inner.asimulate(explanation, tokens)
            done(1)
            return simulation

        return await gather_or_cancel(*(one(tokens) for tokens in sequences))

    async def asimulate_each(
        self, explanation: Explanation, sequences: Sequence[Sequence[str]]
    ) -> list[SequenceSimulation | SimulationFailure]:
        done = self._phases.simulating(len(sequences))
        inner = self._inner
        if (
            type(inner).asimulate_each is not Simulator.asimulate_each
            or type(inner).asimulate_many is not Simulator.asimulate_many
        ):
            outcomes = await inner.asimulate_each(explanation, sequences)
            done(len(sequences))
            return outcomes

        async def one(tokens: Sequence[str]) -> SequenceSimulation | SimulationFailure:
            (outcome,) = await inner.asimulate_each(explanation, [tokens])
            done(1)
            return outcome

        return await gather_or_cancel(*(one(tokens) for tokens in sequences))

    def estimate(self, explanation: Explanation, excerpts: Sequence[Sequence[str]]) -> Any:
        return self._inner.estimate(explanation, excerpts)

    def __getattr__(self, name: str) -> Any:
        return _inner_attribute(self, name)


def _inner_attribute(wrapper: Any, name: str) -> Any:
    """``name`` of the component a wrapper wraps.

    Raises:
        AttributeError: the wrapped component has no such attribute (or the wrapper is not
            initialised yet).
    """
    inner = wrapper.__dict__.get("_inner")
    if inner is None:
        raise AttributeError(name)
    return getattr(inner, name)
