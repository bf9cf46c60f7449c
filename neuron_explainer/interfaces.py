"""The three pluggable stages: `Subject`, `Explainer`, `Simulator`.

Each is an abstract class with one async method to implement. The sync twins
(``neuron_record``, ``explain``, ``simulate``) run the async method for scripts; inside an
event loop, await the async method instead. Implementations describe themselves with
`info`, which every result records.

A minimal simulator:

    class Constant(Simulator):
        async def asimulate(self, explanation, tokens):
            return SequenceSimulation(tokens=tuple(tokens),
                                      expected_activations=(1.0,) * len(tokens))
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from neuron_explainer._aio import gather_or_cancel as gather_or_cancel
from neuron_explainer._aio import run_sync as run_sync
from neuron_explainer.records import ActivationRecord, NeuronRecord, UnitId
from neuron_explainer.results import ComponentInfo, Explanation, SequenceSimulation

__all__ = ["Explainer", "Simulator", "Subject", "gather_or_cancel", "run_sync"]


class _Component:
    """Shared by explainers and simulators: a name and the settings results record."""

    name: str = ""
    """Registry name of the component (e.g. ``"token-table"``); the class name if empty."""

    @property
    def info(self) -> ComponentInfo:
        """Name, version and settings recorded in results. Override to add settings."""
        return ComponentInfo(name=self.name or type(self).__name__)


class Subject(ABC):
    """A model whose units can be recorded over a corpus.

    Implement `aneuron_record`: collect (or load) the activation records of one unit.
    """

    @abstractmethod
    async def aneuron_record(self, unit: UnitId) -> NeuronRecord:
        """Return the `NeuronRecord` of ``unit``.

        Raises:
            InvalidInputError: the unit does not exist in this subject.
        """

    def neuron_record(self, unit: UnitId) -> NeuronRecord:
        """Sync twin of `aneuron_record`."""
        return run_sync(self.aneuron_record(unit))


class Explainer(_Component, ABC):
    """Turns top-activating records into an `Explanation`.

    Implement `aexplain`. It sees only the train split.
    """

    @abstractmethod
    async def aexplain(self, records: Sequence[ActivationRecord]) -> Explanation:
        """Explain what the unit responds to, from ``records`` (the train split).

        Raises:
            ExplanationError: no usable explanation could be produced.
        """

    def explain(self, records: Sequence[ActivationRecord]) -> Explanation:
        """Sync twin of `aexplain`."""
        return run_sync(self.aexplain(records))


class Simulator(_Component, ABC):
    """Predicts activations on tokens from an explanation alone.

    Implement `asimulate` for one excerpt. `asimulate_many` runs it over many
    excerpts concurrently; override it when a backend can batch.
    """

    @abstractmethod
    async def asimulate(
        self, explanation: Explanation, tokens: Sequence[str]
    ) -> SequenceSimulation:
        """Predict the activation of every token in ``tokens``.

        The result must have exactly one expected activation per token.

        Raises:
            SimulationError: no usable prediction could be made (never return zeros instead).
        """

    async def asimulate_many(
        self, explanation: Explanation, sequences: Sequence[Sequence[str]]
    ) -> list[SequenceSimulation]:
        """Simulate several excerpts concurrently; results are in the order of ``sequences``.
        The first failure cancels the other simulations and propagates."""
        return await gather_or_cancel(*(self.asimulate(explanation, s) for s in sequences))

    def simulate(self, explanation: Explanation, tokens: Sequence[str]) -> SequenceSimulation:
        """Sync twin of `asimulate`."""
        return run_sync(self.asimulate(explanation, tokens))
