"""The metrics of a classification score with their bootstrap intervals (`ClassificationMetrics`,
`IntervalScore`, `ConfidenceInterval`), computed by
`neuron_explainer.scorers._classification.classification_metrics` (whose docstring defines
them). Re-exported by `neuron_explainer.results`."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, NonNegativeInt, model_validator

from neuron_explainer.results._scores import Score

__all__ = ["ClassificationMetrics", "ConfidenceInterval", "IntervalScore"]

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class ConfidenceInterval(BaseModel):
    """A percentile bootstrap interval of a metric.

    Attributes:
        low, high: the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the
            metric over the resamples where it is defined.
        confidence: the interval's nominal coverage, e.g. 0.95.
        resamples: the resamples the quantiles were taken over.
        undefined_resamples: resamples where the metric was undefined (e.g. precision when
            no "yes" answer was drawn), left out of the quantiles.

    Raises:
        pydantic.ValidationError: ``low > high``, or ``confidence`` not in (0, 1).
    """

    model_config = _FROZEN

    low: FiniteFloat
    high: FiniteFloat
    confidence: float = Field(gt=0, lt=1)
    resamples: int = Field(ge=1)
    undefined_resamples: NonNegativeInt = 0

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.low > self.high:
            raise ValueError(f"interval low ({self.low}) is above high ({self.high})")
        return self

    def contains(self, x: float) -> bool:
        """Whether ``low <= x <= high``."""
        return self.low <= x <= self.high


class IntervalScore(Score):
    """A `Score` (a value, or ``None`` with the reason it is undefined) with the bootstrap
    interval of its value.

    ``interval`` is ``None`` when the value is undefined, when no resample was asked for, or
    when the metric was undefined in every resample.

    Raises:
        pydantic.ValidationError: an interval without a value, or both or neither of value
            and reason.
    """

    interval: ConfidenceInterval | None = None

    @model_validator(mode="after")
    def _interval_needs_value(self) -> Self:
        if self.interval is not None and self.value is None:
            raise ValueError("an undefined IntervalScore has no interval")
        return self


class ClassificationMetrics(BaseModel):
    """The metrics of one classification score (see the module's docstring for definitions).

    Attributes:
        positives, negatives: judgements whose true label is yes / no, failed ones included.
        failed_positives, failed_negatives: of those, the judgements whose answer failed
            (``None``); the metrics rest on the others (`judged_positives`,
            `judged_negatives`) except ``pessimistic_balanced_accuracy``.
        true_positives, false_positives: "yes" answers among the judged positives /
            negatives (false negatives and true negatives are the judged ones' "no" answers).
        missing_probabilities: judged judgements without a probability of "yes" (AUROC is
            undefined unless it is 0).
        balanced_accuracy: ``(recall + specificity) / 2`` on the judged judgements.
        pessimistic_balanced_accuracy: the same on every judgement, a failed one counted as
            wrong: ``(TP / positives + TN / negatives) / 2``.
        precision, recall, specificity, f1, auroc: on the judged judgements; precision and F1
            need both classes judged (with one class only they say nothing but the class),
            precision needs a "yes" answer.
        confidence: the intervals' nominal coverage.
        n_resamples: bootstrap resamples asked for (0: no intervals).

    Raises:
        pydantic.ValidationError: counts that do not add up.
    """

    model_config = _FROZEN

    positives: NonNegativeInt
    negatives: NonNegativeInt
    failed_positives: NonNegativeInt
    failed_negatives: NonNegativeInt
    true_positives: NonNegativeInt
    false_positives: NonNegativeInt
    missing_probabilities: NonNegativeInt
    balanced_accuracy: IntervalScore
    pessimistic_balanced_accuracy: IntervalScore
    precision: IntervalScore
    recall: IntervalScore
    specificity: IntervalScore
    f1: IntervalScore
    auroc: IntervalScore
    confidence: float = Field(gt=0, lt=1)
    n_resamples: NonNegativeInt

    @model_validator(mode="after")
    def _counts_add_up(self) -> Self:
        if self.positives + self.negatives == 0:
            raise ValueError("a classification score rests on at least one judgement")
        if self.failed_positives > self.positives or self.failed_negatives > self.negatives:
            raise ValueError("failed judgements must be among the positives / negatives")
        if self.true_positives > self.judged_positives:
            raise ValueError("true_positives must be among the judged positives")
        if self.false_positives > self.judged_negatives:
            raise ValueError("false_positives must be among the judged negatives")
        if self.missing_probabilities > self.judged:
            raise ValueError("missing_probabilities must be among the judged judgements")
        return self

    @property
    def total(self) -> int:
        """Every judgement, judged or failed."""
        return self.positives + self.negatives

    @property
    def judged_positives(self) -> int:
        """Positives whose answer did not fail."""
        return self.positives - self.failed_positives

    @property
    def judged_negatives(self) -> int:
        """Negatives whose answer did not fail."""
        return self.negatives - self.failed_negatives

    @property
    def judged(self) -> int:
        """Judgements whose answer did not fail: what the metrics rest on."""
        return self.judged_positives + self.judged_negatives

    @property
    def failed(self) -> int:
        """Judgements whose answer failed (``None``)."""
        return self.failed_positives + self.failed_negatives

    @property
    def failed_fraction(self) -> float:
        """``failed / total``."""
        return self.failed / self.total

    def describe(self) -> str:
        """One line for people: ``"balanced accuracy 0.80 [0.72, 0.88], AUROC 0.85 [0.78,
        0.91] (95% intervals); 96 of 100 judged (48 of 50 positives, 48 of 50 negatives);
        4 failed (4.0%)"``."""
        return (
            f"balanced accuracy {_short(self.balanced_accuracy)}, AUROC {_short(self.auroc)} "
            f"({self.confidence:.0%} intervals); {self.judged} of "
            f"{self.total} judged ({self.judged_positives} of {self.positives} positives, "
            f"{self.judged_negatives} of {self.negatives} negatives); {self.failed} failed "
            f"({self.failed_fraction:.1%})"
        )


def _short(score: IntervalScore) -> str:
    if score.value is None:
        return f"undefined ({score.reason})"
    if score.interval is None:
        return f"{score.value:.2f}"
    return f"{score.value:.2f} [{score.interval.low:.2f}, {score.interval.high:.2f}]"
