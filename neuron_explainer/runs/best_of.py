"""Best-of-k: sample k explanations and keep the one whose simulation best matches the
calibration split.

Only the train records reach the explainer and only the calibration records reach the
simulator here, so choosing among candidates never looks at the valid or test split that scores
the result. Each candidate is scored by the Pearson correlation pooled over every calibration
token (`neuron_explainer.scorers.correlation.correlation`, invariant to the calibration fitted
later); the best defined score wins, ties go to the earlier sample.
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
from neuron_explainer.records import ActivationRecord
from neuron_explainer.results import Explanation, Score
from neuron_explainer.scorers.correlation import correlation

__all__ = ["CandidateExplainer", "abest_of_k", "calibration_score"]


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
        SimulationError: the simulator failed, or returned simulations that do not cover the
            records token for token.
    """
    simulations = await simulator.asimulate_many(explanation, [r.tokens for r in records])
    if len(simulations) != len(records) or any(
        s.tokens != r.tokens for s, r in zip(simulations, records, strict=False)
    ):
        raise SimulationError(
            f"simulator {simulator.info.name!r} returned simulations that do not cover the "
            "calibration records token for token"
        )
    truth = np.concatenate([r.activations for r in records])
    predicted = np.concatenate([s.expected_activations for s in simulations])
    return correlation(truth, predicted)


async def _candidates(
    explainer: Explainer, records: Sequence[ActivationRecord], k: int
) -> list[Explanation]:
    if isinstance(explainer, CandidateExplainer):
        return list(await explainer.aexplain_candidates(records, k))
    return await gather_or_cancel(*(explainer.aexplain(records) for _ in range(k)))


async def _score_candidates(
    simulator: Simulator,
    unique: Sequence[Explanation],
    calibration_records: Sequence[ActivationRecord],
    k: int,
) -> list[Score | SimulationError | None]:
    """Each distinct candidate's calibration score, or the `SimulationError` that stopped it
    (``[None]`` for a single candidate: nothing to choose)."""
    if len(unique) == 1:
        return [None]
    if not calibration_records:
        raise InvalidInputError(
            f"best-of-{k} has {len(unique)} distinct candidates but no calibration records to "
            "choose between them"
        )
    outcomes = await asyncio.gather(
        *(calibration_score(simulator, c, calibration_records) for c in unique),
        return_exceptions=True,
    )
    scores: list[Score | SimulationError | None] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, SimulationError):
            raise outcome
        scores.append(outcome)
    if all(isinstance(s, SimulationError) for s in scores):
        problems = "; ".join(str(s) for s in scores)
        raise SimulationError(f"the simulation of every best-of-{k} candidate failed: {problems}")
    return scores


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
) -> tuple[Explanation, list[tuple[Explanation, float | None]]]:
    """Generate ``k`` candidate explanations from ``train_records`` and keep the one whose
    simulation correlates best with ``calibration_records``.

    Candidates come from ``explainer.aexplain_candidates(train_records, k)`` when the explainer
    has it (`CandidateExplainer`), else from ``k`` calls of ``aexplain``. Candidates with the
    same text are scored once. With a single distinct candidate nothing is simulated (its score
    is ``None``). A candidate whose simulation fails (`SimulationError`) or whose correlation is
    undefined is kept out of the choice; if no candidate has a defined score the first is
    chosen, and if every simulation failed the error is raised.

    The chosen explanation comes back with ``data["candidates"]`` (every distinct candidate:
    text, raw output, number of samples that gave it, calibration correlation or why it has
    none) and ``data["best_of"]`` (``k``, the index chosen, the split scored on and its number
    of records).

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
    sampled = await _candidates(explainer, train_records, k)
    if not sampled:
        raise ExplanationError(f"explainer {explainer.info.name!r} produced no candidate")
    distinct: dict[str, Explanation] = {}
    counts: dict[str, int] = {}
    for candidate in sampled:
        distinct.setdefault(candidate.text, candidate)
        counts[candidate.text] = counts.get(candidate.text, 0) + 1
    unique = list(distinct.values())

    scores = await _score_candidates(simulator, unique, calibration_records, k)
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
            "calibration_records": len(calibration_records),
        },
    }
    return best.model_copy(update={"data": data}), list(zip(unique, values, strict=True))
