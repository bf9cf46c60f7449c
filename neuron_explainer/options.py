"""The options of an explain/score run, each set in one typed model validated once.

* `ExplainOptions`: what a unit's explanation and score depend on besides its record and its
  components (the calibration, the split scored, the split sizes, best-of-k, how many failed
  simulations a unit may have). A run database
  records them and refuses to mix results made with others.
* `RunOptions`: how a run goes (units in flight, the budget, retries, units sampled by a dry
  run). They never change a result, so a resumed run may use other ones.

`explain_neuron` gathers its keyword arguments into an `ExplainOptions`; `explain_neurons`
takes one (or a mapping) as ``explain_options``; `rescore`, the cost estimate and the command
line pass the same object on. `ExplainOptions.build` and `RunOptions.build` validate once and
turn pydantic's ``ValidationError`` into one `InvalidInputError` that says what to fix.

A run database written before a field existed holds options without it: `ExplainOptions.build`
fills in the field's default, so the held options and the wanted ones compare equal when they
mean the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from neuron_explainer.errors import InvalidInputError

__all__ = [
    "DEFAULT_MAX_FAILED_FRACTION",
    "DEFAULT_NEUTRAL_EXPLANATION",
    "CalibrationName",
    "ExplainOptions",
    "RunOptions",
    "ScoreSplit",
    "ScoringName",
]

CalibrationName = Literal["none", "linear", "percentile"]
"""How simulated activations are calibrated before scoring (fitted on the calibration split)."""
ScoreSplit = Literal["valid", "test"]
"""The held-out split a score is computed on."""
ScoringName = Literal["plain", "contrastive"]
"""What a simulation score correlates with the truth (`neuron_explainer.results.ScoringMode`)."""
DEFAULT_MAX_FAILED_FRACTION = 0.10
"""The share of a unit's simulations that may fail before the unit fails (10 %)."""
DEFAULT_NEUTRAL_EXPLANATION = "an unknown pattern"
"""The neutral explanation: what a simulator is told when it is told nothing about the unit
(its prediction is the baseline of contrastive scores and of sensitivity)."""
DEFAULT_TEST_SENTENCES = 6
"""Sentences the explainer is asked to write to test its explanation when revising."""


M = TypeVar("M", bound=BaseModel)


def _validated(
    model: type[M], given: Mapping[str, Any], fixes: Mapping[str, str], unknown: str
) -> M:
    """``model`` validated from ``given``; every problem explained in one `InvalidInputError`
    (``fixes``: field → message with ``{value}``; ``unknown``: message with ``{names}`` and
    ``{choices}`` for fields the model does not have)."""
    try:
        return model.model_validate(dict(given))
    except ValidationError as exc:
        errors = exc.errors()
        extra = sorted({str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden"})
        problems = (
            [unknown.format(names=extra, choices=sorted(model.model_fields))] if extra else []
        )
        for field in dict.fromkeys(str(e["loc"][0]) for e in errors):
            if field not in extra:
                problems.append(fixes[field].format(value=given.get(field)))
        raise InvalidInputError("; ".join(problems)) from None


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    _FIXES: ClassVar[Mapping[str, str]] = {}
    _UNKNOWN: ClassVar[str] = "unknown options {names}; choose from {choices}"

    @classmethod
    def build(cls, options: Self | Mapping[str, Any] | None = None, /, **fields: Any) -> Self:
        """The options from an instance, a mapping or keywords (keywords win over the
        mapping); missing fields take their defaults.

        Raises:
            InvalidInputError: an unknown option or a value out of range, naming each and what
                it may be.
        """
        if isinstance(options, cls) and not fields:
            return options
        if options is not None and not isinstance(options, cls | Mapping):
            raise InvalidInputError(
                f"options must be {cls.__name__} or a mapping, got {type(options).__name__}"
            )
        given = dict(options.model_dump() if isinstance(options, cls) else options or {})
        return _validated(cls, {**given, **fields}, cls._FIXES, cls._UNKNOWN)


class ExplainOptions(_Options):
    """What a unit's explanation and score depend on besides its record and components.

    Attributes:
        calibration: ``"none"``, ``"linear"`` or ``"percentile"``; fitted on the calibration
            split only.
        score_split: the held-out split scored: ``"valid"`` or ``"test"``.
        n_top_per_split: top records per split (>= 1); ``None``: as many as divide evenly.
        n_random_per_split: random records per split (>= 0); ``None``: as many as divide
            evenly.
        best_of: candidate explanations generated; the one whose simulation best predicts the
            calibration split is kept (1: a single explanation).
        max_failed_fraction: the share (0 to 1) of a unit's excerpts whose simulation may
            fail; the unit fails (`SimulationError`) when more fail, else it is scored on the
            excerpts simulated (default 0.10; 0: any failure fails the unit). A best-of-k
            candidate with more failures is left out of the choice.
        scoring: ``"plain"`` (the prediction under the explanation is scored) or
            ``"contrastive"`` (that prediction minus the prediction under the neutral
            explanation, simulated once per unit; best-of-k chooses on it too).
        sensitivity: measure how much the score's prediction depends on its explanation
            (`neuron_explainer.results.Sensitivity`, flagged when hardly at all): ``True``,
            ``False``, or ``"auto"`` (default): measured when it costs at most a sixth more
            simulation, i.e. with contrastive scoring (free: the baseline is simulated
            anyway) or ``best_of >= 5``.
        neutral_explanation: the explanation that says nothing about the unit, whose
            prediction is the baseline of contrastive scores and of sensitivity.
        revise: after explaining (and best-of-k), show the explainer where the simulation
            of its explanation disagreed with the train records and keep its revision if it
            scores better on the calibration split (`neuron_explainer.runs.revision`).
        test_sentences: with ``revise``, sentences the explainer writes to test its own
            explanation, run through the unit's model for their true activations when the
            model is at hand (0-20, default 6; 0: none); where they disagree with the
            simulation is shown with the train split's disagreements.
    """

    calibration: CalibrationName = "linear"
    score_split: ScoreSplit = "valid"
    n_top_per_split: Annotated[StrictInt, Field(ge=1)] | None = None
    n_random_per_split: Annotated[StrictInt, Field(ge=0)] | None = None
    best_of: Annotated[StrictInt, Field(ge=1)] = 1
    max_failed_fraction: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = (
        DEFAULT_MAX_FAILED_FRACTION
    )
    scoring: ScoringName = "plain"
    sensitivity: StrictBool | Literal["auto"] = "auto"
    neutral_explanation: Annotated[str, Field(min_length=1, pattern=r"\S")] = (
        DEFAULT_NEUTRAL_EXPLANATION
    )
    revise: StrictBool = False
    test_sentences: Annotated[StrictInt, Field(ge=0, le=20)] = DEFAULT_TEST_SENTENCES

    @property
    def measures_sensitivity(self) -> bool:
        """Whether sensitivity is measured (``"auto"`` resolved)."""
        if self.sensitivity == "auto":
            return self.scoring == "contrastive" or self.best_of >= 5
        return bool(self.sensitivity)

    @property
    def needs_neutral(self) -> bool:
        """Whether the neutral explanation is simulated for each unit (always on the scored
        split; on the calibration split too when `neutral_on_calibration`)."""
        return self.scoring == "contrastive" or self.measures_sensitivity

    @property
    def neutral_on_calibration(self) -> bool:
        """Whether the neutral explanation also simulates the calibration split: contrastive
        scores fit their calibration and choose best-of-k candidates there."""
        return self.scoring == "contrastive" and (
            self.calibration != "none" or self.best_of > 1 or self.revise
        )

    _FIXES: ClassVar[Mapping[str, str]] = {
        "calibration": "unknown calibration {value!r}; choose 'none', 'linear' or 'percentile'",
        "score_split": "score_split must be 'valid' or 'test', got {value!r} (the calibration "
        "split fits the calibration and the train split is what the explainer saw)",
        "n_top_per_split": "n_top_per_split must be an integer >= 1 or None, got {value!r}",
        "n_random_per_split": "n_random_per_split must be an integer >= 0 or None, got {value!r}",
        "best_of": "best_of must be an integer >= 1, got {value!r}",
        "max_failed_fraction": "max_failed_fraction must be a number from 0 to 1 (the share of "
        "a unit's simulations that may fail), got {value!r}",
        "scoring": "scoring must be 'plain' or 'contrastive', got {value!r}",
        "sensitivity": "sensitivity must be True, False or 'auto', got {value!r}",
        "neutral_explanation": "neutral_explanation must be a non-empty text, got {value!r}",
        "revise": "revise must be True or False, got {value!r}",
        "test_sentences": "test_sentences must be an integer from 0 to 20, got {value!r}",
    }
    _UNKNOWN: ClassVar[str] = (
        "unknown explain_options {names}; choose from {choices} (the run's budget is "
        "budget_usd=, the components explainer= and simulator=)"
    )


class RunOptions(_Options):
    """How a run goes; none of it changes a result.

    Attributes:
        concurrency: units in flight at once (>= 1).
        budget_usd: cap on the estimated cost in USD (>= 0); ``None``: no cap.
        retry_failed: run units that failed before again.
        sample_units: units whose prompts a dry run builds (>= 1).
    """

    concurrency: Annotated[StrictInt, Field(ge=1)] = 8
    budget_usd: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    retry_failed: StrictBool = False
    sample_units: Annotated[StrictInt, Field(ge=1)] = 3

    _FIXES: ClassVar[Mapping[str, str]] = {
        "concurrency": "concurrency must be an integer >= 1, got {value!r}",
        "budget_usd": "budget_usd must be a number >= 0 (or None), got {value!r}",
        "retry_failed": "retry_failed must be True or False, got {value!r}",
        "sample_units": "sample_units must be an integer >= 1, got {value!r}",
    }
