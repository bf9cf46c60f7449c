"""What an explainer that can revise its explanation offers (`RevisingExplainer`, and
`SentenceWritingExplainer` to write sentences that test it), what it is shown (`Disagreement`), and
how a unit's true activations on new text are read (`Probe`);
`neuron_explainer.runs.revision` drives them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from pydantic import JsonValue

from neuron_explainer.interfaces import Probe as Probe
from neuron_explainer.records import ActivationRecord
from neuron_explainer.results import Explanation

__all__ = ["Disagreement", "Probe", "RevisingExplainer", "SentenceWritingExplainer"]


@dataclass(frozen=True)
class Disagreement:
    """One token where the simulation and the truth disagree.

    Attributes:
        kind: ``"miss"`` (the unit fired, the simulation did not predict it) or
            ``"false_positive"`` (the simulation predicted activation, the unit was silent).
        record: the record's index (in the train split, or in the explainer's test sentences).
        position: the token's index in it.
        true_level: its true activation on the 0-10 prompt scale.
        predicted: the simulation's prediction on the same scale.
        before / token / after: the token and up to a few tokens of context either side.
        source: ``"train"`` (a train record) or ``"test"`` (a sentence the explainer wrote to
            test its explanation).
    """

    kind: str
    record: int
    position: int
    true_level: int
    predicted: float
    before: tuple[str, ...]
    token: str
    after: tuple[str, ...]
    source: Literal["train", "test"] = "train"

    def as_json(self) -> dict[str, JsonValue]:
        """What ``data["revision"]`` keeps of it."""
        return {
            "kind": self.kind,
            "record": self.record,
            "position": self.position,
            "token": self.token,
            "true_level": self.true_level,
            "predicted": round(self.predicted, 3),
            "source": self.source,
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


@runtime_checkable
class SentenceWritingExplainer(Protocol):
    """An explainer that can write sentences to test its own explanation (e.g.
    `neuron_explainer.explainers.llm.LLMExplainer`): the unit's true activations on them
    (`Probe`) show where the explanation fails beyond the records it saw."""

    async def apropose_tests(
        self, records: Sequence[ActivationRecord], explanation: Explanation, n: int
    ) -> list[str]:
        """Up to ``n`` new sentences that test ``explanation`` of ``records``: some on which
        the unit should fire by the explanation, some alike on the surface on which it
        should not.

        Raises:
            ExplanationError: no usable sentence.
        """
        ...  # pragma: no cover - protocol
