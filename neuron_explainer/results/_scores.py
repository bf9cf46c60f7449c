"""Scores and their context: `Score` (a value or why it is undefined), `Calibration` (the
map from simulated values to activations) and `Sensitivity` (how much a prediction depends on
its explanation). Re-exported by `neuron_explainer.results`."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, NonNegativeInt, model_validator

__all__ = ["INSENSITIVE_BELOW", "Calibration", "Score", "Sensitivity"]

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class Score(BaseModel):
    """A score value, or ``None`` with the reason it is undefined.

    Undefined scores (a constant simulation, constant truth, too few tokens) are explicit so they
    are never averaged in as NaN or zero by accident.
    """

    model_config = _FROZEN

    value: FiniteFloat | None
    reason: str | None = None

    @model_validator(mode="after")
    def _value_or_reason(self) -> Self:
        if (self.value is None) == (self.reason is None):
            raise ValueError("a Score has either a value or a reason it is undefined, not both")
        return self

    @classmethod
    def undefined(cls, reason: str) -> Self:
        """An undefined score with its reason."""
        return cls(value=None, reason=reason)

    @property
    def defined(self) -> bool:
        """Whether the score has a value."""
        return self.value is not None


class Calibration(BaseModel):
    """A map from simulated values to the unit's activation scale, fitted on calibration records.

    ``method``: ``"none"`` (identity), ``"linear"`` (least squares ``slope * x + intercept``) or
    ``"percentile"`` (piecewise-linear map matching the percentiles of the simulated values to
    those of the true activations, through the points ``xs`` → ``ys``).
    """

    model_config = _FROZEN

    method: Literal["none", "linear", "percentile"]
    slope: FiniteFloat | None = None
    intercept: FiniteFloat | None = None
    xs: tuple[FiniteFloat, ...] = ()
    ys: tuple[FiniteFloat, ...] = ()
    n_tokens: int = Field(default=0, ge=0, description="Calibration tokens it was fitted on.")
    note: str | None = Field(default=None, description="Why a degenerate fit was used, if so.")

    @model_validator(mode="after")
    def _parameters_match_method(self) -> Self:
        linear = self.slope is not None and self.intercept is not None
        if self.method == "linear" and not linear:
            raise ValueError("a linear calibration needs both slope and intercept")
        if self.method == "percentile":
            if not self.xs or len(self.xs) != len(self.ys):
                raise ValueError("a percentile calibration needs xs and ys of the same length >= 1")
            if any(b <= a for a, b in zip(self.xs, self.xs[1:], strict=False)):
                raise ValueError("percentile calibration xs must be strictly increasing")
            if any(b < a for a, b in zip(self.ys, self.ys[1:], strict=False)):
                raise ValueError("percentile calibration ys must not decrease")
        if self.method != "linear" and (self.slope is not None or self.intercept is not None):
            raise ValueError(f"a {self.method} calibration has no slope or intercept")
        if self.method != "percentile" and (self.xs or self.ys):
            raise ValueError(f"a {self.method} calibration has no xs or ys")
        return self


INSENSITIVE_BELOW = 0.1
"""A score whose `Sensitivity` is below this is flagged: its prediction correlates above 0.9
with the neutral explanation's, so it hardly depends on the explanation."""


class Sensitivity(BaseModel):
    """How much the prediction behind a score depends on its explanation.

    ``value`` is 1 minus the Pearson correlation between the prediction under the explanation
    and under a neutral one (``neutral``), pooled over every token of the scored excerpts that
    both simulated (``n_sequences``): 0 when the explanation changed nothing, up to 2.
    Defined as 1 when only the neutral prediction is constant; undefined (with the reason)
    when the explanation's is, or when no excerpt was simulated under both.

    Attributes:
        threshold: below it the score is ``flagged`` (`INSENSITIVE_BELOW` by default).
    """

    model_config = _FROZEN

    value: Score
    neutral: str = Field(min_length=1)
    n_sequences: NonNegativeInt
    threshold: FiniteFloat = INSENSITIVE_BELOW

    def describe(self) -> str:
        """One line for people: the value, what it rests on and, when ``flagged``, why."""
        base = f"against {self.neutral!r}, {self.n_sequences} excerpts"
        value = self.value.value
        if value is None:
            return f"undefined ({self.value.reason}; {base})"
        line = f"{value:.2f} (1 - r {base})"
        if self.flagged:
            line += (
                f"; FLAGGED: below {self.threshold:g}, the prediction hardly depends on the "
                "explanation"
            )
        return line

    @property
    def flagged(self) -> bool:
        """Whether the prediction hardly depends on the explanation (``value`` defined and
        below ``threshold``)."""
        return self.value.value is not None and self.value.value < self.threshold
