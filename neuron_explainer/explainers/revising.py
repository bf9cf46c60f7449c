"""What an explainer that can revise its explanation offers (`RevisingExplainer`) and what it
is shown (`Disagreement`); `neuron_explainer.runs.revision` drives it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pydantic import JsonValue

from neuron_explainer.records import ActivationRecord
from neuron_explainer.results import Explanation

__all__ = ["Disagreement", "RevisingExplainer"]


@dataclass(frozen=True)
class Disagreement:
    """One train token where the simulation and the truth disagree.

    Attributes:
        kind: ``"miss"`` (the unit fired, the simulation did not predict it) or
            ``"false_positive"`` (the simulation predicted activation, the unit was silent).
        record: the train record's index.
        position: the token's index in it.
        true_level: its true activation on the 0-10 prompt scale.
        predicted: the simulation's prediction on the same scale.
        before / token / after: the token and up to a few tokens of context either side.
    """

    kind: str
    record: int
    position: int
    true_level: int
    predicted: float
    before: tuple[str, ...]
    token: str
    after: tuple[str, ...]

    def as_json(self) -> dict[str, JsonValue]:
        """What ``data["revision"]`` keeps of it."""
        return {
            "kind": self.kind,
            "record": self.record,
            "position": self.position,
            "token": self.token,
            "true_level": self.true_level,
            "predicted": round(self.predicted, 3),
        }


@runtime_checkable
class RevisingExplainer(Protocol):
    """An explainer that can revise an explanation from its disagreements (e.g.
    `neuron_explainer.explainers.llm.LLMExplainer`)."""

    async def arevise(
        self,
        records: Sequence[ActivationRecord],
        explanation: Explanation,
        disagreements: Sequence[Disagreement],
    ) -> Explanation:
        """A revised explanation of ``records``, given the original and where its simulation
        disagreed with the truth.

        Raises:
            ExplanationError: no usable revision.
        """
        ...  # pragma: no cover - protocol
