"""Which scorers a run uses, built once, and their scores as a result stores them.

A run names its scorers (``scorers=["correlation", "detection"]``, CLI ``--scorer``), or
passes `Scorer` objects. ``"correlation"`` is the simulation score the pipeline has always
computed: it uses the run's ``simulator=`` and options (``calibration``, ``scoring``,
``sensitivity`` ...), so it is named, never passed as an object. Every other scorer judges the
chosen explanation on the same held-out split. An LLM scorer named without an LLM
(``"detection"``) gets the simulator's LLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from neuron_explainer._aio import gather_or_cancel
from neuron_explainer.errors import InvalidInputError
from neuron_explainer.interfaces import Simulator
from neuron_explainer.plugins.registry import Registry
from neuron_explainer.results import (
    ClassificationScore,
    ComponentInfo,
    Explanation,
    PluginScore,
    Score,
    ScorerScore,
    SimulationScore,
)
from neuron_explainer.scorers.base import Scorer, ScoringData
from neuron_explainer.scorers.simulation_scorer import CorrelationScorer

__all__ = ["CORRELATION", "DEFAULT_SCORERS", "RunScorers", "build_scorers", "scorer_config"]

CORRELATION = "correlation"
"""The simulation score's name."""
DEFAULT_SCORERS: tuple[str, ...] = (CORRELATION,)


@dataclass(frozen=True)
class RunScorers:
    """A run's scorers in the order asked for: ``names`` (the first is the headline) and the
    built scorer of every name but ``"correlation"``."""

    names: tuple[str, ...]
    built: dict[str, Scorer]

    @property
    def correlation(self) -> bool:
        """Whether the simulation score is asked for."""
        return CORRELATION in self.names

    async def ascore(self, explanation: Explanation, data: ScoringData) -> dict[str, ScorerScore]:
        """Every scorer but ``"correlation"`` on ``explanation``, concurrently, as stored.

        Raises:
            Exception: what a scorer raised (the others are cancelled).
        """
        names = [n for n in self.names if n != CORRELATION]
        outputs = await gather_or_cancel(*(self.built[n].ascore(explanation, data) for n in names))
        return {n: stored(n, self.built[n], o) for n, o in zip(names, outputs, strict=True)}

    def in_order(
        self, others: dict[str, ScorerScore], correlation: SimulationScore | None
    ) -> dict[str, ScorerScore]:
        """``others`` and the correlation score, in the order the scorers were asked for."""
        everything: dict[str, ScorerScore] = dict(others)
        if correlation is not None:
            everything[CORRELATION] = correlation
        return {n: everything[n] for n in self.names}


def scorer_config(scorers: RunScorers) -> list[dict[str, object]]:
    """How a run's configuration records its scorers: each one's name and settings (the
    simulation score by name: its settings are the run's simulator and options)."""
    return [
        {"name": n}
        if n == CORRELATION
        else {"name": n, "info": scorers.built[n].info.model_dump(mode="json")}
        for n in scorers.names
    ]


def stored(name: str, scorer: Scorer, output: BaseModel) -> ScorerScore:
    """``output`` of ``scorer`` (registered as ``name``) as a result stores it: a built-in
    kind as it is, anything else as a `PluginScore` (its ``value`` and the rest as details).

    Raises:
        InvalidInputError: ``output`` has no ``value`` that is a `Score`.
    """
    if isinstance(output, ClassificationScore | SimulationScore | PluginScore):
        return output
    value = getattr(output, "value", None)
    if not isinstance(value, Score):
        raise InvalidInputError(
            f"scorer {name!r} returned a {type(output).__name__} without a 'value' Score; a "
            "scorer's result has its headline Score as 'value'"
        )
    details = output.model_dump(mode="json", exclude={"value"})
    return PluginScore(kind=name, scorer=scorer.info, value=value, details=details)


def correlation_entry(simulator: Simulator, value: Score) -> SimulationScore:
    """The ``"correlation"`` entry of a result's scores (its details are ``scored``)."""
    settings = {"simulator": simulator.info.name}
    return SimulationScore(scorer=ComponentInfo(name=CORRELATION, settings=settings), value=value)


def _build(registry: Registry, name: str, llm: object) -> Scorer:
    """The scorer ``name``, given ``llm`` when it takes one (``None``: built without)."""
    if llm is not None:
        try:
            return registry.scorer(name, llm=llm)
        except InvalidInputError as exc:
            if "does not accept these options" not in str(exc):
                raise
    return registry.scorer(name)


def build_scorers(
    specs: Sequence[Scorer | str] | None, registry: Registry, simulator: Simulator
) -> RunScorers:
    """The run's scorers: ``specs`` (names or `Scorer` objects; ``None``: the simulation score
    alone), built once. A named scorer whose factory takes ``llm`` gets the simulator's LLM.

    Raises:
        InvalidInputError: no scorer, a name twice, a `CorrelationScorer` object (name it
            ``"correlation"``: it uses the run's simulator and options), or a scorer that
            needs an LLM named when the simulator has none to lend.
        UnknownComponentError: no scorer has that name.
    """
    if specs is None:
        return RunScorers(DEFAULT_SCORERS, {})
    if isinstance(specs, str | Scorer):
        specs = [specs]
    names: list[str] = []
    built: dict[str, Scorer] = {}
    for spec in specs:
        if isinstance(spec, CorrelationScorer):
            raise InvalidInputError(
                "name the simulation score 'correlation' in scorers=: it uses the run's "
                "simulator= and options (calibration, scoring, sensitivity)"
            )
        name = spec if isinstance(spec, str) else spec.info.name
        if name in names:
            raise InvalidInputError(f"scorer {name!r} is asked for twice; give each scorer once")
        names.append(name)
        if name == CORRELATION:
            continue
        if isinstance(spec, Scorer):
            built[name] = spec
            continue
        built[name] = _build(registry, name, getattr(simulator, "llm", None))
    if not names:
        raise InvalidInputError("scorers= is empty; give at least one scorer")
    return RunScorers(tuple(names), built)
