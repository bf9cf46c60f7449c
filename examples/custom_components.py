"""Write your own Subject, Explainer and Simulator and score them with explain_neuron.

The subject is a rule, not a model: unit 0 fires on colour words, unit 1 on animal words. The
explainer names the tokens with the highest mean activation; the simulator predicts 10 on the
words the explanation names and 0 elsewhere. No model, LLM or network is needed.

Run:  python examples/custom_components.py

The docs include this file piece by piece (see the ``--8<--`` markers), so keep it working:
``tests/test_docs.py`` runs it.
"""

from __future__ import annotations

# --8<-- [start:imports]
import asyncio
import random
import sys
from collections.abc import Sequence

from pydantic import BaseModel

from neuron_explainer import (
    ActivationRecord,
    ComponentInfo,
    Explainer,
    Explanation,
    ExplanationError,
    ExplanationResult,
    InvalidInputError,
    NeuronRecord,
    Provenance,
    Score,
    Scorer,
    ScoringData,
    SequenceSimulation,
    Simulator,
    Subject,
    UnitId,
    aexplain_neuron,
    build_neuron_record,
    explain_neuron,
)

# --8<-- [end:imports]


# --8<-- [start:subject]
COLOURS = ("red", "green", "blue", "yellow")
ANIMALS = ("cat", "dog", "owl")
RULES = {0: COLOURS, 1: ANIMALS}
VOCAB = ("the", "a", "of", "and", "river", "house", "old", *COLOURS, *ANIMALS)


class RuleSubject(Subject):
    """A pretend model: unit ``index`` fires on the words in ``RULES[index]``."""

    def __init__(self, n_excerpts: int = 400, seed: int = 0) -> None:
        self.n_excerpts, self.seed = n_excerpts, seed

    async def aneuron_record(self, unit: UnitId) -> NeuronRecord:
        if unit.index not in RULES:
            raise InvalidInputError(f"{unit}: this subject only has units {sorted(RULES)}")
        rng = random.Random(self.seed)
        excerpts = []
        for _ in range(self.n_excerpts):
            tokens = [" " + rng.choice(VOCAB) for _ in range(16)]
            fires = [t.strip() in RULES[unit.index] for t in tokens]
            activations = [rng.gauss(1.0 if f else 0.0, 0.1) for f in fires]
            excerpts.append(ActivationRecord(tokens=tokens, activations=activations))
        provenance = Provenance(model=unit.model, dataset="random words", window_length=16)
        return build_neuron_record(unit, excerpts, provenance=provenance, seed=self.seed)

    # --8<-- [end:subject]


# --8<-- [start:explainer]
class KeywordExplainer(Explainer):
    """Names the tokens whose mean activation is at least half of the highest mean."""

    name = "keyword"

    async def aexplain(self, records: Sequence[ActivationRecord]) -> Explanation:
        seen: dict[str, list[float]] = {}
        for record in records:  # the train split only
            for token, activation in zip(record.tokens, record.activations, strict=True):
                seen.setdefault(token.strip(), []).append(activation)
        means = {token: sum(acts) / len(acts) for token, acts in seen.items()}
        peak = max(means.values(), default=0.0)
        if peak <= 0:
            raise ExplanationError("no token has a positive mean activation")
        keywords = sorted(t for t, m in means.items() if m >= peak / 2)
        return Explanation(text="the words: " + ", ".join(keywords), explainer=self.info)

    @property
    def info(self) -> ComponentInfo:
        return ComponentInfo(name=self.name, version="1", settings={"threshold": 0.5})

    # --8<-- [end:explainer]


# --8<-- [start:simulator]
class KeywordSimulator(Simulator):
    """Predicts 10 on the words an explanation lists after its colon, 0 on everything else."""

    name = "keyword"

    async def asimulate(
        self, explanation: Explanation, tokens: Sequence[str]
    ) -> SequenceSimulation:
        _, _, listed = explanation.text.partition(":")
        keywords = {word.strip().lower() for word in listed.split(",")}
        predicted = [10.0 if token.strip().lower() in keywords else 0.0 for token in tokens]
        return SequenceSimulation(tokens=tuple(tokens), expected_activations=tuple(predicted))

    # --8<-- [end:simulator]


# --8<-- [start:scorer]
class HitRate(BaseModel):
    value: Score  # the headline every scorer's result has
    excerpts: int


class KeywordHitScorer(Scorer):
    """The share of the held-out top excerpts that contain a word the explanation lists."""

    name = "keyword-hits"

    async def ascore(self, explanation: Explanation, data: ScoringData) -> HitRate:
        _, _, listed = explanation.text.partition(":")
        keywords = {word.strip().lower() for word in listed.split(",")}
        top = data.splits.held_out(data.split).top  # never the train split
        hits = sum(any(t.strip().lower() in keywords for t in r.tokens) for r in top)
        value = Score(value=hits / len(top)) if top else Score.undefined("no top excerpts")
        return HitRate(value=value, excerpts=len(top))

    # --8<-- [end:scorer]


def report(result: ExplanationResult) -> None:
    print(f"unit:        {result.unit}")
    print(f"explanation: {result.explanation.text}")
    assert result.scored is not None  # the correlation score ran
    for label, score in (
        ("score (top-and-random correlation)", result.scored.correlation),
        ("random-only correlation", result.scored.random_correlation),
        ("R² (calibrated)", result.scored.rsquared),
    ):
        shown = f"{score.value:.3f}" if score.value is not None else f"undefined ({score.reason})"
        print(f"{label + ':':36} {shown}")
    for name, entry in result.scores.items():
        print(f"{name + ' score:':36} {entry.value.value}")


# --8<-- [start:async]
async def explain_in_event_loop(record: NeuronRecord) -> ExplanationResult:
    # Inside a running event loop the sync explain_neuron raises UsageError: await instead.
    return await aexplain_neuron(record, explainer=KeywordExplainer(), simulator=KeywordSimulator())
    # --8<-- [end:async]


def main() -> int:
    # --8<-- [start:run]
    unit = UnitId(model="rule-subject", layer=0, index=0)
    record = RuleSubject().neuron_record(unit)  # sync twin of aneuron_record
    result = explain_neuron(
        record,
        explainer=KeywordExplainer(),
        simulator=KeywordSimulator(),
        scorers=["correlation", KeywordHitScorer()],  # the first is the headline
    )
    # --8<-- [end:run]
    report(result)

    again = asyncio.run(explain_in_event_loop(record))
    if again.score != result.score:
        print("the async pipeline gave a different score", file=sys.stderr)
        return 1
    score = result.score
    return 0 if score is not None and score > 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
