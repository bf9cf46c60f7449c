"""Best-of-k: sample k explanations and keep the one whose simulation best matches the
calibration split.

Only the train records reach the explainer and only the calibration records reach the
simulator here, so choosing among candidates never looks at the valid or test split that scores
the result. Each candidate is scored by the Pearson correlation pooled over every token of the
calibration records (`neuron_explainer.scorers.correlation.correlation`, invariant to the
calibration fitted later); the best defined score wins, ties go to the earlier sample.

Candidates are compared on the same excerpts: a calibration excerpt one candidate's simulation
failed on is left out of every candidate's score. A candidate with more failed excerpts than
``max_failed_fraction`` is left out of the choice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from pydantic import JsonValue

from neuron_explainer._aio import gather_or_cancel
from neuron_explainer.errors import ExplanationError, InvalidInputError, SimulationError
from neuron_explainer.interfaces import Explainer, Simulator
from neuron_explainer.options import DEFAULT_MAX_FAILED_FRACTION
from neuron_explainer.records import ActivationRecord
from neuron_explainer.results import (
    Explanation,
    Score,
    SequenceSimulation,
    SimulationFailure,
    predicted_values,
)
from neuron_explainer.scorers.correlation import correlation
from neuron_explainer.scorers.simulation import check_failures, simulate_each, simulate_records

__all__ = ["CandidateExplainer", "abest_of_k", "acalibration_scores", "calibration_score"]


@runtime_checkable
class CandidateExplainer(Protocol):
    """An explainer that can sample several candidates at once (e.g. `LLMExplainer`)."""

    async def aexplain_candidates(
        self, records: Sequence[ActivationRecord], k: int
    ) -> list[Explanation]:
        """Up to ``k`` usable explanations of ``records``."""
        ...  # pragma: no cover - protocol


async def calibration_score(
    simulator: Simulator, explanation: Explanation, records: Sequence[ActivationRecord]
) -> Score:
    """Pearson correlation between ``simulator``'s predictions for ``explanation`` and the true
    activations, pooled over every token of ``records``.

    Raises:
        SimulationError: the simulation of an excerpt failed, or the simulator returned
            simulations that do not cover the records token for token.
    """
    simulations = await simulate_records(simulator, explanation, records)
    truth = np.concatenate([r.activations for r in records])
    predicted = np.concatenate([s.expected_activations for s in simulations])
    return correlation(truth, predicted)


async def _candidates(
    explainer: Explainer, records: Sequence[ActivationRecord], k: int
) -> list[Explanation]:
    if isinstance(explainer, CandidateExplainer):
        return list(await explainer.aexplain_candidates(records, k))
    return await gather_or_cancel(*(explainer.aexplain(records) for _ in range(k)))


Outcomes = list[SequenceSimulation | SimulationFailure]
"""A candidate's simulation of each calibration record."""


async def _simulate_candidates(
    simulator: Simulator,
    unique: Sequence[Explanation],
    records: Sequence[ActivationRecord],
    max_failed_fraction: float,
    k: int,
) -> list[Outcomes | SimulationError]:
    """Each candidate's outcome on every calibration record, or the `SimulationError` that
    stopped it (also: more than ``max_failed_fraction`` of its excerpts failed).

    Raises:
        SimulationError: every candidate's simulation failed.
        Exception: any error that is not a simulation's failure.
    """

    async def one(candidate: Explanation) -> Outcomes:
        outcomes = await simulate_each(simulator, candidate, records)
        failures = [o for o in outcomes if isinstance(o, SimulationFailure)]
        check_failures(simulator.info.name, len(records), failures, max_failed_fraction)
        return outcomes

    results = await asyncio.gather(*(one(c) for c in unique), return_exceptions=True)
    simulated: list[Outcomes | SimulationError] = []
    for outcome in results:
        if isinstance(outcome, BaseException) and not isinstance(outcome, SimulationError):
            raise outcome
        simulated.append(outcome)
    if all(isinstance(s, SimulationError) for s in simulated):
        problems = "; ".join(str(s) for s in simulated)
        raise SimulationError(f"the simulation of every best-of-{k} candidate failed: {problems}")
    return simulated


def _common_scores(
    simulated: Sequence[Outcomes | SimulationError],
    records: Sequence[ActivationRecord],
    baseline: Outcomes | None = None,
) -> tuple[list[Score | SimulationError], int]:
    """Each candidate's correlation over the records every usable candidate (and the neutral
    ``baseline``, when given) simulated, and how many records that is; with a baseline, of
    each prediction minus the baseline's (contrastive)."""
    usable = [s for s in simulated if not isinstance(s, SimulationError)]
    if baseline is not None:
        usable.append(baseline)
    common = [
        i for i in range(len(records)) if all(isinstance(s[i], SequenceSimulation) for s in usable)
    ]

    def values(outcome: SequenceSimulation | SimulationFailure, i: int) -> tuple[float, ...]:
        base = baseline[i] if baseline is not None else None
        # only common records get here: every outcome (and the baseline) simulated them
        assert isinstance(outcome, SequenceSimulation) and not isinstance(base, SimulationFailure)
        return predicted_values(outcome, base)

    scores: list[Score | SimulationError] = []
    for outcomes in simulated:
        if isinstance(outcomes, SimulationError):
            scores.append(outcomes)
        elif not common:
            scores.append(
                Score.undefined("no calibration record was simulated for every candidate")
            )
        else:
            truth = np.concatenate([records[i].activations for i in common])
            predicted = np.concatenate([values(outcomes[i], i) for i in common])
            scores.append(correlation(truth, predicted))
    return scores, len(common)


async def _score_candidates(
    simulator: Simulator,
    unique: Sequence[Explanation],
    calibration_records: Sequence[ActivationRecord],
    k: int,
    max_failed_fraction: float,
    baseline: Outcomes | None = None,
) -> tuple[list[Score | SimulationError | None], int]:
    """Each distinct candidate's calibration score, or the `SimulationError` that stopped it
    (``[None]`` for a single candidate: nothing to choose), compared on the calibration
    records every usable candidate (and the baseline) simulated; and how many records that
    is."""
    if len(unique) == 1:
        return [None], 0
    if not calibration_records:
        raise InvalidInputError(
            f"best-of-{k} has {len(unique)} distinct candidates but no calibration records to "
            "choose between them"
        )
    simulated = await _simulate_candidates(
        simulator, unique, calibration_records, max_failed_fraction, k
    )
    scores, compared_on = _common_scores(simulated, calibration_records, baseline)
    return list(scores), compared_on


async def acalibration_scores(
    simulator: Simulator,
    candidates: Sequence[Explanation],
    calibration_records: Sequence[ActivationRecord],
    *,
    max_failed_fraction: float = DEFAULT_MAX_FAILED_FRACTION,
    baseline: Sequence[SequenceSimulation | SimulationFailure] | None = None,
) -> tuple[list[float | None], int]:
    """Each of two or more distinct ``candidates``' calibration correlation, compared as
    best-of-k compares them (on the records every usable candidate, and the ``baseline``,
    simulated; contrastively with a baseline); ``None`` where undefined or its simulation
    failed. Also returns how many records they were compared on.

    Raises:
        InvalidInputError: fewer than two distinct candidates, or no calibration records.
        SimulationError: the simulation of every candidate failed.
    """
    if len({c.text for c in candidates}) != len(candidates) or len(candidates) < 2:
        raise InvalidInputError("compare two or more candidates with distinct texts")
    scores, compared_on = await _score_candidates(
        simulator,
        candidates,
        calibration_records,
        len(candidates),
        max_failed_fraction,
        list(baseline) if baseline is not None else None,
    )
    return [s.value if isinstance(s, Score) else None for s in scores], compared_on


def _note(score: Score | SimulationError | None) -> dict[str, JsonValue]:
    """What the candidate table says about a candidate's score."""
    if isinstance(score, Score):
        if score.value is not None:
            return {"calibration_correlation": score.value}
        return {"calibration_correlation": None, "reason": score.reason}
    if isinstance(score, SimulationError):
        return {"calibration_correlation": None, "reason": f"simulation failed: {score}"}
    return {"calibration_correlation": None, "reason": "the only distinct candidate"}


async def abest_of_k(
    explainer: Explainer,
    simulator: Simulator,
    train_records: Sequence[ActivationRecord],
    calibration_records: Sequence[ActivationRecord],
    k: int,
    *,
    max_failed_fraction: float = DEFAULT_MAX_FAILED_FRACTION,
    baseline: Sequence[SequenceSimulation | SimulationFailure] | None = None,
) -> tuple[Explanation, list[tuple[Explanation, float | None]]]:
    """Generate ``k`` candidate explanations from ``train_records`` and keep the one whose
    simulation correlates best with ``calibration_records``.

    Candidates come from ``explainer.aexplain_candidates(train_records, k)`` when the explainer
    has it (`CandidateExplainer`), else from ``k`` calls of ``aexplain``. Candidates with the
    same text are scored once. With a single distinct candidate nothing is simulated (its score
    is ``None``). Candidates are compared on the calibration records that every candidate
    simulated (an excerpt one failed on counts for none). A candidate whose simulation fails
    (`SimulationError`; also more than ``max_failed_fraction`` of its excerpts failing) or
    whose correlation is undefined is kept out of the choice; if no candidate has a defined
    score the first is chosen, and if every simulation failed the error is raised.

    With ``baseline`` (the neutral explanation's simulation of each calibration record, made
    once for the unit), candidates are compared contrastively: on their prediction minus the
    baseline's, over the records the baseline simulated too (``data["best_of"]["scoring"]``
    says which).

    The chosen explanation comes back with ``data["candidates"]`` (every distinct candidate:
    text, raw output, number of samples that gave it, calibration correlation or why it has
    none) and ``data["best_of"]`` (``k``, the index chosen, the split scored on, its number
    of records and ``compared_on``: how many of them every candidate simulated).

    Returns:
        The chosen explanation, and every distinct candidate with its calibration correlation
        (``None`` when undefined, failed or not simulated), in the order sampled.

    Raises:
        InvalidInputError: ``k < 1``, or several distinct candidates and no calibration records
            to choose with.
        ExplanationError: the explainer produced no candidate.
        SimulationError: the simulation of every candidate failed.
    """
    if k < 1:
        raise InvalidInputError(f"best-of-k needs k >= 1, got {k}")
    if baseline is not None and len(baseline) != len(calibration_records):
        raise InvalidInputError(
            f"the baseline has {len(baseline)} simulations for {len(calibration_records)} "
            "calibration records"
        )
    sampled = await _candidates(explainer, train_records, k)
    if not sampled:
        raise ExplanationError(f"explainer {explainer.info.name!r} produced no candidate")
    distinct: dict[str, Explanation] = {}
    counts: dict[str, int] = {}
    for candidate in sampled:
        distinct.setdefault(candidate.text, candidate)
        counts[candidate.text] = counts.get(candidate.text, 0) + 1
    unique = list(distinct.values())

    scores, compared_on = await _score_candidates(
        simulator,
        unique,
        calibration_records,
        k,
        max_failed_fraction,
        list(baseline) if baseline is not None else None,
    )
    values = [s.value if isinstance(s, Score) else None for s in scores]
    defined = [i for i, v in enumerate(values) if v is not None]
    chosen = max(defined, key=lambda i: (values[i], -i)) if defined else 0

    table: list[JsonValue] = [
        {"text": c.text, "raw_output": c.raw_output, "samples": counts[c.text], **_note(s)}
        for c, s in zip(unique, scores, strict=True)
    ]
    best = unique[chosen]
    data: dict[str, JsonValue] = {
        **best.data,
        "candidates": table,
        "best_of": {
            "k": k,
            "chosen": chosen,
            "scored_on": "calibration",
            "scoring": "plain" if baseline is None else "contrastive",
            "calibration_records": len(calibration_records),
            "compared_on": compared_on,
        },
    }
    return best.model_copy(update={"data": data}), list(zip(unique, values, strict=True))
