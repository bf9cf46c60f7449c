"""What explaining one unit will cost, estimated from the prompts the components would send.

`estimate_neuron` splits the record as `explain_neuron` would and asks each component for its
own `CallEstimate`, sending nothing: ``explainer.estimate(train records, best_of=...)`` and
``simulator.estimate(explanation, excerpts)`` (see `neuron_explainer.interfaces`), then prices
what they count. A plugin's component is estimated the same way as a built-in one: by its
``estimate`` method. The built-in LLM components count like this:

* tokens: ``ceil(chars / 3.5)`` per message plus 4 (the explainer's own ``count_tokens`` when
  it has one), 3 per request;
* the explainer's completion: its ``max_tokens`` per sample (an upper bound);
* the chat-logprob simulator's completion: per token, the echoed token, a tab, the number and a
  newline; the JSON simulator's: two tokens per number and six more;
* the simulation prompts use a placeholder explanation of typical length
  (`PLACEHOLDER_EXPLANATION`);
* each text is simulated once per excerpt: the calibration split once (when the calibration
  is fitted or revision compares there), or once per best-of-k candidate (``k`` distinct
  candidates assumed, an upper bound; the chosen one's simulations are reused), then the
  scored split; retries after unusable answers or failed requests are not counted;
* the neutral explanation (contrastive scoring, sensitivity) simulates the scored split, and
  the calibration split too when contrastive scores need it, once per unit; `estimate_run`
  counts the excerpts its sampled units share (a collection's random reservoir) once for the
  run, as a batch simulates them;
* ``revise`` adds one explaining request, simulates the train split, and the revised text on
  the calibration split (an upper bound: no revision is asked when nothing disagrees); with
  ``test_sentences``, one more explaining request and that many sentences simulated, each
  as long as a train excerpt (an upper bound: none without the unit's model);
* scorers other than the simulation score (``scorers=``, e.g. detection) count by their own
  ``estimate`` (the requests they would send for the unit's excerpts); without the
  simulation score, the scored split is not simulated and the neutral explanation only when
  contrastive best-of-k or revision choose with it;
* cost: what the component says, or when it leaves ``cost_usd`` unset, its ``llm``'s
  ``price`` or `neuron_explainer.llm.usage.price_for` its model (0 when unknown). Components
  without an LLM cost nothing; an LLM-backed component that does not override ``estimate`` is
  counted as 0 and named in ``notes``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence, Set
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from neuron_explainer.errors import ExplanationError, InsufficientRecordsError
from neuron_explainer.interfaces import CallEstimate as CallEstimate
from neuron_explainer.interfaces import Explainer, Simulator, unit_context
from neuron_explainer.llm.base import LLM, Usage
from neuron_explainer.llm.usage import estimate_cost, price_for
from neuron_explainer.options import (
    DEFAULT_TEST_SENTENCES,
    CalibrationName,
    ExplainOptions,
    RunOptions,
    ScoreSplit,
    ScoringName,
)
from neuron_explainer.records import ActivationRecord, NeuronRecord, UnitId
from neuron_explainer.records.splits import Splits, split_records
from neuron_explainer.results import Explanation
from neuron_explainer.scorers.base import ScoringData

if TYPE_CHECKING:
    from neuron_explainer.runs._sources import Source
    from neuron_explainer.runs.scoring import RunScorers

__all__ = [
    "PLACEHOLDER_EXPLANATION",
    "NeuronEstimate",
    "estimate_neuron",
    "estimate_run",
]

PLACEHOLDER_EXPLANATION = "words about a particular topic, mostly in lists and short phrases"
"""The explanation the simulation prompts of an estimate are built with."""
_TOTALS = ("requests", "prompt_tokens", "completion_tokens", "cost_usd")


class NeuronEstimate(BaseModel):
    """The estimate for one unit: its ``parts`` (each priced) and their sums.

    Attributes:
        parts: one `CallEstimate` per component.
        requests, prompt_tokens, completion_tokens, cost_usd: the sums over ``parts``
            (computed from them; any given are replaced).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    parts: tuple[CallEstimate, ...]
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    @model_validator(mode="before")
    @classmethod
    def _sum_parts(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or "parts" not in data:
            return data
        parts = [CallEstimate.model_validate(p) for p in data["parts"]]
        totals = {key: sum(getattr(p, key) or 0 for p in parts) for key in _TOTALS}
        return {**data, "parts": parts, **totals}


def _priced(part: CallEstimate, component: object) -> CallEstimate:
    """``part`` with its cost: as the component gave it, else its tokens at the price of the
    component's LLM (0 without one)."""
    if part.cost_usd is not None:
        return part
    llm = getattr(component, "llm", None)
    cost = 0.0
    if isinstance(llm, LLM):
        usage = Usage(prompt_tokens=part.prompt_tokens, completion_tokens=part.completion_tokens)
        cost = estimate_cost(llm.model, usage, getattr(llm, "price", None) or price_for(llm.model))
    return part.model_copy(update={"cost_usd": cost})


def _neutral_shown(splits: Splits, options: ExplainOptions) -> list[ActivationRecord]:
    """The excerpts the neutral explanation simulates for a unit (none when not needed)."""
    if not options.needs_neutral:
        return []
    shown = list(splits.held_out(options.score_split).records)
    if options.neutral_on_calibration:
        shown += splits.calibration.records
    return shown


def _shared_neutral(
    split_units: Sequence[Splits], options: ExplainOptions
) -> dict[tuple[str, ...], ActivationRecord]:
    """The excerpts the neutral explanation simulates for two or more of ``split_units`` (a
    collection's random excerpts come from one reservoir), by tokens: a batch simulates them
    once (`neuron_explainer.runs.explain.neutral_memos`)."""
    seen: dict[tuple[str, ...], ActivationRecord] = {}
    counts: dict[tuple[str, ...], int] = {}
    for splits in split_units:
        mine = {tuple(r.tokens): r for r in _neutral_shown(splits, options)}
        for key, r in mine.items():
            seen.setdefault(key, r)
            counts[key] = counts.get(key, 0) + 1
    return {key: seen[key] for key, n in counts.items() if n >= 2}


def _estimate(
    splits: Splits,
    explainer: Explainer,
    simulator: Simulator,
    options: ExplainOptions,
    *,
    shared: Set[tuple[str, ...]] = frozenset(),
    scoring: tuple[NeuronRecord, RunScorers] | None = None,
) -> NeuronEstimate:
    """One unit's estimate from its ``splits``; the neutral simulations of ``shared`` excerpts
    are left out (a batch counts them once, `estimate_run`). ``scoring``: the unit's record and
    the run's scorers when they are not the simulation score alone."""
    correlation = scoring is None or scoring[1].correlation
    explain = explainer.estimate(splits.train, best_of=options.best_of)
    # each text is simulated once per excerpt (the final score reuses best-of-k's and
    # revision's calibration simulations): best-of-k's candidates, or the one explanation
    # when the calibration is fitted or revision compares on it, and a revised text
    fitted = correlation and options.calibration != "none"
    on_calibration = (
        options.best_of if options.best_of > 1 else int(options.revise or fitted)
    ) + int(options.revise)
    choosing = options.best_of > 1 or options.revise
    neutral = correlation or (options.scoring == "contrastive" and choosing)
    shown = [
        *(list(splits.calibration.records) * on_calibration),
        *(splits.held_out(options.score_split).records if correlation else ()),
        *(
            r
            for r in (_neutral_shown(splits, options) if neutral else ())
            if tuple(r.tokens) not in shared
        ),
    ]
    parts = [_priced(explain, explainer)]
    if options.revise:
        parts += _revision_parts(splits, explainer, options, shown)
    simulated = _priced(_simulated(simulator, explainer, shown), simulator)
    parts.append(simulated)
    if scoring is not None:
        record, scorers = scoring
        data = ScoringData(record, splits, options.score_split)
        text = Explanation(text=PLACEHOLDER_EXPLANATION, explainer=explainer.info)
        for scorer in scorers.built.values():
            parts.append(_priced(scorer.estimate(text, data), scorer))
    return NeuronEstimate(parts=tuple(parts))


def _revision_parts(
    splits: Splits, explainer: Explainer, options: ExplainOptions, shown: list[ActivationRecord]
) -> list[CallEstimate]:
    """Revision's explaining requests (the excerpts it simulates are added to ``shown``)."""
    # the revision prompt is the explaining prompt plus the disagreements: counted as one
    # more explaining request; the first text is simulated on the train split too
    revision = explainer.estimate(splits.train)
    parts = [_priced(revision.model_copy(update={"note": "revision"}), explainer)]
    shown += splits.train
    if options.test_sentences:
        # asking for test sentences: the explaining prompt again; each sentence simulated
        # (counted as long as a train excerpt)
        ask = getattr(explainer, "estimate_tests", None)
        tests = (
            ask(splits.train, options.test_sentences)
            if callable(ask)
            else explainer.estimate(splits.train)
        )
        parts.append(_priced(tests.model_copy(update={"note": "test sentences"}), explainer))
        shown += [splits.train[i % len(splits.train)] for i in range(options.test_sentences)]
    return parts


def _splits(record: NeuronRecord, options: ExplainOptions) -> Splits:
    return split_records(
        record,
        n_top_per_split=options.n_top_per_split,
        n_random_per_split=options.n_random_per_split,
    )


def _simulated(
    simulator: Simulator, explainer: Explainer, shown: Sequence[ActivationRecord]
) -> CallEstimate:
    """The simulator's estimate for ``shown``, with the placeholder explanation."""
    explanation = Explanation(text=PLACEHOLDER_EXPLANATION, explainer=explainer.info)
    return simulator.estimate(explanation, [r.tokens for r in shown])


def estimate_neuron(
    record: NeuronRecord,
    explainer: Explainer,
    simulator: Simulator,
    *,
    calibration: CalibrationName = "linear",
    score_split: ScoreSplit = "valid",
    n_top_per_split: int | None = None,
    n_random_per_split: int | None = None,
    best_of: int = 1,
    scoring: ScoringName = "plain",
    sensitivity: bool | Literal["auto"] = "auto",
    revise: bool = False,
    test_sentences: int = DEFAULT_TEST_SENTENCES,
    scorers: RunScorers | None = None,
) -> NeuronEstimate:
    """Estimate the LLM requests, tokens and cost of explaining ``record`` (see the module
    docstring for the rules); nothing is sent. Arguments as for `explain_neuron` (the neutral
    explanation's simulations, for contrastive scoring or sensitivity, are counted);
    ``scorers`` as `neuron_explainer.runs.scoring.build_scorers` builds them (default: the
    simulation score alone): each scorer but the simulation score counts by its ``estimate``.

    Raises:
        InvalidInputError: an option out of range.
        InsufficientRecordsError: too few records to fill the splits.
        ExplanationError: the explainer could not build its prompt (no positive activation, or
            the prompt does not fit the context).
    """
    options = ExplainOptions.build(
        calibration=calibration,
        score_split=score_split,
        n_top_per_split=n_top_per_split,
        n_random_per_split=n_random_per_split,
        best_of=best_of,
        scoring=scoring,
        sensitivity=sensitivity,
        revise=revise,
        test_sentences=test_sentences,
    )
    judged = None if scorers is None else (record, scorers)
    with unit_context(record.unit):  # the prompts name the unit's kind
        return _estimate(_splits(record, options), explainer, simulator, options, scoring=judged)


def _mean(estimates: Sequence[NeuronEstimate], role: str | None = None) -> dict[str, float]:
    n = max(len(estimates), 1)
    parts = [p for e in estimates for p in e.parts if role is None or p.role == role]
    return {key: sum(getattr(p, key) or 0 for p in parts) / n for key in _TOTALS}


async def estimate_run(
    source: Source,
    units: Sequence[UnitId],
    statuses: Mapping[UnitId, str],
    explainer: Explainer,
    simulator: Simulator,
    *,
    options: ExplainOptions | Mapping[str, Any],
    retry_failed: bool = False,
    sample_units: int = 3,
    scorers: RunScorers | None = None,
) -> dict[str, Any]:
    """The fields of a `neuron_explainer.runs.RunEstimate`: `estimate_neuron` on up to
    ``sample_units`` units spread evenly over those still to do (per ``statuses``), averaged
    and multiplied by their number (``scorers`` as for `estimate_neuron`).

    Raises:
        InvalidInputError: bad ``options`` or ``sample_units``.
    """
    explain = ExplainOptions.build(options)
    sample_units = RunOptions.build(sample_units=sample_units).sample_units
    todo = [
        u
        for u in units
        if statuses.get(u, "pending") == "pending" or (retry_failed and statuses.get(u) == "failed")
    ]
    notes = []
    if len(todo) < len(units):
        notes.append(f"{len(units) - len(todo)} of {len(units)} units are done (or failed) already")
    step = len(todo) / min(sample_units, len(todo)) if todo else 1
    sampled = [todo[int(i * step)] for i in range(min(sample_units, len(todo)))]
    split_units: list[tuple[UnitId, Splits]] = []
    records: dict[UnitId, NeuronRecord] = {}
    for unit in sampled:
        try:
            records[unit] = await source.record(unit)
            split_units.append((unit, _splits(records[unit], explain)))
        except InsufficientRecordsError as exc:
            notes.append(f"{unit} could not be estimated ({type(exc).__name__}: {exc})")
    shared = _shared_neutral([splits for _, splits in split_units], explain)
    estimates: list[NeuronEstimate] = []
    for unit, splits in split_units:
        scoring = None if scorers is None else (records[unit], scorers)
        try:
            with unit_context(unit):  # the prompts name the unit's kind
                estimates.append(
                    _estimate(
                        splits, explainer, simulator, explain, shared=shared.keys(), scoring=scoring
                    )
                )
        except ExplanationError as exc:
            notes.append(f"{unit} could not be estimated ({type(exc).__name__}: {exc})")
    if estimates:
        notes += [f"{p.role} {p.component}: {p.note}" for p in estimates[0].parts if p.note]
        if shared:
            notes.append(
                f"the neutral explanation's simulations of {len(shared)} excerpts the sampled "
                "units share are counted once for the run"
            )
        notes.append(
            f"extrapolated from {len(estimates)} sampled unit(s) to {len(todo)}; tokens are "
            "estimated as characters / 3.5, retries are not counted"
        )
    mean, simulator_mean = _mean(estimates), _mean(estimates, "simulator")
    if estimates and shared and todo:  # counted once for the run, amortised over its units
        once = _priced(_simulated(simulator, explainer, list(shared.values())), simulator)
        for key in _TOTALS:
            share = (getattr(once, key) or 0) / len(todo)
            mean[key] += share
            simulator_mean[key] += share
    return {
        "units": len(todo),
        **{k: math.ceil(mean[k] * len(todo) - 1e-9) for k in _TOTALS[:3]},
        "cost_usd": mean["cost_usd"] * len(todo),
        "per_neuron": {
            **mean,
            "explainer": _mean(estimates, "explainer"),
            "simulator": simulator_mean,
            "sampled": [str(u) for u in sampled],
        },
        "notes": notes,
    }
