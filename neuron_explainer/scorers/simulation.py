"""Scoring by simulation: simulate held-out records from an explanation, fit the calibration on
the calibration split, and correlate the prediction with the truth on the scored split.

`ascore_explanation` is the second half of `neuron_explainer.explain_neuron`; re-scoring an
explanation with another simulator calls it with the same splits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from neuron_explainer.errors import SimulationError
from neuron_explainer.interfaces import Simulator
from neuron_explainer.records import ActivationRecord
from neuron_explainer.records.splits import Splits
from neuron_explainer.results import Explanation, ScoredSimulation, SequenceSimulation
from neuron_explainer.scorers.correlation import (
    CalibrationMethod,
    fit_calibration,
    score_simulations,
)

__all__ = ["ascore_explanation", "simulate_records"]


async def simulate_records(
    simulator: Simulator, explanation: Explanation, records: Sequence[ActivationRecord]
) -> list[SequenceSimulation]:
    """Simulate ``records`` and check each simulation covers its record token for token.

    Raises:
        SimulationError: the simulator returned the wrong number of simulations, or one that
            does not align with its record's tokens.
    """
    if not records:
        return []
    simulations = await simulator.asimulate_many(explanation, [r.tokens for r in records])
    name = simulator.info.name
    if len(simulations) != len(records):
        raise SimulationError(
            f"simulator {name!r} returned {len(simulations)} simulations for {len(records)} "
            "excerpts"
        )
    for i, (record, simulation) in enumerate(zip(records, simulations, strict=True)):
        if not isinstance(simulation, SequenceSimulation):
            raise SimulationError(
                f"simulator {name!r} returned {type(simulation).__name__}, not a SequenceSimulation"
            )
        if simulation.tokens != record.tokens:
            raise SimulationError(
                f"simulator {name!r}: simulation {i} has {len(simulation.tokens)} tokens that do "
                f"not match the excerpt's {len(record.tokens)} tokens"
            )
    return simulations


async def ascore_explanation(
    simulator: Simulator,
    explanation: Explanation,
    splits: Splits,
    *,
    calibration: CalibrationMethod = "linear",
    score_split: Literal["valid", "test"] = "valid",
) -> ScoredSimulation:
    """Simulate the calibration split (unless ``calibration="none"``) and ``score_split`` of
    ``splits`` from ``explanation``, fit the calibration on the first and score the second.

    This is the second half of `explain_neuron`; re-scoring an explanation with another
    simulator calls it with the same splits.

    Raises:
        SimulationError: the simulator failed or returned misaligned simulations.
    """
    scored_set = splits.held_out(score_split)
    to_fit = splits.calibration.records if calibration != "none" else ()
    simulations = await simulate_records(simulator, explanation, (*to_fit, *scored_set.records))
    fit_sims, scored_sims = simulations[: len(to_fit)], simulations[len(to_fit) :]

    fitted = fit_calibration(
        calibration,
        np.concatenate([s.expected_activations for s in fit_sims]) if fit_sims else [],
        np.concatenate([r.activations for r in to_fit]) if to_fit else [],
    )
    n_top = len(scored_set.top)
    return score_simulations(
        score_split,
        list(zip(scored_set.top, scored_sims[:n_top], strict=True)),
        list(zip(scored_set.random, scored_sims[n_top:], strict=True)),
        fitted,
    )
