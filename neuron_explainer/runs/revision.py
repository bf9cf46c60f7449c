"""Revision: the explainer sees where the simulation of its explanation went wrong on the train
split, and on sentences it wrote itself to test the explanation (when the unit's model can be
run on new text: a `Probe`), and writes a better one; the revision is kept only if it scores
better on calibration.

Held-out discipline: the disagreements come from the train records, which the explainer saw
already; the choice between the original and the revision is made on the calibration split,
like best-of-k's; the valid and test splits are never looked at. The scoring mode is the
run's: with a neutral baseline, both are compared contrastively.

What happened is kept in the chosen explanation's ``data["revision"]``: both texts, both
calibration correlations, which was kept and why, the disagreements shown, and the test
sentences with the unit's true and the simulated peak on each (or why there were none).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from pydantic import JsonValue

from neuron_explainer.errors import ExplanationError, InvalidInputError
from neuron_explainer.explainers.revising import (
    Disagreement,
    Probe,
    RevisingExplainer,
    SentenceWritingExplainer,
)
from neuron_explainer.interfaces import Explainer, Simulator
from neuron_explainer.options import DEFAULT_MAX_FAILED_FRACTION, DEFAULT_TEST_SENTENCES
from neuron_explainer.records import ActivationRecord
from neuron_explainer.results import Explanation, PromptScale, SequenceSimulation, SimulationFailure
from neuron_explainer.runs.best_of import acalibration_scores
from neuron_explainer.scorers.simulation import simulate_each

__all__ = [
    "DISAGREEMENTS_SHOWN",
    "arevise_explanation",
    "check_can_revise",
    "describe_revision",
    "find_disagreements",
]

DISAGREEMENTS_SHOWN = 6
"""Misses and false positives on the train split shown to the explainer (each)."""
TEST_DISAGREEMENTS_SHOWN = 3
"""Misses and false positives on its test sentences shown to the explainer (each)."""

_CONTEXT = 6
"""Tokens of context shown on each side of a disagreeing token."""
_MIN_GAP = 2.0
"""A disagreement differs by at least this much on the 0-10 scale."""


def check_can_revise(explainer: Explainer) -> None:
    """Refuse, before anything is spent, an explainer that cannot revise.

    Raises:
        InvalidInputError: ``explainer`` has no ``arevise`` (`RevisingExplainer`).
    """
    if not isinstance(explainer, RevisingExplainer):
        raise InvalidInputError(
            f"explainer {explainer.info.name!r} cannot revise an explanation (it has no "
            "arevise); use an LLM explainer (e.g. 'openai:MODEL') or turn revision off"
        )


def _levels(simulation: SequenceSimulation, scale: PromptScale) -> list[float]:
    """The simulation's predictions on the 0-10 prompt scale."""
    values = simulation.expected_activations
    if simulation.scale == "simulated_0_10":
        return [float(v) for v in values]
    return [float(v) for v in scale.discretize(values)]


def find_disagreements(
    records: Sequence[ActivationRecord],
    outcomes: Sequence[SequenceSimulation | SimulationFailure],
    scale: PromptScale,
    n: int = DISAGREEMENTS_SHOWN,
) -> list[Disagreement]:
    """The ``n`` largest misses and the ``n`` largest false positives of ``outcomes`` (one per
    record; failed ones are skipped) against ``records``' true activations, both on the 0-10
    prompt ``scale``; a disagreement differs by at least 2. Misses first, each kind largest
    first."""
    found: list[tuple[float, Disagreement]] = []
    for r, (record, outcome) in enumerate(zip(records, outcomes, strict=True)):
        if not isinstance(outcome, SequenceSimulation):
            continue
        truth = scale.discretize(record.activations)
        predicted = _levels(outcome, scale)
        for i, (t, p) in enumerate(zip(truth, predicted, strict=True)):
            gap = t - p
            if abs(gap) < _MIN_GAP:
                continue
            kind = "miss" if gap > 0 else "false_positive"
            found.append(
                (
                    abs(gap),
                    Disagreement(
                        kind=kind,
                        record=r,
                        position=i,
                        true_level=t,
                        predicted=p,
                        before=tuple(record.tokens[max(0, i - _CONTEXT) : i]),
                        token=record.tokens[i],
                        after=tuple(record.tokens[i + 1 : i + 1 + _CONTEXT]),
                    ),
                )
            )
    found.sort(key=lambda item: (-item[0], item[1].record, item[1].position))
    misses = [d for _, d in found if d.kind == "miss"][:n]
    false_positives = [d for _, d in found if d.kind == "false_positive"][:n]
    return misses + false_positives


async def arevise_explanation(
    explainer: Explainer,
    simulator: Simulator,
    explanation: Explanation,
    train_records: Sequence[ActivationRecord],
    calibration_records: Sequence[ActivationRecord],
    *,
    max_failed_fraction: float = DEFAULT_MAX_FAILED_FRACTION,
    baseline: Sequence[SequenceSimulation | SimulationFailure] | None = None,
    probe: Probe | None = None,
    test_sentences: int = DEFAULT_TEST_SENTENCES,
) -> Explanation:
    """Simulate ``explanation`` on the train records, show the explainer its largest misses
    and false positives (`find_disagreements`), and keep its revision only if the revision's
    simulation correlates better with the calibration records (contrastively, with the
    neutral ``baseline`` of those records). Returns the kept explanation, with
    ``data["revision"]`` saying what happened (also when nothing was revised: no
    disagreement, the explainer gave no usable revision, or the revision was the same text).

    With a ``probe`` (the unit's true activations on new text) and ``test_sentences`` above 0,
    an explainer that can (`SentenceWritingExplainer`) first writes that many sentences to test
    its explanation; the misses and false positives on them are shown too. Without one, or
    when the explainer writes none, the revision goes on from the train split alone and
    ``data["revision"]["tests"]`` says why.

    Raises:
        InvalidInputError: ``explainer`` cannot revise (it has no ``arevise``).
        SimulationError: the simulation of both candidates failed on calibration.
        LLMError: a call to the explainer's or simulator's LLM failed.
        InvalidInputError: the probe returned another number of records than sentences.
    """
    check_can_revise(explainer)
    assert isinstance(explainer, RevisingExplainer)
    scale = explanation.scale or PromptScale.for_records(train_records)
    note: dict[str, JsonValue] = {
        "original": explanation.text,
        "revised": None,
        "kept": "original",
        "scored_on": "calibration",
        "scoring": "plain" if baseline is None else "contrastive",
    }

    def kept(which: Explanation, **more: JsonValue) -> Explanation:
        data = {**explanation.data, "revision": {**note, **more}}
        return which.model_copy(update={"data": data})

    if scale is None:
        return kept(explanation, reason="no train record has a positive activation")
    outcomes = await simulate_each(simulator, explanation, train_records)
    found = find_disagreements(train_records, outcomes, scale)
    tests, note["tests"] = await _tested(
        explainer, simulator, explanation, train_records, scale, probe, test_sentences
    )
    found += tests
    note["disagreements"] = [d.as_json() for d in found]
    if not found:
        return kept(explanation, reason="the simulation agrees with every train record")
    try:
        revised = await explainer.arevise(train_records, explanation, found)
    except ExplanationError as exc:
        return kept(explanation, reason=f"no usable revision: {exc}")
    note["revised"] = revised.text
    if revised.text == explanation.text:
        return kept(explanation, reason="the revision is the same text")
    values, compared_on = await acalibration_scores(
        simulator,
        [explanation, revised],
        calibration_records,
        max_failed_fraction=max_failed_fraction,
        baseline=baseline,
    )
    note["calibration_correlation"] = {"original": values[0], "revised": values[1]}
    note["compared_on"] = compared_on
    original, new = values
    if new is not None and (original is None or new > original):
        note["kept"] = "revised"
        return kept(revised, reason="the revision scores better on calibration")
    return kept(explanation, reason="the revision does not score better on calibration")


async def _tested(
    explainer: Explainer,
    simulator: Simulator,
    explanation: Explanation,
    train_records: Sequence[ActivationRecord],
    scale: PromptScale,
    probe: Probe | None,
    n: int,
) -> tuple[list[Disagreement], dict[str, JsonValue]]:
    """The disagreements on the explainer's own test sentences, and what the note keeps of
    them (each sentence with its true and simulated peak on the 0-10 scale, or why none)."""
    if n <= 0:
        return [], {"reason": "test sentences are off"}
    if probe is None:
        return [], {"reason": "the unit's model was not given, so new text cannot be run"}
    if not isinstance(explainer, SentenceWritingExplainer):
        return [], {"reason": f"explainer {explainer.info.name!r} cannot write test sentences"}
    try:
        sentences = await explainer.apropose_tests(train_records, explanation, n)
    except ExplanationError as exc:
        return [], {"reason": f"no usable test sentence: {exc}"}
    records = list(await probe(sentences))
    if len(records) != len(sentences):
        raise InvalidInputError(
            f"the probe returned {len(records)} records for {len(sentences)} sentences"
        )
    outcomes = await simulate_each(simulator, explanation, records)
    found = find_disagreements(records, outcomes, scale, TEST_DISAGREEMENTS_SHOWN)
    shown: list[JsonValue] = []
    for text, record, outcome in zip(sentences, records, outcomes, strict=True):
        predicted = (
            round(max(_levels(outcome, scale)), 3)
            if isinstance(outcome, SequenceSimulation)
            else None
        )
        true = max(scale.discretize(record.activations)) if record.activations else None
        shown.append({"text": text, "true_max": true, "predicted_max": predicted})
    return [dataclasses.replace(d, source="test") for d in found], {"sentences": shown}


def describe_revision(explanation: Explanation) -> str | None:
    """One line for people on what revising ``explanation`` did (``None`` when it was not
    revised): which text was kept and both calibration correlations, or why nothing was
    compared."""
    note = explanation.data.get("revision")
    if not isinstance(note, dict):
        return None
    kept = note.get("kept")
    scores = note.get("calibration_correlation")
    reason = note.get("reason")
    if not isinstance(scores, dict):
        return f"kept the original ({reason})"

    def fmt(value: object) -> str:
        return f"{value:.3f}" if isinstance(value, int | float) else "undefined"

    return (
        f"kept the {kept}: original {note.get('original')!r} {fmt(scores.get('original'))}, "
        f"revised {note.get('revised')!r} {fmt(scores.get('revised'))} "
        f"({note.get('scoring')} correlation on calibration)"
    )
