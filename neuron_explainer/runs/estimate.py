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
* ``best_of = k`` assumes ``k`` distinct candidates, each simulated on the calibration split
  (an upper bound); retries after unusable answers or failed requests are not counted;
* the neutral explanation (contrastive scoring, sensitivity) simulates the scored split, and
  the calibration split too when contrastive scores need it, once per unit;
* ``revise`` adds one explaining request and simulates the train split and both texts on the
  calibration split (an upper bound: no revision is asked when nothing disagrees);
* cost: what the component says, or when it leaves ``cost_usd`` unset, its ``llm``'s
  ``price`` or `neuron_explainer.llm.usage.price_for` its model (0 when unknown). Components
  without an LLM cost nothing; an LLM-backed component that does not override ``estimate`` is
  counted as 0 and named in ``notes``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from neuron_explainer.errors import ExplanationError, InsufficientRecordsError
from neuron_explainer.interfaces import CallEstimate as CallEstimate
from neuron_explainer.interfaces import Explainer, Simulator
from neuron_explainer.llm.base import LLM, Usage
from neuron_explainer.llm.usage import estimate_cost, price_for
from neuron_explainer.options import (
    CalibrationName,
    ExplainOptions,
    RunOptions,
    ScoreSplit,
    ScoringName,
)
from neuron_explainer.records import NeuronRecord, UnitId
from neuron_explainer.records.splits import split_records
from neuron_explainer.results import Explanation

if TYPE_CHECKING:
    from neuron_explainer.runs._sources import Source

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


def _priced(part: CallEstimate, component: Explainer | Simulator) -> CallEstimate:
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


def _estimate(
    record: NeuronRecord, explainer: Explainer, simulator: Simulator, options: ExplainOptions
) -> NeuronEstimate:
    splits = split_records(
        record,
        n_top_per_split=options.n_top_per_split,
        n_random_per_split=options.n_random_per_split,
    )
    explain = explainer.estimate(splits.train, best_of=options.best_of)
    fit = splits.calibration.records if options.calibration != "none" else ()
    shown = [*fit, *splits.held_out(options.score_split).records]
    if options.best_of > 1:
        shown = [*shown, *(list(splits.calibration.records) * options.best_of)]
    if options.needs_neutral:
        shown += splits.held_out(options.score_split).records
        if options.neutral_on_calibration:
            shown += splits.calibration.records
    parts = [_priced(explain, explainer)]
    if options.revise:
        # the revision prompt is the explaining prompt plus the disagreements: counted as one
        # more explaining request; its simulations: the train split, and both texts on
        # calibration
        revision = explainer.estimate(splits.train)
        parts.append(_priced(revision.model_copy(update={"note": "revision"}), explainer))
        shown = [*shown, *splits.train, *(list(splits.calibration.records) * 2)]
    explanation = Explanation(text=PLACEHOLDER_EXPLANATION, explainer=explainer.info)
    simulate = simulator.estimate(explanation, [r.tokens for r in shown])
    return NeuronEstimate(parts=(*parts, _priced(simulate, simulator)))


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
) -> NeuronEstimate:
    """Estimate the LLM requests, tokens and cost of explaining ``record`` (see the module
    docstring for the rules); nothing is sent. Arguments as for `explain_neuron` (the neutral
    explanation's simulations, for contrastive scoring or sensitivity, are counted).

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
    )
    return _estimate(record, explainer, simulator, options)


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
) -> dict[str, Any]:
    """The fields of a `neuron_explainer.runs.RunEstimate`: `estimate_neuron` on up to
    ``sample_units`` units spread evenly over those still to do (per ``statuses``), averaged
    and multiplied by their number.

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
    estimates: list[NeuronEstimate] = []
    for unit in sampled:
        try:
            estimates.append(_estimate(await source.record(unit), explainer, simulator, explain))
        except (InsufficientRecordsError, ExplanationError) as exc:
            notes.append(f"{unit} could not be estimated ({type(exc).__name__}: {exc})")
    if estimates:
        notes += [f"{p.role} {p.component}: {p.note}" for p in estimates[0].parts if p.note]
        notes.append(
            f"extrapolated from {len(estimates)} sampled unit(s) to {len(todo)}; tokens are "
            "estimated as characters / 3.5, retries are not counted"
        )
    mean = _mean(estimates)
    return {
        "units": len(todo),
        **{k: math.ceil(mean[k] * len(todo) - 1e-9) for k in _TOTALS[:3]},
        "cost_usd": mean["cost_usd"] * len(todo),
        "per_neuron": {
            **mean,
            "explainer": _mean(estimates, "explainer"),
            "simulator": _mean(estimates, "simulator"),
            "sampled": [str(u) for u in sampled],
        },
        "notes": notes,
    }
