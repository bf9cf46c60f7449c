"""What explaining and scoring a unit produces.

* `Explanation`: the explainer's text, the activation scale it was shown, its raw output.
* `SequenceSimulation`: a simulator's predicted activation for every token of one excerpt.
* `Score`: a number, or ``None`` with the reason it is undefined (never a silent NaN).
* `SimulationFailure`: why one excerpt could not be simulated (a counted failure, never zeros).
* `ScoredSequence` / `FailedSequence` / `ScoredSimulation`: simulations next to the truth,
  scored, and the excerpts that could not be simulated.
* `Sensitivity`: how much a score's prediction depends on its explanation (against a neutral
  explanation's prediction of the same excerpts); flagged when hardly at all.
* `SimulationStats`: how simulating went: attempted, failed by reason, constant, retried, tokens.
* `ExplanationResult`: one explained and scored unit with everything that produced it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    JsonValue,
    NonNegativeInt,
    model_validator,
)

from neuron_explainer._version import __version__
from neuron_explainer.errors import FormatError
from neuron_explainer.records import ActivationRecord, Provenance, UnitId
from neuron_explainer.records.splits import SplitPlan
from neuron_explainer.results._classification import ClassificationScore, Judgement, PluginScore
from neuron_explainer.results._metrics import (
    ClassificationMetrics,
    ConfidenceInterval,
    IntervalScore,
)
from neuron_explainer.results._parts import ComponentInfo, SimulationFailure, UsageSummary
from neuron_explainer.results._scores import INSENSITIVE_BELOW, Calibration, Score, Sensitivity
from neuron_explainer.results._stats import REASON_PATTERN, SimulationStats

__all__ = [
    "INSENSITIVE_BELOW",
    "NEUTRAL_EXPLAINER",
    "REASON_PATTERN",
    "RESULT_FORMAT_VERSION",
    "ActivationScale",
    "Calibration",
    "ClassificationMetrics",
    "ClassificationScore",
    "ComponentInfo",
    "ConfidenceInterval",
    "Explanation",
    "ExplanationResult",
    "FailedSequence",
    "IntervalScore",
    "Judgement",
    "PluginScore",
    "PromptScale",
    "Score",
    "ScoredSequence",
    "ScoredSimulation",
    "ScorerScore",
    "ScoringMode",
    "Sensitivity",
    "SequenceSimulation",
    "SimulationFailure",
    "SimulationScore",
    "SimulationStats",
    "UsageSummary",
    "predicted_values",
]

_FROZEN = ConfigDict(extra="forbid", frozen=True)

ActivationScale = Literal["neuron_activations", "simulated_0_10"]
"""Units of simulated values: real activations, or the 0-10 scale shown to an LLM."""
NEUTRAL_EXPLAINER = "neutral"
"""The explainer name of the neutral explanation (`neuron_explainer.scorers.simulation
.neutral_explanation`): a simulator that cannot read a text-only explanation may recognise it
by this name and predict what it predicts when told nothing."""
ScoringMode = Literal["plain", "contrastive"]
"""What a simulation score correlates with the truth: the prediction under the explanation
(``"plain"``), or that prediction minus the prediction under a neutral explanation of the same
excerpt (``"contrastive"``: only what the explanation changed)."""


class PromptScale(BaseModel):
    """How real activations map to the integer scale an LLM is shown.

    ``max_activation`` (the largest activation in the records shown) maps to ``top`` (10);
    negative activations clip to 0 for prompts but stay raw for scoring.
    """

    model_config = _FROZEN

    max_activation: FiniteFloat = Field(gt=0)
    top: int = Field(default=10, ge=1)

    @classmethod
    def for_records(cls, records: Sequence[ActivationRecord], top: int = 10) -> Self | None:
        """The scale whose ``top`` is the largest activation in ``records``.

        Returns ``None`` when no activation is positive (nothing to scale).
        """
        peak = max((r.max_activation for r in records), default=0.0)
        return cls(max_activation=peak, top=top) if peak > 0 else None

    def discretize(self, activations: Sequence[float]) -> list[int]:
        """Map real activations to integers in ``0..top`` (rounded, clipped)."""
        return [
            min(self.top, max(0, math.floor(a / self.max_activation * self.top + 0.5)))
            for a in activations
        ]


class Explanation(BaseModel):
    """An explanation of what a unit responds to.

    Attributes:
        text: the plain-English explanation.
        scale: the activation scale the explainer was shown, when it was shown one.
        raw_output: the explainer's raw output (e.g. the LLM completion) before cleaning.
        data: structured data a matching simulator may read (e.g. the token table).
        explainer: which explainer produced it.
    """

    model_config = _FROZEN

    text: str = Field(min_length=1)
    scale: PromptScale | None = None
    raw_output: str | None = None
    data: dict[str, JsonValue] = Field(default_factory=dict)
    explainer: ComponentInfo


class SequenceSimulation(BaseModel):
    """A simulator's prediction for every token of one excerpt.

    ``distribution_values[i]`` / ``distribution_probabilities[i]`` optionally give the discrete
    distribution behind ``expected_activations[i]``.

    Raises:
        pydantic.ValidationError: lengths that do not match the tokens, non-finite values,
            negative probabilities.
    """

    model_config = _FROZEN

    tokens: tuple[str, ...]
    expected_activations: tuple[FiniteFloat, ...]
    scale: ActivationScale = "simulated_0_10"
    distribution_values: tuple[tuple[FiniteFloat, ...], ...] | None = None
    distribution_probabilities: tuple[tuple[FiniteFloat, ...], ...] | None = None

    @model_validator(mode="after")
    def _check_shapes(self) -> Self:
        n = len(self.tokens)
        if len(self.expected_activations) != n:
            raise ValueError(
                f"expected_activations has {len(self.expected_activations)} values for {n} tokens"
            )
        values, probs = self.distribution_values, self.distribution_probabilities
        if (values is None) != (probs is None):
            raise ValueError("give both distribution_values and distribution_probabilities")
        if values is not None and probs is not None:
            if len(values) != n or len(probs) != n:
                raise ValueError(f"distributions must have one entry per token ({n})")
            for i, (v, p) in enumerate(zip(values, probs, strict=True)):
                if len(v) != len(p):
                    raise ValueError(f"token {i}: {len(v)} values but {len(p)} probabilities")
                if any(x < 0 for x in p) or sum(p) > 1 + 1e-6:
                    raise ValueError(f"token {i}: probabilities must be >= 0 and sum to <= 1")
        return self


class ScoredSequence(BaseModel):
    """One held-out excerpt: truth, simulation, calibrated prediction and its own score.

    Attributes:
        simulation: the prediction under the explanation.
        neutral: the prediction under the neutral explanation, when it was measured
            (contrastive scoring, or sensitivity).
        contrastive: scored on ``simulation`` minus ``neutral`` (`predicted`) instead of
            ``simulation``; ``calibrated`` and ``correlation`` are of that difference.

    Raises:
        pydantic.ValidationError: ``contrastive`` without ``neutral``, or a ``neutral``
            simulation of other tokens than ``simulation``'s.
    """

    model_config = _FROZEN

    record: ActivationRecord
    source: Literal["top", "random"]
    simulation: SequenceSimulation
    calibrated: tuple[FiniteFloat, ...]
    correlation: Score
    neutral: SequenceSimulation | None = None
    contrastive: bool = False

    @model_validator(mode="after")
    def _neutral_matches(self) -> Self:
        if self.contrastive and self.neutral is None:
            raise ValueError("a contrastive ScoredSequence needs the neutral simulation")
        if self.neutral is not None and self.neutral.tokens != self.simulation.tokens:
            raise ValueError("the neutral simulation covers other tokens than the simulation")
        return self

    @property
    def predicted(self) -> tuple[float, ...]:
        """What is scored: the simulation's values, minus the neutral simulation's when
        ``contrastive`` (`predicted_values`)."""
        return predicted_values(self.simulation, self.neutral if self.contrastive else None)


def predicted_values(
    simulation: SequenceSimulation, neutral: SequenceSimulation | None = None
) -> tuple[float, ...]:
    """The values a simulation score correlates: ``simulation``'s, or with ``neutral`` (the
    neutral explanation's simulation of the same tokens) the difference token by token, as
    contrastive scoring, its calibration and its best-of-k choice use it."""
    own = simulation.expected_activations
    if neutral is None:
        return own
    return tuple(a - b for a, b in zip(own, neutral.expected_activations, strict=True))


class FailedSequence(BaseModel):
    """An excerpt of the calibration or the scored split that could not be simulated; it is
    left out of the calibration fit and of every score.

    Attributes:
        record: the excerpt and its true activations.
        split: the split it belongs to.
        source: whether it is one of the split's top or random records.
        index: its position among the split's ``source`` records.
        failure: why it failed.
    """

    model_config = _FROZEN

    record: ActivationRecord
    split: Literal["calibration", "valid", "test"]
    source: Literal["top", "random"]
    index: NonNegativeInt
    failure: SimulationFailure


class ScoredSimulation(BaseModel):
    """Scores of one explanation on one held-out split.

    The scores rest on the excerpts that were simulated, ``sequences`` (`n_sequences` of
    them). The excerpts that could not be simulated, of this split and of the calibration
    split, are in ``failed`` with why; they are left out of every score and of the
    calibration fit (never scored as zeros).

    Attributes:
        correlation: headline score; Pearson correlation pooled over every token of the top
            and random records ("top-and-random", as in the paper).
        random_correlation: the same, over the random records only.
        top_correlation: the same, over the top records only.
        mean_sequence_correlation: mean of the defined per-sequence correlations.
        rsquared: ``1 - SSE/SST`` of the calibrated predictions, pooled.
        absolute_dev_explained: ``1 - sum|y - y_hat| / sum|y - median(y)|`` of the calibrated
            predictions, pooled.
        failed: the excerpts that could not be simulated (empty in results of format 1 and
            2, where any failure failed the unit).
        scoring: ``"plain"``, or ``"contrastive"``: every score is of each sequence's
            `ScoredSequence.predicted` (the prediction minus the neutral explanation's), the
            calibration fitted on the same difference; an excerpt the neutral explanation
            could not simulate is then a failed one.
        sensitivity: how much the prediction depends on the explanation (`Sensitivity`),
            when it was measured; ``None`` otherwise (and in results before format 4).
        neutral_explanation: the neutral explanation's text, when it was simulated
            (contrastive scoring or sensitivity).
    """

    model_config = _FROZEN

    split: Literal["calibration", "valid", "test"]
    sequences: tuple[ScoredSequence, ...]
    calibration: Calibration
    correlation: Score
    random_correlation: Score
    top_correlation: Score
    mean_sequence_correlation: Score
    rsquared: Score
    absolute_dev_explained: Score
    failed: tuple[FailedSequence, ...] = ()
    scoring: ScoringMode = "plain"
    sensitivity: Sensitivity | None = None
    neutral_explanation: str | None = None

    @model_validator(mode="after")
    def _scoring_matches(self) -> Self:
        if self.scoring == "contrastive" and not self.neutral_explanation:
            raise ValueError("a contrastive score names its neutral_explanation")
        wrong = [
            i
            for i, s in enumerate(self.sequences)
            if s.contrastive != (self.scoring == "contrastive")
        ]
        if wrong:
            raise ValueError(
                f"scoring is {self.scoring!r} but sequence {wrong[0]} is "
                f"{'' if self.sequences[wrong[0]].contrastive else 'not '}contrastive"
            )
        return self

    @property
    def n_sequences(self) -> int:
        """How many excerpts the scores rest on (the simulated ones of the scored split)."""
        return len(self.sequences)

    @property
    def n_failed(self) -> int:
        """How many excerpts of the scored split could not be simulated."""
        return sum(f.split == self.split for f in self.failed)

    def held_out_records(self) -> tuple[ActivationRecord, ...]:
        """Every record of the scored split, simulated or not, in the split's order (its top
        records, then its random ones)."""
        records: list[ActivationRecord] = []
        for source in ("top", "random"):
            scored = iter([s.record for s in self.sequences if s.source == source])
            failed = {
                f.index: f.record
                for f in self.failed
                if f.split == self.split and f.source == source
            }
            n = sum(s.source == source for s in self.sequences) + len(failed)
            records += [failed[i] if i in failed else next(scored) for i in range(n)]
        return tuple(records)


class SimulationScore(BaseModel):
    """What the ``"correlation"`` scorer
    (`neuron_explainer.scorers.simulation_scorer.CorrelationScorer`) returns: the headline
    ``value`` (the pooled correlation of ``scored``) and the scored simulation it comes
    from."""

    model_config = _FROZEN

    kind: Literal["correlation"] = "correlation"
    scorer: ComponentInfo
    value: Score
    scored: ScoredSimulation | None = None


RESULT_FORMAT_VERSION = 8
"""The version of the `ExplanationResult` JSON this library writes (``format_version``).

1: 0.1.0, no ``format_version`` field; 2: the field; 3: ``simulation`` (`SimulationStats`)
and ``scored.failed`` (the excerpts that could not be simulated); 4: ``scored.scoring``,
``scored.sensitivity``, ``scored.neutral_explanation`` and each scored sequence's
``neutral`` and ``contrastive``; 5: every record's ``window_id`` and ``split_plan.quantile``
(where the quantile samples went); 6: ``scores`` (every scorer's score by name) and
``scored`` optional (no simulation scorer ran); 7: ``unit.site`` (the hook site) and units of
other kinds (`neuron_explainer.records.UNIT_KINDS`), and a record's ``attended`` (an attention
head's top source token), both written only when set; 8: ``unit.source`` (the SAE,
transcoder or direction of the unit, written only when set). Older JSON is upgraded on load: its
``simulation`` is ``None`` (not measured), its ``failed`` empty (any failure then failed the
unit), its scoring plain, its sensitivity and neutral explanation ``None`` (not measured), its
records' window ids ``None`` (not known), its split plan's ``quantile`` ``None`` (quantile
samples were not split) and its ``scores`` the correlation score alone."""


def check_stored_version(version: Any, newest: int, what: str) -> int:
    """``version``, the format version a stored file says it has, checked against ``newest``,
    the version this library writes (its readers read every version from 1 to ``newest``).

    Raises:
        FormatError: ``version`` is not a positive integer, or it is newer than ``newest``
            (the message, which starts with ``what``, says to upgrade neuron_explainer).
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise FormatError(f"{what} {version!r} is not a version (a positive integer)")
    if version > newest:
        raise FormatError(
            f"{what} {version} was written by a newer neuron_explainer; this version reads 1 "
            f"to {newest}: upgrade neuron_explainer"
        )
    return version


def _upgrade_result(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (an `ExplanationResult` as JSON data of any known version) in the current
    version; a missing ``format_version`` means 1.

    Raises:
        FormatError: the version is not a positive integer, or newer than this library's.
    """
    check_stored_version(data.get("format_version", 1), RESULT_FORMAT_VERSION, "result format")
    # 1 -> 2 only adds the version field. 2 -> 3, 3 -> 4 and 4 -> 5 add fields whose defaults
    # say what older results hold: ``simulation`` None (not measured), ``scored.failed`` empty
    # (any failed simulation then failed the unit), ``scored.scoring`` "plain",
    # ``scored.sensitivity`` None (not measured), a record's ``window_id`` None (not known),
    # ``split_plan.quantile`` None (not split). 5 -> 6: ``scores`` is filled from ``scored`` by
    # the model (the correlation score alone). 6 -> 7: ``unit.site`` and a record's
    # ``attended`` default to None (the kind's default site; not recorded). 7 -> 8:
    # ``unit.source`` defaults to None (the unit's SAE or direction not named). A later change
    # adds its step here.
    return {**data, "format_version": RESULT_FORMAT_VERSION}


ScorerScore = SimulationScore | ClassificationScore | PluginScore
"""What one scorer gave a result, under its name in `ExplanationResult.scores`."""


class ExplanationResult(BaseModel):
    """One unit explained and scored, with everything that produced the result.

    ``format_version`` is `RESULT_FORMAT_VERSION`: JSON of an older version (0.1.0's has no
    such field) is upgraded when it is read; a newer version is refused (a
    ``pydantic.ValidationError`` saying so).

    ``scores`` holds every scorer's score by name, in the order they were asked for (the first
    is the headline, `score`); the ``"correlation"`` score's details (the simulation, scored)
    are ``scored``, ``None`` when no simulation scorer ran. ``usage`` is what every LLM call of
    the unit used (explainer, simulator, scorers); ``simulation`` how its simulations went
    (`SimulationStats`; ``None`` in a result of format 1 or 2, which did not measure it).

    Raises:
        pydantic.ValidationError: a ``"correlation"`` score without ``scored``, or no score.
    """

    model_config = _FROZEN

    format_version: int = RESULT_FORMAT_VERSION
    unit: UnitId
    explanation: Explanation
    scored: ScoredSimulation | None = None
    scores: dict[str, ScorerScore] = Field(default_factory=dict)
    explainer: ComponentInfo
    simulator: ComponentInfo
    provenance: Provenance
    split_plan: SplitPlan
    usage: UsageSummary = UsageSummary()
    simulation: SimulationStats | None = None
    library_version: str = __version__
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        return _upgrade_result(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _scores_match(self) -> Self:
        if self.scored is not None and "correlation" not in self.scores:
            entry = SimulationScore(
                scorer=ComponentInfo(name="correlation"), value=self.scored.correlation
            )
            self.scores["correlation"] = entry  # the results of format 5 and older
        if "correlation" in self.scores and self.scored is None:
            raise ValueError("a 'correlation' score needs its simulation ('scored')")
        if not self.scores:
            raise ValueError("a result holds at least one score")
        return self

    @property
    def score(self) -> float | None:
        """The headline score: the value of the first scorer's score (the top-and-random
        correlation by default), ``None`` when undefined."""
        return next(iter(self.scores.values())).value.value
