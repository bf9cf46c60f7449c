"""What explaining one unit will cost, estimated from the prompts the components would send.

`estimate_neuron` splits the record as `explain_neuron` would, builds the very prompts the
built-in LLM components send (`LLMExplainer.fit_prompt`, `ChatLogprobSimulator.messages`,
`JSONSimulator.messages` / ``batch_messages``, `build_all_at_once_prompt`) and counts them,
sending nothing:

* tokens: ``ceil(chars / 3.5)`` per message plus 4 (the explainer's own ``count_tokens`` when
  it has one), 3 per request;
* the explainer's completion: its ``max_tokens`` per sample (an upper bound);
* the chat-logprob simulator's completion: per token, the echoed token, a tab, the number and a
  newline; the JSON simulator's: two tokens per number and six more;
* the simulation prompts use a placeholder explanation of typical length
  (`PLACEHOLDER_EXPLANATION`);
* ``best_of = k`` assumes ``k`` distinct candidates, each simulated on the calibration split
  (an upper bound); retries after unusable answers or failed requests are not counted;
* cost: the LLM's ``price`` or `neuron_explainer.llm.usage.price_for` its model (0 when
  unknown). Components without an LLM cost nothing; a custom LLM-backed component whose
  prompts are unknown is counted as 0 and named in ``notes``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from neuron_explainer.errors import ExplanationError, InsufficientRecordsError
from neuron_explainer.explainers.llm import LLMExplainer, estimate_tokens
from neuron_explainer.interfaces import Explainer, Simulator
from neuron_explainer.llm.base import LLM, Message, Usage
from neuron_explainer.llm.prompts import escape_token
from neuron_explainer.llm.usage import estimate_cost, price_for
from neuron_explainer.records import NeuronRecord, UnitId
from neuron_explainer.records.splits import split_records
from neuron_explainer.results import ComponentInfo, Explanation

if TYPE_CHECKING:
    from neuron_explainer.runs._sources import Source

__all__ = [
    "PLACEHOLDER_EXPLANATION",
    "CallEstimate",
    "NeuronEstimate",
    "estimate_neuron",
    "estimate_run",
]

PLACEHOLDER_EXPLANATION = "words about a particular topic, mostly in lists and short phrases"
"""The explanation the simulation prompts of an estimate are built with."""
_REQUEST_OVERHEAD = 3
_MESSAGE_OVERHEAD = 4


class CallEstimate(BaseModel):
    """The LLM requests one component would make for one unit.

    Attributes:
        role: ``"explainer"`` or ``"simulator"``.
        component: the component's name.
        llm: the LLM it calls (``provider:model``), ``None`` for a component without one.
        requests, prompt_tokens, completion_tokens, cost_usd: the estimate.
        note: how it was estimated, or why it could not be.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["explainer", "simulator"]
    component: str
    llm: str | None = None
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    note: str | None = None


class NeuronEstimate(BaseModel):
    """The estimate for one unit: the sum of its ``parts``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    parts: tuple[CallEstimate, ...]

    @property
    def requests(self) -> int:
        """Requests, all components together."""
        return sum(p.requests for p in self.parts)

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens, all components together."""
        return sum(p.prompt_tokens for p in self.parts)

    @property
    def completion_tokens(self) -> int:
        """Completion tokens, all components together."""
        return sum(p.completion_tokens for p in self.parts)

    @property
    def cost_usd(self) -> float:
        """Estimated cost in USD, all components together."""
        return sum(p.cost_usd for p in self.parts)


def _count(messages: Sequence[Message]) -> int:
    return sum(estimate_tokens(m.content) + _MESSAGE_OVERHEAD for m in messages) + (
        _REQUEST_OVERHEAD
    )


def _cost(llm: LLM, prompt: int, completion: int) -> float:
    price = getattr(llm, "price", None) or price_for(llm.model)
    usage = Usage(prompt_tokens=prompt, completion_tokens=completion)
    return estimate_cost(llm.model, usage, price)


def _part(
    role: Literal["explainer", "simulator"],
    info: ComponentInfo,
    llm: LLM,
    requests: int,
    prompt: int,
    completion: int,
    note: str | None = None,
) -> CallEstimate:
    return CallEstimate(
        role=role,
        component=info.name,
        llm=llm.name,
        requests=requests,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=_cost(llm, prompt, completion),
        note=note,
    )


def _unknown(role: Literal["explainer", "simulator"], component: Any) -> CallEstimate:
    info: ComponentInfo = component.info
    llm = getattr(component, "llm", None)
    if isinstance(llm, LLM):
        return CallEstimate(
            role=role,
            component=info.name,
            llm=llm.name,
            note=f"{role} {info.name!r} calls {llm.name} with prompts this estimate does not "
            "know; counted as 0",
        )
    return CallEstimate(role=role, component=info.name, note="no LLM calls")


def _explainer_part(
    explainer: Explainer, record_train: Sequence[Any], best_of: int
) -> CallEstimate:
    if not isinstance(explainer, LLMExplainer):
        return _unknown("explainer", explainer)
    messages, _, _ = explainer.fit_prompt(record_train)
    samples = best_of if best_of > 1 else explainer.n_candidates
    requests = 1 if explainer.supports_n else samples
    prompt = explainer.prompt_tokens(messages) + _REQUEST_OVERHEAD
    return _part(
        "explainer",
        explainer.info,
        explainer.llm,
        requests,
        prompt * requests,
        explainer.max_tokens * samples,
        note=f"completion counted as max_tokens ({explainer.max_tokens}) per sample",
    )


def _echo_tokens(tokens: Sequence[str]) -> int:
    """Completion tokens of a chat-logprob answer: token, tab, number, newline per line."""
    return sum(estimate_tokens(escape_token(t)) + 3 for t in tokens)


def _simulator_part(
    simulator: Simulator, explanation: Explanation, excerpts: Sequence[Sequence[str]]
) -> CallEstimate:
    from neuron_explainer.simulators.chat_logprob import ChatLogprobSimulator
    from neuron_explainer.simulators.json_output import JSONSimulator
    from neuron_explainer.simulators.prompt_logprob import (
        PromptLogprobSimulator,
        build_all_at_once_prompt,
    )

    requests = prompt = completion = 0
    if isinstance(simulator, ChatLogprobSimulator | JSONSimulator):
        size = simulator.excerpts_per_request
        for start in range(0, len(excerpts), size):
            group = [e for e in excerpts[start : start + size] if e]
            if not group:
                continue
            requests += 1
            if isinstance(simulator, ChatLogprobSimulator):
                prompt += _count(simulator.messages(explanation, group))
                headers = 2 * len(group) if len(group) > 1 else 0
                completion += sum(_echo_tokens(e) for e in group) + headers
            else:
                messages = (
                    simulator.messages(explanation, group[0])
                    if len(group) == 1
                    else simulator.batch_messages(explanation, group)
                )
                prompt += _count(messages)
                completion += sum(2 * len(e) + 6 for e in group)
        return _part("simulator", simulator.info, simulator.llm, requests, prompt, completion)
    if isinstance(simulator, PromptLogprobSimulator):
        per_request = getattr(simulator.llm, "prompt_logprobs_max_tokens", None) or 0
        for tokens in excerpts:
            if tokens:
                requests += 1
                text, _ = build_all_at_once_prompt(explanation, tokens)
                prompt += estimate_tokens(text) + _REQUEST_OVERHEAD
                completion += per_request
        return _part("simulator", simulator.info, simulator.llm, requests, prompt, completion)
    return _unknown("simulator", simulator)


def estimate_neuron(
    record: NeuronRecord,
    explainer: Explainer,
    simulator: Simulator,
    *,
    calibration: str = "linear",
    score_split: Literal["valid", "test"] = "valid",
    n_top_per_split: int | None = None,
    n_random_per_split: int | None = None,
    best_of: int = 1,
) -> NeuronEstimate:
    """Estimate the LLM requests, tokens and cost of explaining ``record`` (see the module
    docstring for the rules); nothing is sent. Arguments as for `explain_neuron`.

    Raises:
        InsufficientRecordsError: too few records to fill the splits.
        ExplanationError: the explainer could not build its prompt (no positive activation, or
            the prompt does not fit the context).
    """
    splits = split_records(
        record, n_top_per_split=n_top_per_split, n_random_per_split=n_random_per_split
    )
    explain = _explainer_part(explainer, splits.train, best_of)
    fit = splits.calibration.records if calibration != "none" else ()
    shown = [*fit, *splits.held_out(score_split).records]
    if best_of > 1:
        shown = [*shown, *(list(splits.calibration.records) * best_of)]
    explanation = Explanation(text=PLACEHOLDER_EXPLANATION, explainer=explainer.info)
    simulate = _simulator_part(simulator, explanation, [r.tokens for r in shown])
    return NeuronEstimate(parts=(explain, simulate))


_TOTALS = ("requests", "prompt_tokens", "completion_tokens", "cost_usd")


def _mean(estimates: Sequence[NeuronEstimate], role: str | None = None) -> dict[str, float]:
    def parts(e: NeuronEstimate) -> list[CallEstimate]:
        return [p for p in e.parts if role is None or p.role == role]

    n = max(len(estimates), 1)
    return {key: sum(getattr(p, key) for e in estimates for p in parts(e)) / n for key in _TOTALS}


async def estimate_run(
    source: Source,
    units: Sequence[UnitId],
    statuses: Mapping[UnitId, str],
    explainer: Explainer,
    simulator: Simulator,
    *,
    options: Mapping[str, Any],
    retry_failed: bool = False,
    sample_units: int = 3,
) -> dict[str, Any]:
    """The fields of a `neuron_explainer.runs.RunEstimate`: `estimate_neuron` on up to
    ``sample_units`` units spread evenly over those still to do (per ``statuses``), averaged
    and multiplied by their number."""
    if sample_units < 1:
        raise ValueError(f"sample_units must be >= 1, got {sample_units}")
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
        record = await source.record(unit)
        try:
            estimates.append(
                estimate_neuron(
                    record,
                    explainer,
                    simulator,
                    calibration=options.get("calibration", "linear"),
                    score_split=options.get("score_split", "valid"),
                    n_top_per_split=options.get("n_top_per_split"),
                    n_random_per_split=options.get("n_random_per_split"),
                    best_of=options.get("best_of", 1),
                )
            )
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
        "requests": math.ceil(mean["requests"] * len(todo) - 1e-9),
        "prompt_tokens": math.ceil(mean["prompt_tokens"] * len(todo) - 1e-9),
        "completion_tokens": math.ceil(mean["completion_tokens"] * len(todo) - 1e-9),
        "cost_usd": mean["cost_usd"] * len(todo),
        "per_neuron": {
            **mean,
            "explainer": _mean(estimates, "explainer"),
            "simulator": _mean(estimates, "simulator"),
            "sampled": [str(u) for u in sampled],
        },
        "notes": notes,
    }
