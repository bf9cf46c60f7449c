"""Scoring by simulation: simulate held-out records from an explanation, fit the calibration on
the calibration split, and correlate the prediction with the truth on the scored split.

Every excerpt is simulated on its own terms (`simulate_each`): one that cannot be simulated is
a counted failure, left out of the fit and the scores, never scored as zeros. A unit fails
only when more than ``max_failed_fraction`` of its excerpts failed (`check_failures`).

`ascore_explanation` is the second half of `neuron_explainer.explain_neuron`; re-scoring an
explanation with another simulator calls it with the same splits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from neuron_explainer.errors import InvalidInputError, SimulationError
from neuron_explainer.interfaces import Simulator, record_simulation_stats
from neuron_explainer.llm.usage import track_usage
from neuron_explainer.options import DEFAULT_MAX_FAILED_FRACTION, DEFAULT_NEUTRAL_EXPLANATION
from neuron_explainer.records import ActivationRecord
from neuron_explainer.records.splits import HeldOutSet, Splits
from neuron_explainer.results import (
    NEUTRAL_EXPLAINER,
    ComponentInfo,
    Explanation,
    FailedSequence,
    ScoredSimulation,
    ScoringMode,
    SequenceSimulation,
    SimulationFailure,
    SimulationStats,
    predicted_values,
)
from neuron_explainer.scorers._memo import simulate_reusing
from neuron_explainer.scorers.correlation import (
    CalibrationMethod,
    fit_calibration,
    score_simulations,
)

__all__ = [
    "NeutralBaseline",
    "ascore_explanation",
    "asimulate_neutral",
    "check_failures",
    "is_constant",
    "neutral_explanation",
    "simulate_each",
    "simulate_records",
]

Outcome = SequenceSimulation | SimulationFailure
"""What simulating one excerpt gave."""


def is_constant(simulation: SequenceSimulation) -> bool:
    """Whether ``simulation`` predicts the same value for every token of an excerpt of two or
    more tokens (a constant simulation: its own correlation is undefined)."""
    values = simulation.expected_activations
    return len(values) >= 2 and all(v == values[0] for v in values)


def _checked(name: str, outcome: object, record: ActivationRecord, i: int) -> Outcome:
    """``outcome``, or a ``"misaligned"`` failure when its tokens are not the record's.

    Raises:
        SimulationError: ``outcome`` is neither a simulation nor a failure.
    """
    if isinstance(outcome, SimulationFailure):
        return outcome
    if not isinstance(outcome, SequenceSimulation):
        raise SimulationError(
            f"simulator {name!r} returned {type(outcome).__name__}, not a SequenceSimulation "
            "or a SimulationFailure"
        )
    if outcome.tokens != record.tokens:
        return SimulationFailure(
            reason="misaligned",
            message=f"simulator {name!r}: simulation {i} has {len(outcome.tokens)} tokens that "
            f"do not match the excerpt's {len(record.tokens)} tokens",
        )
    return outcome


async def simulate_each(
    simulator: Simulator, explanation: Explanation, records: Sequence[ActivationRecord]
) -> list[Outcome]:
    """Simulate each of ``records`` (`Simulator.asimulate_each`): in their order, a simulation
    that covers its record token for token, or the `SimulationFailure` saying why that excerpt
    could not be simulated (a simulation of other tokens is a ``"misaligned"`` failure).

    What it did is recorded in the open simulation meters
    (`neuron_explainer.interfaces.track_simulations`): excerpts attempted, failed (by reason),
    constant (`is_constant`), and the prompt and completion tokens the simulator's LLM calls
    used (those also when it raises). Inside `neuron_explainer.scorers._memo.reusing` (one
    unit's explanation, a batch's neutral explanation), an excerpt already simulated under the
    same explanation text by the same simulator is reused, not simulated or counted again.

    Raises:
        SimulationError: the simulator returned another number of outcomes than records, or
            something that is neither a simulation nor a failure.
        Exception: whatever `Simulator.asimulate_each` raises (errors other than an excerpt's
            failure: authentication, budget, capability, ...).
    """
    if not records:
        return []
    return await simulate_reusing(
        simulator,
        explanation.text,
        records,
        lambda todo: _simulate_now(simulator, explanation, todo),
    )


async def _simulate_now(
    simulator: Simulator, explanation: Explanation, records: Sequence[ActivationRecord]
) -> list[Outcome]:
    """`simulate_each` without the memos."""
    name = simulator.info.name
    stats = SimulationStats()
    try:
        with track_usage() as usage:
            raw = await simulator.asimulate_each(explanation, [r.tokens for r in records])
        if len(raw) != len(records):
            raise SimulationError(
                f"simulator {name!r} returned {len(raw)} simulations for {len(records)} excerpts"
            )
        outcomes = [
            _checked(name, o, r, i) for i, (o, r) in enumerate(zip(raw, records, strict=True))
        ]
        reasons = Counter(o.reason for o in outcomes if isinstance(o, SimulationFailure))
        stats = SimulationStats(
            attempted=len(records),
            failed=sum(reasons.values()),
            failure_reasons=dict(sorted(reasons.items())),
            constant=sum(isinstance(o, SequenceSimulation) and is_constant(o) for o in outcomes),
        )
        return outcomes
    finally:
        spent = usage.summary
        record_simulation_stats(
            stats.model_copy(
                update={
                    "prompt_tokens": spent.prompt_tokens,
                    "completion_tokens": spent.completion_tokens,
                }
            )
        )


async def simulate_records(
    simulator: Simulator, explanation: Explanation, records: Sequence[ActivationRecord]
) -> list[SequenceSimulation]:
    """Simulate ``records`` and check each simulation covers its record token for token;
    any excerpt that cannot be simulated fails the whole call (`simulate_each` keeps them
    apart instead).

    Raises:
        SimulationError: an excerpt could not be simulated (its reason class in ``reason``),
            the simulator returned the wrong number of simulations, or one that does not
            align with its record's tokens.
    """
    outcomes = await simulate_each(simulator, explanation, records)
    for outcome in outcomes:
        if isinstance(outcome, SimulationFailure):
            raise SimulationError(outcome.message, reason=outcome.reason)
    return [o for o in outcomes if isinstance(o, SequenceSimulation)]


def check_failures(
    simulator: str,
    attempted: int,
    failures: Sequence[SimulationFailure],
    max_failed_fraction: float,
) -> None:
    """Accept ``failures`` among ``attempted`` excerpts when their share is at most
    ``max_failed_fraction`` and some excerpt was simulated.

    Raises:
        SimulationError: more failed, or all of them; the message says how many of how many,
            by reason, and the first failure's message; its ``reason`` is the commonest
            reason class.
    """
    if failures and len(failures) == attempted:
        raise _failed(
            f"simulator {simulator!r} could not simulate any of {attempted} excerpts", failures
        )
    if not attempted or len(failures) / attempted <= max_failed_fraction:
        return
    raise _failed(
        f"simulator {simulator!r} could not simulate {len(failures)} of {attempted} excerpts "
        f"({len(failures) / attempted:.0%}, more than max_failed_fraction "
        f"{max_failed_fraction:.0%})",
        failures,
    )


def _failed(head: str, failures: Sequence[SimulationFailure]) -> SimulationError:
    """A `SimulationError`: ``head``, the failures by reason and the first one's message; its
    ``reason`` is the commonest reason class."""
    reasons = Counter(f.reason for f in failures).most_common()
    by_reason = ", ".join(f"{reason} {n}" for reason, n in reasons)
    return SimulationError(
        f"{head}: {by_reason}; first: {failures[0].message}", reason=reasons[0][0]
    )


@dataclass(frozen=True)
class _Slot:
    """One excerpt to simulate: where it sits in the splits."""

    split: Literal["calibration", "valid", "test"]
    source: Literal["top", "random"]
    index: int
    record: ActivationRecord


def _slots(split: Literal["calibration", "valid", "test"], held: HeldOutSet) -> list[_Slot]:
    return [
        *(_Slot(split, "top", i, r) for i, r in enumerate(held.top)),
        *(_Slot(split, "random", i, r) for i, r in enumerate(held.random)),
    ]


def _simulated(
    slots: Sequence[_Slot], outcomes: Sequence[Outcome], split: str, source: str | None = None
) -> list[tuple[ActivationRecord, SequenceSimulation]]:
    """The simulated excerpts of ``split`` (and ``source``), paired with their records."""
    return [
        (slot.record, outcome)
        for slot, outcome in zip(slots, outcomes, strict=True)
        if slot.split == split
        and source in (None, slot.source)
        and isinstance(outcome, SequenceSimulation)
    ]


def neutral_explanation(text: str = DEFAULT_NEUTRAL_EXPLANATION) -> Explanation:
    """The neutral explanation: ``text``, which says nothing about any unit, as an
    `Explanation` (explainer ``"neutral"``).

    Raises:
        InvalidInputError: ``text`` is empty.
    """
    if not text.strip():
        raise InvalidInputError("the neutral explanation must not be empty")
    return Explanation(text=text, explainer=ComponentInfo(name=NEUTRAL_EXPLAINER))


@dataclass(frozen=True)
class NeutralBaseline:
    """The neutral explanation's simulation of a unit's held-out excerpts: made once per unit
    (`asimulate_neutral`) and shared by every candidate explanation of it, for contrastive
    scores and for sensitivity.

    Attributes:
        explanation: the neutral explanation simulated.
        outcomes: by (split, source, index in the split's ``source`` records), the
            simulation or why it failed.
    """

    explanation: Explanation
    outcomes: Mapping[tuple[str, str, int], Outcome]

    def covers(self, split: str) -> bool:
        """Whether the baseline simulated ``split``'s excerpts."""
        return any(key[0] == split for key in self.outcomes)

    def records_of(self, split: str) -> list[Outcome]:
        """The outcomes of ``split`` in its order (top records, then random ones)."""
        keys = sorted(
            (k for k in self.outcomes if k[0] == split), key=lambda k: (k[1] != "top", k[2])
        )
        return [self.outcomes[k] for k in keys]


async def asimulate_neutral(
    simulator: Simulator,
    splits: Splits,
    *,
    score_split: Literal["valid", "test"] = "valid",
    calibration: bool = True,
    text: str = DEFAULT_NEUTRAL_EXPLANATION,
) -> NeutralBaseline:
    """Simulate the neutral explanation ``text`` on ``score_split`` (and the calibration
    split when ``calibration``) of ``splits``: one baseline per unit, for
    `ascore_explanation`'s contrastive scores and sensitivity and for best-of-k's contrastive
    choice. Excerpts it cannot simulate are failures in the baseline (never zeros).

    Raises:
        InvalidInputError: ``text`` is empty.
        SimulationError: the simulator returned something unusable.
    """
    explanation = neutral_explanation(text)
    held = splits.held_out(score_split)
    slots = [
        *(_slots("calibration", splits.calibration) if calibration else []),
        *_slots(score_split, held),
    ]
    outcomes = await simulate_each(simulator, explanation, [s.record for s in slots])
    return NeutralBaseline(
        explanation, {(s.split, s.source, s.index): o for s, o in zip(slots, outcomes, strict=True)}
    )


def _minus_neutral(own: Outcome, base: Outcome | None, neutral: str) -> Outcome:
    """``own`` with the neutral outcome ``base`` attached for contrastive scoring: a failure
    of either is the excerpt's failure."""
    if isinstance(own, SimulationFailure):
        return own
    if base is None:
        raise InvalidInputError("contrastive scoring needs the neutral simulation of every excerpt")
    if isinstance(base, SimulationFailure):
        return SimulationFailure(
            reason=base.reason, message=f"neutral explanation {neutral!r}: {base.message}"
        )
    return own


async def ascore_explanation(
    simulator: Simulator,
    explanation: Explanation,
    splits: Splits,
    *,
    calibration: CalibrationMethod = "linear",
    score_split: Literal["valid", "test"] = "valid",
    max_failed_fraction: float = DEFAULT_MAX_FAILED_FRACTION,
    scoring: ScoringMode = "plain",
    neutral: NeutralBaseline | None = None,
) -> ScoredSimulation:
    """Simulate the calibration split (unless ``calibration="none"``) and ``score_split`` of
    ``splits`` from ``explanation``, fit the calibration on the first and score the second.

    Each excerpt is simulated on its own (`simulate_each`). Excerpts that cannot be simulated
    are left out of the fit and of the scores and listed in the result's ``failed``; the
    scores rest on the others (``n_sequences``). This is the second half of `explain_neuron`;
    re-scoring an explanation with another simulator calls it with the same splits.

    With ``neutral`` (the unit's `NeutralBaseline`), the result's ``sensitivity`` says how
    much the prediction depends on the explanation. With ``scoring="contrastive"`` the
    calibration and every score are of the prediction minus the neutral prediction of the same
    excerpt (the baseline is simulated here when not given; an excerpt the neutral explanation
    could not simulate counts as failed).

    Args:
        max_failed_fraction: the share of the excerpts (both splits together) that may fail.

    Raises:
        SimulationError: more than ``max_failed_fraction`` of the excerpts failed, or every
            excerpt of a split did (`check_failures` says how many and why); or the simulator
            returned something unusable.
        InvalidInputError: a contrastive score with a baseline that does not cover the
            calibration and scored splits.
    """
    held = splits.held_out(score_split)
    to_fit = _slots("calibration", splits.calibration) if calibration != "none" else []
    slots = [*to_fit, *_slots(score_split, held)]
    contrastive = scoring == "contrastive"
    if contrastive and neutral is None:
        neutral = await asimulate_neutral(
            simulator, splits, score_split=score_split, calibration=calibration != "none"
        )
    outcomes = await simulate_each(simulator, explanation, [s.record for s in slots])
    bases: list[Outcome | None] = [
        neutral.outcomes.get((s.split, s.source, s.index)) if neutral else None for s in slots
    ]
    if neutral is not None and contrastive:
        text = neutral.explanation.text
        outcomes = [_minus_neutral(o, b, text) for o, b in zip(outcomes, bases, strict=True)]
    failed = [
        FailedSequence(
            record=slot.record, split=slot.split, source=slot.source, index=slot.index, failure=o
        )
        for slot, o in zip(slots, outcomes, strict=True)
        if isinstance(o, SimulationFailure)
    ]
    name = simulator.info.name
    check_failures(name, len(slots), [f.failure for f in failed], max_failed_fraction)
    for split in dict.fromkeys(s.split for s in slots):
        mine = [f.failure for f in failed if f.split == split]
        if mine and len(mine) == sum(s.split == split for s in slots):
            raise _failed(
                f"simulator {name!r} could not simulate any of the {len(mine)} excerpts of the "
                f"{split} split",
                mine,
            )

    # under contrastive scoring an excerpt whose baseline failed has failed (_minus_neutral)
    subtracted = bases if contrastive else [None] * len(slots)
    fit = [
        (slot.record, predicted_values(o, b if isinstance(b, SequenceSimulation) else None))
        for slot, o, b in zip(slots, outcomes, subtracted, strict=True)
        if slot.split == "calibration" and isinstance(o, SequenceSimulation)
    ]
    fitted = fit_calibration(
        calibration,
        np.concatenate([values for _, values in fit]) if fit else [],
        np.concatenate([record.activations for record, _ in fit]) if fit else [],
    )

    def baselines(source: str) -> list[SequenceSimulation | None]:
        return [
            b if isinstance(b, SequenceSimulation) else None
            for slot, o, b in zip(slots, outcomes, bases, strict=True)
            if slot.split == score_split
            and slot.source == source
            and isinstance(o, SequenceSimulation)
        ]

    measured = neutral is not None and neutral.covers(score_split)
    return score_simulations(
        score_split,
        _simulated(slots, outcomes, score_split, "top"),
        _simulated(slots, outcomes, score_split, "random"),
        fitted,
        failed=failed,
        scoring=scoring,
        neutral_top=baselines("top") if measured else (),
        neutral_random=baselines("random") if measured else (),
        neutral_text=neutral.explanation.text if measured and neutral else None,
    )
