"""The simulation score as a scorer (``"correlation"``): what `explain_neuron` has always
reported, run like any other scorer."""

from __future__ import annotations

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.interfaces import CallEstimate, Simulator
from neuron_explainer.options import DEFAULT_MAX_FAILED_FRACTION
from neuron_explainer.results import ComponentInfo, Explanation, ScoringMode, SimulationScore
from neuron_explainer.scorers.base import Scorer, ScoringData
from neuron_explainer.scorers.correlation import CalibrationMethod
from neuron_explainer.scorers.simulation import ascore_explanation, neutral_explanation

__all__ = ["CorrelationScorer"]


class CorrelationScorer(Scorer):
    """The simulation score as a scorer (``"correlation"``): `ascore_explanation` on the
    calibration split and ``data.split``; its headline is the pooled correlation.

    Args:
        simulator: the simulator that predicts the activations.
        calibration: as in `ascore_explanation`.
        scoring: as in `ascore_explanation`.
        max_failed_fraction: as in `ascore_explanation`.

    Raises:
        InvalidInputError: no simulator.
    """

    name = "correlation"
    simulates = True
    version = "1"
    recorded_settings = ("calibration", "scoring", "max_failed_fraction")

    def __init__(
        self,
        simulator: Simulator | None = None,
        *,
        calibration: CalibrationMethod = "linear",
        scoring: ScoringMode = "plain",
        max_failed_fraction: float = DEFAULT_MAX_FAILED_FRACTION,
    ) -> None:
        if not isinstance(simulator, Simulator):
            raise InvalidInputError(
                "the correlation scorer simulates: give it simulator= (a Simulator)"
            )
        self.simulator = simulator
        self.calibration, self.scoring = calibration, scoring
        self.max_failed_fraction = max_failed_fraction

    @property
    def info(self) -> ComponentInfo:
        """Name, version and settings, with the simulator's name."""
        base = super().info
        return base.model_copy(
            update={"settings": {**base.settings, "simulator": self.simulator.info.name}}
        )

    async def ascore(self, explanation: Explanation, data: ScoringData) -> SimulationScore:
        """Simulate and score (see `ascore_explanation`).

        Raises:
            InvalidInputError: ``data.split`` is the calibration split (it fits the
                calibration; score ``"valid"`` or ``"test"``).
            SimulationError: see `ascore_explanation`.
        """
        if data.split == "calibration":
            raise InvalidInputError(
                "the correlation scorer fits its calibration on the calibration split; score "
                "the 'valid' or 'test' split"
            )
        scored = await ascore_explanation(
            self.simulator,
            explanation,
            data.splits,
            calibration=self.calibration,
            score_split=data.split,
            max_failed_fraction=self.max_failed_fraction,
            scoring=self.scoring,
        )
        return SimulationScore(scorer=self.info, value=scored.correlation, scored=scored)

    def estimate(self, explanation: Explanation, data: ScoringData) -> CallEstimate:
        """The simulator's estimate for the excerpts `ascore` simulates (the neutral
        explanation's too under contrastive scoring), sending nothing."""
        records = list(data.splits.held_out(data.split).records)
        if self.calibration != "none":
            records += data.splits.calibration.records
        excerpts = [r.tokens for r in records]
        part = self.simulator.estimate(explanation, excerpts)
        if self.scoring == "contrastive":
            extra = self.simulator.estimate(neutral_explanation(), excerpts)
            part = part.model_copy(
                update={
                    "requests": part.requests + extra.requests,
                    "prompt_tokens": part.prompt_tokens + extra.prompt_tokens,
                    "completion_tokens": part.completion_tokens + extra.completion_tokens,
                }
            )
        return part
