"""What a classification scorer (detection, fuzzing) returns: every judgement it made and the
metrics of them. Re-exported by `neuron_explainer.results`."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    JsonValue,
    NonNegativeInt,
    model_validator,
)

from neuron_explainer.records import ActivationRecord
from neuron_explainer.results._metrics import ClassificationMetrics, IntervalScore
from neuron_explainer.results._parts import ComponentInfo, SimulationFailure
from neuron_explainer.results._scores import Score

__all__ = ["ClassificationScore", "Judgement", "PluginScore"]

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class Judgement(BaseModel):
    """One excerpt the judge was asked about.

    Attributes:
        record: the excerpt, with the unit's true activations.
        source: where in the held-out split it came from (``"top"``, ``"quantile"`` or
            ``"random"`` excerpts).
        label: the right answer: activating (detection), or correctly highlighted (fuzzing).
        highlighted: the positions shown highlighted (fuzzing), else ``None``.
        answer: the judge's answer, ``None`` when it gave none usable (``failure`` says why).
        p_yes: the probability of "yes" from the answer's logprobs, when it had them.

    Raises:
        pydantic.ValidationError: an answer together with a failure, or neither.
    """

    model_config = _FROZEN

    record: ActivationRecord
    source: Literal["top", "quantile", "random"]
    label: bool
    highlighted: tuple[NonNegativeInt, ...] | None = None
    answer: bool | None
    p_yes: FiniteFloat | None = Field(default=None, ge=0, le=1)
    failure: SimulationFailure | None = None

    @model_validator(mode="after")
    def _answer_or_failure(self) -> Self:
        if (self.answer is None) == (self.failure is None):
            raise ValueError("a judgement has an answer or a failure, not both or neither")
        return self

    @property
    def correct(self) -> bool | None:
        """Whether the answer was right (``None`` when it failed)."""
        return None if self.answer is None else self.answer == self.label


class ClassificationScore(BaseModel):
    """A detection or fuzzing score of one explanation.

    Attributes:
        kind: ``"detection"`` or ``"fuzzing"``.
        scorer: the scorer's name and settings (its LLM among them).
        split: the held-out split judged.
        value: the headline, ``headline``'s value (undefined, with the reason, when it is).
        headline: which metric the headline is: ``"auroc"`` (of the probability of "yes")
            when every judged answer came with one, else ``"balanced_accuracy"`` (of the
            answers). Small judges answer nearly all "yes" or all "no" while their
            probabilities still rank the excerpts (docs/classification-scorers.md), so the
            ranking is the better headline where it exists.
        metrics: balanced accuracy, precision, recall, F1, AUROC with intervals, and counts.
        judgements: every excerpt asked about, failed ones included.
        firing_fraction, firing_threshold: an excerpt is activating when some token reaches
            ``firing_threshold`` (``firing_fraction`` x the unit's largest activation), and
            non-activating when every token's absolute activation stays below it.
        negatives: ``"random"`` or ``"hard"`` non-activating excerpts (detection), or
            ``"wrong_highlight"`` (fuzzing: the positives with other tokens highlighted).
        hard_negatives: how many negatives contain a token that fires in the train split.
        not_judged: excerpts left out: ambiguous ones (detection: neither activating nor
            non-activating), or activating ones with too few other tokens to highlight wrongly
            (fuzzing).
        excerpts_per_request: excerpts judged in one request.
    """

    model_config = _FROZEN

    kind: Literal["detection", "fuzzing"]
    scorer: ComponentInfo
    split: Literal["calibration", "valid", "test"]
    value: Score
    headline: Literal["balanced_accuracy", "auroc"] = "balanced_accuracy"
    metrics: ClassificationMetrics
    judgements: tuple[Judgement, ...]
    firing_fraction: FiniteFloat = Field(gt=0, lt=1)
    firing_threshold: FiniteFloat
    negatives: Literal["random", "hard", "wrong_highlight"]
    hard_negatives: NonNegativeInt = 0
    not_judged: NonNegativeInt = 0
    excerpts_per_request: int = Field(ge=1)

    @property
    def headline_score(self) -> IntervalScore:
        """The metric the headline is, with its interval."""
        return self.metrics.auroc if self.headline == "auroc" else self.metrics.balanced_accuracy

    @property
    def n_failed(self) -> int:
        """Judgements without a usable answer."""
        return sum(j.answer is None for j in self.judgements)


class PluginScore(BaseModel):
    """The score of a scorer outside the built-in kinds (a plugin's): its headline ``value``
    and the rest of what it returned, as JSON data (``details``).

    Attributes:
        kind: the scorer's name.
    """

    model_config = _FROZEN

    kind: str = Field(min_length=1)
    scorer: ComponentInfo
    value: Score
    details: dict[str, JsonValue] = Field(default_factory=dict)
