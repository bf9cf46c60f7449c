"""OpenAI's public explanation JSONL: one ``NeuronSimulationResults`` object per line.

::

    NeuronSimulationResults = {neuron_id: NeuronId, scored_explanations: [ScoredExplanation | null]}
    ScoredExplanation = {explanation: str, scored_simulation: ScoredSimulation}
    ScoredSimulation = {scored_sequence_simulations: [ScoredSequenceSimulation],
                        ev_correlation_score, rsquared_score, absolute_dev_explained_score}
    ScoredSequenceSimulation = {simulation: SequenceSimulation, true_activations: [float],
                                ev_correlation_score, rsquared_score, absolute_dev_explained_score}
    SequenceSimulation = {tokens, expected_activations, activation_scale,
                          distribution_values, distribution_probabilities,
                          uncalibrated_simulation: SequenceSimulation | null}

Every object also carries ``dataclass_name``. The pydantic models here hold that data faithfully
(`OpenAINeuronSimulationResults` and the models it contains), and reading validates each line
through them: a wrong ``dataclass_name``, a missing or unknown field, a wrongly typed value or
lengths that do not match raise one `FormatError` naming the line and the JSON path. Scores are
``float | None``: ``null`` and ``NaN`` read as ``None`` and are written as ``null``. Numbers are
floats: an integer in the file (e.g. a distribution value ``3``) reads as ``3.0`` and is written
as ``3.0``; a string or a boolean is refused.

`explanation_results_to_openai` exports this library's own
`ExplanationResult` objects in the same shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Self, get_args

from pydantic import BaseModel, ConfigDict, StrictStr, field_validator, model_validator

from neuron_explainer.errors import FormatError, InvalidInputError
from neuron_explainer.formats._json import (
    JSONObject,
    PathLike,
    Where,
    describe,
    dump_json,
    iter_jsonl,
    validate,
    write_text,
)
from neuron_explainer.formats._tagged import NeuronIdIn, Number, OpenAIObject, Score
from neuron_explainer.formats.openai import make_unit, unit_to_openai
from neuron_explainer.records import UnitId
from neuron_explainer.results import ActivationScale, ExplanationResult

__all__ = [
    "OpenAIActivationScale",
    "OpenAINeuronSimulationResults",
    "OpenAIScoredExplanation",
    "OpenAIScoredSequence",
    "OpenAIScoredSimulation",
    "OpenAISequenceSimulation",
    "explanation_results_to_openai",
    "read_openai_explanations",
    "simulation_results_from_openai",
    "simulation_results_to_openai",
    "write_openai_explanations",
]

OpenAIActivationScale = Literal["neuron_activations", "simulated_normalized_activations"]
"""OpenAI's name for the units of simulated values (real activations, or the 0-10 scale)."""

_TO_OPENAI_SCALE: dict[ActivationScale, OpenAIActivationScale] = {
    "neuron_activations": "neuron_activations",
    "simulated_0_10": "simulated_normalized_activations",
}


class OpenAISequenceSimulation(OpenAIObject):
    """OpenAI's ``SequenceSimulation``: predicted activations for one excerpt.

    ``distribution_values`` / ``distribution_probabilities`` are either empty (no distribution)
    or hold one list per token. ``uncalibrated_simulation`` is the simulation before
    calibration, when the simulator calibrated.
    """

    openai_name = "SequenceSimulation"

    tokens: tuple[StrictStr, ...]
    expected_activations: tuple[Number, ...]
    activation_scale: OpenAIActivationScale
    distribution_values: tuple[tuple[Number, ...], ...] = ()
    distribution_probabilities: tuple[tuple[Number, ...], ...] = ()
    uncalibrated_simulation: OpenAISequenceSimulation | None = None

    @field_validator("activation_scale", mode="before")
    @classmethod
    def _known_scale(cls, value: Any) -> Any:
        known = get_args(OpenAIActivationScale)
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {describe(value)}")
        if value not in known:
            raise ValueError(f"unknown scale {value!r}; expected {' or '.join(map(repr, known))}")
        return value

    @model_validator(mode="after")
    def _check_shapes(self) -> Self:
        _check_lengths(
            len(self.tokens),
            len(self.expected_activations),
            self.distribution_values,
            self.distribution_probabilities,
        )
        return self


def _check_lengths(
    tokens: int,
    expected: int,
    values: tuple[tuple[float, ...], ...],
    probabilities: tuple[tuple[float, ...], ...],
) -> None:
    """Check that a simulation has one expected activation per token and, when it has
    distributions, one value list and one probability list of the same length per token.

    Raises:
        ValueError: the first count that does not match.
    """
    if expected != tokens:
        raise ValueError(f"expected_activations has {expected} values for {tokens} tokens")
    if len(values) != len(probabilities):
        raise ValueError(
            f"distribution_values has {len(values)} entries but distribution_probabilities "
            f"has {len(probabilities)}"
        )
    if values and len(values) != tokens:
        raise ValueError(f"distributions have {len(values)} entries for {tokens} tokens")
    for i, (v, p) in enumerate(zip(values, probabilities, strict=True)):
        if len(v) != len(p):
            raise ValueError(f"token {i}: {len(v)} distribution values, {len(p)} probabilities")


class OpenAIScoredSequence(OpenAIObject):
    """OpenAI's ``ScoredSequenceSimulation``: one excerpt's simulation, truth and scores."""

    openai_name = "ScoredSequenceSimulation"

    simulation: OpenAISequenceSimulation
    true_activations: tuple[Number, ...]
    ev_correlation_score: Score = None
    rsquared_score: Score = None
    absolute_dev_explained_score: Score = None

    @model_validator(mode="after")
    def _check_lengths(self) -> Self:
        if len(self.true_activations) != len(self.simulation.tokens):
            raise ValueError(
                f"true_activations has {len(self.true_activations)} values but the simulation "
                f"has {len(self.simulation.tokens)} tokens"
            )
        return self


class OpenAIScoredSimulation(OpenAIObject):
    """OpenAI's ``ScoredSimulation``: the scored sequences and the pooled scores."""

    openai_name = "ScoredSimulation"

    scored_sequence_simulations: tuple[OpenAIScoredSequence, ...]
    ev_correlation_score: Score = None
    rsquared_score: Score = None
    absolute_dev_explained_score: Score = None


class OpenAIScoredExplanation(OpenAIObject):
    """OpenAI's ``ScoredExplanation``: an explanation and how well it simulated the unit."""

    openai_name = "ScoredExplanation"

    explanation: StrictStr
    scored_simulation: OpenAIScoredSimulation

    @property
    def score(self) -> float | None:
        """The preferred score (pooled ``ev_correlation_score``), ``None`` when undefined."""
        return self.scored_simulation.ev_correlation_score


class OpenAINeuronSimulationResults(BaseModel):
    """OpenAI's ``NeuronSimulationResults``: every scored explanation of one unit.

    An entry of ``scored_explanations`` may be ``None`` (``null`` in the published files).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit: UnitId
    scored_explanations: tuple[OpenAIScoredExplanation | None, ...]


class _ResultsIn(OpenAIObject):
    """A ``NeuronSimulationResults`` object as it is in the file (a ``NeuronId``, no model)."""

    openai_name = "NeuronSimulationResults"

    neuron_id: NeuronIdIn
    scored_explanations: tuple[OpenAIScoredExplanation | None, ...]


def _results(value: Any, where: Where, model: str, kind: str) -> OpenAINeuronSimulationResults:
    read = validate(_ResultsIn, value, where)
    unit = make_unit(model, read.neuron_id.layer_index, read.neuron_id.neuron_index, kind)
    return OpenAINeuronSimulationResults(unit=unit, scored_explanations=read.scored_explanations)


def simulation_results_from_openai(
    data: JSONObject, *, model: str = "gpt2-xl", kind: str = "mlp_neuron", source: str | None = None
) -> OpenAINeuronSimulationResults:
    """Convert one parsed ``NeuronSimulationResults`` object into
    `OpenAINeuronSimulationResults`.

    ``model`` and ``kind`` name the unit (the format records only layer and neuron index);
    ``source`` names the data in error messages. Missing ``dataclass_name`` fields, missing
    scores, distributions and ``uncalibrated_simulation``, and any key order are accepted.

    Raises:
        FormatError: a wrong ``dataclass_name``, a missing required field, an unknown field or
            activation scale, a wrongly typed or non-finite value, or lengths that do not match
            the tokens; the message names the JSON path.
        InvalidInputError: bad ``model`` or ``kind``.
    """
    return _results(data, Where(source), model, kind)


def read_openai_explanations(
    path: PathLike, *, model: str = "gpt2-xl", kind: str = "mlp_neuron"
) -> list[OpenAINeuronSimulationResults]:
    """Read an explanation JSONL file: one result per non-blank line, in file order.

    See `simulation_results_from_openai` for ``model``, ``kind`` and what is accepted.

    Raises:
        FormatError: the file is not UTF-8, or a line is not JSON or not a valid
            ``NeuronSimulationResults``; the message names the file, the line and the JSON path.
        InvalidInputError: bad ``model`` or ``kind``.
        OSError: the file cannot be read.
    """
    return [_results(value, where, model, kind) for value, where in iter_jsonl(path)]


def _simulation_to_openai(sim: OpenAISequenceSimulation) -> dict[str, Any]:
    return {
        "dataclass_name": "SequenceSimulation",
        "tokens": list(sim.tokens),
        "expected_activations": [float(x) for x in sim.expected_activations],
        "activation_scale": sim.activation_scale,
        "distribution_values": [[float(x) for x in v] for v in sim.distribution_values],
        "distribution_probabilities": [
            [float(x) for x in p] for p in sim.distribution_probabilities
        ],
        "uncalibrated_simulation": (
            None
            if sim.uncalibrated_simulation is None
            else _simulation_to_openai(sim.uncalibrated_simulation)
        ),
    }


def _scored_explanation_to_openai(entry: OpenAIScoredExplanation) -> dict[str, Any]:
    sim = entry.scored_simulation
    return {
        "dataclass_name": "ScoredExplanation",
        "explanation": entry.explanation,
        "scored_simulation": {
            "dataclass_name": "ScoredSimulation",
            "scored_sequence_simulations": [
                {
                    "dataclass_name": "ScoredSequenceSimulation",
                    "simulation": _simulation_to_openai(seq.simulation),
                    "true_activations": [float(x) for x in seq.true_activations],
                    "ev_correlation_score": seq.ev_correlation_score,
                    "rsquared_score": seq.rsquared_score,
                    "absolute_dev_explained_score": seq.absolute_dev_explained_score,
                }
                for seq in sim.scored_sequence_simulations
            ],
            "ev_correlation_score": sim.ev_correlation_score,
            "rsquared_score": sim.rsquared_score,
            "absolute_dev_explained_score": sim.absolute_dev_explained_score,
        },
    }


def simulation_results_to_openai(results: OpenAINeuronSimulationResults) -> dict[str, Any]:
    """Convert ``results`` into OpenAI's ``NeuronSimulationResults`` object (plain JSON data).

    ``unit.model`` and ``unit.kind`` are not representable and are dropped; ``None`` scores are
    written as ``None`` (``null``).
    """
    return {
        "dataclass_name": "NeuronSimulationResults",
        "neuron_id": unit_to_openai(results.unit),
        "scored_explanations": [
            None if e is None else _scored_explanation_to_openai(e)
            for e in results.scored_explanations
        ],
    }


def write_openai_explanations(
    results: Iterable[OpenAINeuronSimulationResults | Mapping[str, Any]], path: PathLike
) -> None:
    """Write ``results`` as explanation JSONL (UTF-8), one line each.

    An item may be a mapping such as `explanation_results_to_openai` returns; it is
    validated first, so the file always reads back with `read_openai_explanations`.

    Raises:
        FormatError: a mapping is not a valid ``NeuronSimulationResults`` (naming its position).
        OSError: the file cannot be written.
    """
    lines = []
    for i, item in enumerate(results):
        if not isinstance(item, OpenAINeuronSimulationResults):
            item = simulation_results_from_openai(item, source=f"results[{i}]")
        lines.append(dump_json(simulation_results_to_openai(item)) + "\n")
    write_text(path, "".join(lines))


def _scored_explanation_from_ours(result: ExplanationResult) -> OpenAIScoredExplanation:
    scored = result.scored
    if scored is None:
        raise FormatError(
            f"{result.unit}: the OpenAI format holds simulation scores, and this result has "
            f"none (its scorers: {', '.join(result.scores)}); export it as JSONL instead"
        )
    sequences = tuple(
        OpenAIScoredSequence(
            simulation=OpenAISequenceSimulation(
                tokens=seq.simulation.tokens,
                expected_activations=seq.simulation.expected_activations,
                activation_scale=_TO_OPENAI_SCALE[seq.simulation.scale],
                distribution_values=seq.simulation.distribution_values or (),
                distribution_probabilities=seq.simulation.distribution_probabilities or (),
            ),
            true_activations=seq.record.activations,
            ev_correlation_score=seq.correlation.value,
        )
        for seq in scored.sequences
    )
    return OpenAIScoredExplanation(
        explanation=result.explanation.text,
        scored_simulation=OpenAIScoredSimulation(
            scored_sequence_simulations=sequences,
            ev_correlation_score=scored.correlation.value,
            rsquared_score=scored.rsquared.value,
            absolute_dev_explained_score=scored.absolute_dev_explained.value,
        ),
    )


def explanation_results_to_openai(results: Sequence[ExplanationResult]) -> dict[str, Any]:
    """Export this library's results for one unit as one OpenAI ``NeuronSimulationResults``.

    Each result becomes a ``ScoredExplanation``: the explanation text, and per scored sequence
    the simulator's raw (uncalibrated) prediction (scale ``"simulated_0_10"`` becomes
    ``"simulated_normalized_activations"``; distributions are empty lists when there are none),
    the record's true activations and the sequence's correlation as ``ev_correlation_score``;
    per-sequence R² and absolute deviation explained are ``None``. The pooled scores are the
    result's ``correlation`` (top-and-random), ``rsquared`` and ``absolute_dev_explained``; an
    undefined score is ``None``.

    Beware: the R² and absolute-deviation numbers are this library's definitions, not OpenAI's.
    Here R² is ``1 - SSE/SST`` with the variance-based ``SST = sum((y - mean(y))^2)`` and absolute
    deviation explained is ``1 - sum|y - y_hat| / sum|y - median(y)|``, both on calibrated
    predictions (see `neuron_explainer.scorers.correlation`); OpenAI's code divides by the uncentred
    ``mean(y^2)`` and ``mean(|y|)`` instead. Only ``ev_correlation_score`` compares directly.

    Raises:
        InvalidInputError: ``results`` is empty, holds something other than
            `ExplanationResult`, or mixes units.
        FormatError: a result has no simulation score (``scored`` is ``None``: it was scored
            by classification scorers only), which the OpenAI format cannot hold.
    """
    if not results:
        raise InvalidInputError("no results to export; give at least one ExplanationResult")
    for i, result in enumerate(results):
        if not isinstance(result, ExplanationResult):
            raise InvalidInputError(
                f"results[{i}] is a {type(result).__name__}, not an ExplanationResult"
            )
    unit = results[0].unit
    for i, result in enumerate(results):
        if result.unit != unit:
            raise InvalidInputError(
                f"results[{i}] is for {result.unit} but results[0] is for {unit}; one "
                "NeuronSimulationResults holds the explanations of a single unit"
            )
    exported = OpenAINeuronSimulationResults(
        unit=unit, scored_explanations=tuple(_scored_explanation_from_ours(r) for r in results)
    )
    return simulation_results_to_openai(exported)
