"""Run-level numbers for the report overview: counts, mean/median score, usage, histogram; and
the names a scorer's score goes by on the page (`column_label`, `measure_label`)."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from neuron_explainer.results import (
    ClassificationScore,
    ComponentInfo,
    ExplanationResult,
    PluginScore,
    ScoredSimulation,
    ScorerScore,
    SimulationStats,
    UsageSummary,
)

__all__ = [
    "HISTOGRAM_BINS",
    "SIMULATION",
    "RunSummary",
    "bin_edges",
    "column_label",
    "component_label",
    "counts_text",
    "histogram_bin",
    "measure_label",
    "simulation_stats",
]

SIMULATION = "correlation"
"""The name of the simulation scorer, whose details are `ExplanationResult.scored`."""

HISTOGRAM_BINS = 20
"""Bins of the score histogram: ``[-1, 1]`` cut into equal widths (0.1 each)."""

_LOW, _HIGH = -1.0, 1.0


def histogram_bin(score: float, bins: int = HISTOGRAM_BINS) -> int:
    """The histogram bin of a correlation: bins are ``[lo, hi)`` except the last, ``[lo, 1]``.

    Values outside ``[-1, 1]`` (rounding noise) fall into the first or last bin.
    """
    width = (_HIGH - _LOW) / bins
    # A small tolerance puts 0.3 in [0.3, 0.4) despite 1.3 / 0.1 == 12.999...
    position = math.floor((score - _LOW) / width + 1e-9)
    return min(bins - 1, max(0, position))


def bin_edges(bins: int = HISTOGRAM_BINS) -> list[tuple[float, float]]:
    """``(lo, hi)`` of every histogram bin."""
    width = (_HIGH - _LOW) / bins
    return [(_LOW + i * width, _LOW + (i + 1) * width) for i in range(bins)]


_SIMULATION_MEASURE = "top-and-random correlation"


def column_label(name: str) -> str:
    """A scorer's name as a column header: ``"detection"`` -> ``"Detection"``."""
    return name[:1].upper() + name[1:]


def measure_label(name: str, score: ScorerScore) -> str:
    """What the value of scorer ``name``'s score measures: ``"top-and-random correlation"``,
    ``"detection balanced accuracy"`` (or ``"detection AUROC"``), or a plugin scorer's name."""
    if isinstance(score, ClassificationScore):
        return f"{name} {'AUROC' if score.headline == 'auroc' else 'balanced accuracy'}"
    if isinstance(score, PluginScore):
        return name
    return _SIMULATION_MEASURE if name == SIMULATION else f"{name} correlation"


@dataclass
class RunSummary:
    """Accumulates what the overview needs, one result at a time (a few numbers per unit).

    ``scores`` (mean, median, histogram) are each unit's headline score (`ExplanationResult
    .score`, its first scorer's); ``headlines`` counts what they measure (`measure_label`);
    ``scorers`` holds every scorer name met, in the order first met, with its defined values.
    """

    bins: int = HISTOGRAM_BINS
    explained: int = 0
    failed: int = 0
    scores: list[float] = field(default_factory=list)
    random_scores: list[float] = field(default_factory=list)
    undefined: int = 0
    simulated: int = 0
    headlines: Counter[str] = field(default_factory=Counter)
    headline_names: Counter[str] = field(default_factory=Counter)
    scorers: dict[str, list[float]] = field(default_factory=dict)
    usage: UsageSummary = field(default_factory=UsageSummary)
    simulation: SimulationStats = field(default_factory=SimulationStats)
    measured: int = 0
    sensitivity_measured: int = 0
    flagged: int = 0
    models: Counter[str] = field(default_factory=Counter)
    explainers: Counter[str] = field(default_factory=Counter)
    simulators: Counter[str] = field(default_factory=Counter)
    other_scorers: Counter[str] = field(default_factory=Counter)
    counts: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.counts = [0] * self.bins

    def add(self, result: ExplanationResult) -> None:
        """Count one explained unit."""
        self.explained += 1
        score = result.score
        if score is None:
            self.undefined += 1
        else:
            self.scores.append(score)
            self.counts[histogram_bin(score, self.bins)] += 1
        self._add_scorers(result)
        self.usage = self.usage + result.usage
        if result.simulation is not None:
            self.simulation = self.simulation + result.simulation
            self.measured += 1
        if result.scored is not None:
            self._add_simulation(result.scored, result.simulator)
        self.models[result.unit.model] += 1
        self.explainers[component_label(result.explainer.name, result.explainer.settings)] += 1

    def _add_scorers(self, result: ExplanationResult) -> None:
        for i, (name, entry) in enumerate(result.scores.items()):
            if i == 0:
                self.headlines[measure_label(name, entry)] += 1
                self.headline_names[name] += 1
            values = self.scorers.setdefault(name, [])
            if entry.value.value is not None:
                values.append(entry.value.value)
            if name != SIMULATION:
                self.other_scorers[component_label(entry.scorer.name, entry.scorer.settings)] += 1

    def _add_simulation(self, scored: ScoredSimulation, simulator: ComponentInfo) -> None:
        self.simulated += 1
        self.simulators[component_label(simulator.name, simulator.settings)] += 1
        random_score = scored.random_correlation.value
        if random_score is not None:
            self.random_scores.append(random_score)
        if (sensitivity := scored.sensitivity) is not None:
            self.sensitivity_measured += 1
            self.flagged += sensitivity.flagged

    @property
    def score_names(self) -> list[str]:
        """The scorers of the units table's columns, in the order first met; the simulation
        scorer alone when there is no unit."""
        return list(self.scorers) or [SIMULATION]

    @property
    def headline(self) -> str:
        """What the headline scores (mean, median, histogram) measure: the one thing they all
        measure (``"top-and-random correlation"`` when no unit), or the things with their
        scorers with their counts when units differ (``"mixed: correlation 3, detection
        2"``)."""
        if len(self.headlines) <= 1:
            return next(iter(self.headlines), _SIMULATION_MEASURE)
        return f"mixed: {counts_text(self.headline_names)}"

    @property
    def mean(self) -> float | None:
        """Mean of the defined headline scores."""
        return statistics.fmean(self.scores) if self.scores else None

    @property
    def median(self) -> float | None:
        """Median of the defined headline scores."""
        return statistics.median(self.scores) if self.scores else None

    def scorer_mean(self, name: str) -> float | None:
        """Mean of the defined scores of scorer ``name``."""
        values = self.scorers.get(name)
        return statistics.fmean(values) if values else None

    @property
    def random_mean(self) -> float | None:
        """Mean of the defined random-only scores."""
        return statistics.fmean(self.random_scores) if self.random_scores else None

    @property
    def has_usage(self) -> bool:
        """Whether any LLM call was recorded (offline components record none)."""
        u = self.usage
        return bool(u.calls or u.cache_hits or u.prompt_tokens or u.completion_tokens or u.cost_usd)


def counts_text(counts: Mapping[str, int]) -> str:
    """``"misaligned 3, timeout 1"``: each reason with its count, commonest first."""
    return ", ".join(f"{k} {n:,}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def simulation_stats(stats: SimulationStats) -> list[tuple[str, str]]:
    """The overview's figures about simulating: excerpts simulated of those attempted,
    failed (by reason), constant, retried (by reason) and the simulator's tokens."""
    failed = f"{stats.failed:,}"
    if stats.failed:
        failed += f" ({counts_text(stats.failure_reasons)})"
    retried = f"{stats.retried:,}"
    if stats.retried:
        retried += f" ({counts_text(stats.retry_reasons)})"
    tokens = stats.prompt_tokens + stats.completion_tokens
    return [
        ("Simulations", f"{stats.simulated:,} of {stats.attempted:,}"),
        ("Failed simulations", failed),
        ("Constant simulations", f"{stats.constant:,}"),
        ("Simulator retries", retried),
        (
            "Simulator tokens",
            f"{tokens:,} ({stats.prompt_tokens:,} prompt + {stats.completion_tokens:,} completion)",
        ),
    ]


def component_label(name: str, settings: Mapping[str, object]) -> str:
    """``name``, with the LLM it ran on (``settings["llm"]`` or ``["model"]``) when known."""
    for key in ("llm", "model"):
        model = settings.get(key)
        if isinstance(model, str) and model and model not in name:
            return f"{name} ({model})"
    return name
