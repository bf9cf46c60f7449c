"""The `Scorer` interface: what every scorer (built in or from a plugin) implements.

A scorer judges one explanation of one unit on the unit's held-out excerpts and returns a
score with its details. It reads a `ScoringData`: the unit's `NeuronRecord` (for what it
knows about the unit's activations: its largest, its quantiles) and the record's `Splits`,
of which it may judge only the held-out split it is given (``split``, ``"valid"`` by default)
and nothing the explainer saw. Scorers are registered like explainers and simulators
(`neuron_explainer.plugins.hookspecs.register_scorers`) and built by name with
``registry.scorer("detection", llm=...)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel

from neuron_explainer._aio import run_sync
from neuron_explainer.errors import InvalidInputError
from neuron_explainer.interfaces import CallEstimate, Role, _Component
from neuron_explainer.records import NeuronRecord
from neuron_explainer.records.splits import HeldOutName, Splits
from neuron_explainer.results import Explanation

__all__ = ["Scorer", "ScoringData"]


@dataclass(frozen=True)
class ScoringData:
    """What a scorer may read for one unit.

    Attributes:
        record: the unit's record (its ``unit`` id and activation statistics).
        splits: the record cut into train / calibration / valid / test; the explainer saw
            ``train`` only.
        split: the held-out split to judge (``"valid"`` or ``"test"``; ``"calibration"`` is
            for fitting and choosing, not for reporting).
    """

    record: NeuronRecord
    splits: Splits
    split: HeldOutName = "valid"

    def __post_init__(self) -> None:
        if self.split not in ("calibration", "valid", "test"):
            raise InvalidInputError(
                f"a scorer judges a held-out split ('valid', 'test' or 'calibration'), got "
                f"{self.split!r}"
            )


class Scorer(_Component, ABC):
    """Scores an explanation of a unit on the unit's held-out excerpts.

    Implement `ascore`; override `estimate` when the scorer calls an LLM, so dry runs and
    budgets count its requests. ``simulates`` says whether the scorer needs a simulator (a
    run with no such scorer simulates nothing).
    """

    role: ClassVar[Role] = "scorer"
    simulates: ClassVar[bool] = False
    """Whether this scorer scores by simulation (needs a `Simulator`)."""

    @abstractmethod
    async def ascore(self, explanation: Explanation, data: ScoringData) -> BaseModel:
        """Score ``explanation`` on ``data``'s held-out split ``data.split``.

        Returns the scorer's result: a model with the headline `Score` as ``value`` and its
        details.

        Raises:
            InsufficientRecordsError: the split holds too few excerpts to score on.
            Exception: an error no retry could fix (authentication, budget); a judgement that
                failed is counted in the result, never raised or dropped.
        """

    def score(self, explanation: Explanation, data: ScoringData) -> BaseModel:
        """Sync twin of `ascore`."""
        return run_sync(self.ascore(explanation, data))

    def estimate(self, explanation: Explanation, data: ScoringData) -> CallEstimate:
        """The LLM requests and tokens `ascore` would make, sending nothing. The default:
        `CallEstimate.unknown` (no LLM calls without an ``llm`` attribute)."""
        return CallEstimate.unknown(self)
