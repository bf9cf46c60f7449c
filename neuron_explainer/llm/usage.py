"""Token usage, estimated cost and budget caps, shared by every LLM provider.

Providers report each call with `record_usage`; whoever wants the totals opens a meter with
`track_usage` (``explain_neuron`` opens one per neuron, a batch run one per run). Meters nest and
follow the code through ``await`` and into tasks created inside them (they live in a
`contextvars.ContextVar`), so concurrent neurons each get their own totals.

Cost is an estimate from a small price table in USD per million tokens (`PRICES`); pass your
own `Price` to a provider, or `set_price`, where the table is wrong or missing. A meter with a
``budget_usd`` refuses, through `check_budget`, any call whose worst-case cost would push the
spent total past the cap: `BudgetExceededError` is raised *before* the request is sent.
Providers hold that worst case with `reserve_budget` while the request is in flight, so
concurrent requests cannot pass a cap together: a meter's room is its budget minus what was
spent minus what requests in flight may still cost.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from pydantic import BaseModel, ConfigDict, Field

from neuron_explainer.errors import LLMError
from neuron_explainer.llm.base import Usage
from neuron_explainer.results import UsageSummary

__all__ = [
    "PRICES",
    "BudgetExceededError",
    "Price",
    "UsageMeter",
    "UsageSummary",
    "check_budget",
    "estimate_cost",
    "price_for",
    "record_usage",
    "reserve_budget",
    "set_price",
    "track_usage",
]


class BudgetExceededError(LLMError):
    """A call was refused because its worst-case cost would exceed a meter's budget cap."""


class Price(BaseModel):
    """USD per million tokens. ``cached_prompt`` defaults to ``prompt`` when not given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: float = Field(ge=0)
    completion: float = Field(ge=0)
    cached_prompt: float | None = Field(default=None, ge=0)

    def cost(self, usage: Usage) -> float:
        """The cost of ``usage`` in USD (cached prompt tokens at the cached rate)."""
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        cached_rate = self.prompt if self.cached_prompt is None else self.cached_prompt
        return (
            (usage.prompt_tokens - cached) * self.prompt
            + cached * cached_rate
            + usage.completion_tokens * self.completion
        ) / 1e6


PRICES: dict[str, Price] = {
    "gpt-4o": Price(prompt=2.50, completion=10.00, cached_prompt=1.25),
    "gpt-4o-mini": Price(prompt=0.15, completion=0.60, cached_prompt=0.075),
    "gpt-4.1": Price(prompt=2.00, completion=8.00, cached_prompt=0.50),
    "gpt-4.1-mini": Price(prompt=0.40, completion=1.60, cached_prompt=0.10),
    "gpt-4.1-nano": Price(prompt=0.10, completion=0.40, cached_prompt=0.025),
    "gpt-4": Price(prompt=30.00, completion=60.00),
    "gpt-3.5-turbo": Price(prompt=0.50, completion=1.50),
}
"""List prices (USD per million tokens) of some OpenAI models at the time of writing; an
estimate, not a bill. Models not listed (local servers) cost nothing unless you `set_price`."""

_lock = threading.Lock()
_WAIT = 0.005  # seconds between looks at a budget that calls in flight are holding


def set_price(model: str, price: Price) -> None:
    """Use ``price`` for ``model`` from now on (process-wide)."""
    with _lock:
        PRICES[model] = price


def price_for(model: str) -> Price | None:
    """The price of ``model``: an exact entry, else the longest listed prefix (so a dated
    snapshot such as ``gpt-4o-mini-2024-07-18`` gets ``gpt-4o-mini``'s), else ``None``."""
    if model in PRICES:
        return PRICES[model]
    prefixes = [name for name in PRICES if model.startswith(name + "-")]
    return PRICES[max(prefixes, key=len)] if prefixes else None


def estimate_cost(model: str, usage: Usage, price: Price | None = None) -> float:
    """USD for ``usage`` on ``model`` (0.0 for a model with no known price)."""
    price = price if price is not None else price_for(model)
    return price.cost(usage) if price is not None else 0.0


class UsageMeter:
    """Running totals of the calls made while it is open (see `track_usage`).

    Attributes:
        budget_usd: the cap, or ``None``.
    """

    def __init__(self, budget_usd: float | None = None) -> None:
        if budget_usd is not None and not budget_usd >= 0:
            raise ValueError(f"budget_usd must be >= 0, got {budget_usd}")
        self.budget_usd = budget_usd
        self._summary = UsageSummary()
        self._reserved = 0.0
        self._in_flight = 0
        self._lock = threading.Lock()

    @property
    def summary(self) -> UsageSummary:
        """The totals so far."""
        return self._summary

    def add(self, summary: UsageSummary) -> None:
        """Add ``summary`` to the totals."""
        with self._lock:
            self._summary = self._summary + summary

    def remaining_usd(self) -> float | None:
        """Budget left (minus what calls in flight may still cost), or ``None`` without a
        cap."""
        if self.budget_usd is None:
            return None
        return self.budget_usd - self._summary.cost_usd - self._reserved

    def _refuse(self, worst_case_usd: float, what: str) -> None:
        """Raise `BudgetExceededError` if ``worst_case_usd`` does not fit what is left."""
        left = self.remaining_usd()
        if left is not None and worst_case_usd > left:
            raise BudgetExceededError(
                f"budget of ${self.budget_usd:.4f} would be exceeded: "
                f"${self._summary.cost_usd:.4f} spent, ${self._reserved:.4f} held by calls in "
                f"flight, {what} could cost up to ${worst_case_usd:.4f}; raise the budget to "
                "continue"
            )

    def _hold(self, worst_case_usd: float) -> None:
        self._reserved += worst_case_usd
        self._in_flight += 1

    def _release(self, worst_case_usd: float) -> None:
        with self._lock:
            self._in_flight -= 1
            # A float sum drifts; with nothing in flight nothing is held.
            self._reserved = self._reserved - worst_case_usd if self._in_flight else 0.0


_meters: contextvars.ContextVar[tuple[UsageMeter, ...]] = contextvars.ContextVar(
    "neuron_explainer_usage_meters", default=()
)


@contextmanager
def track_usage(budget_usd: float | None = None) -> Iterator[UsageMeter]:
    """Open a meter for the calls made inside the block (and tasks started in it).

    Args:
        budget_usd: refuse calls that could push this meter's cost past this many USD.

    Raises:
        ValueError: a negative budget.
    """
    meter = UsageMeter(budget_usd)
    token = _meters.set((*_meters.get(), meter))
    try:
        yield meter
    finally:
        _meters.reset(token)


def record_usage(usage: Usage, *, cost_usd: float = 0.0, cached: bool = False) -> None:
    """Add one call to every open meter. Providers call this once per answered request;
    ``cached=True`` for an answer served from a response cache (counted as a cache hit with no
    tokens or cost)."""
    summary = (
        UsageSummary(cache_hits=1)
        if cached
        else UsageSummary(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            calls=1,
            cost_usd=cost_usd,
        )
    )
    for meter in _meters.get():
        meter.add(summary)


def check_budget(worst_case_usd: float, *, what: str = "the next LLM call") -> None:
    """Raise `BudgetExceededError` if a call costing up to ``worst_case_usd`` would push any
    open meter past its budget (what calls in flight hold counts as spent). Providers call
    this, or better `reserve_budget`, before sending a request.

    Raises:
        BudgetExceededError: naming the budget, what was spent and the call's worst case.
    """
    for meter in _meters.get():
        with meter._lock:
            meter._refuse(worst_case_usd, what)


@asynccontextmanager
async def reserve_budget(
    worst_case_usd: float, *, what: str = "the next LLM call"
) -> AsyncIterator[None]:
    """Hold ``worst_case_usd`` against every open meter's budget until the block ends; send the
    request and `record_usage` its real cost inside the block.

    A call that does not fit what is left waits while other calls are in flight (their
    reservations come back as they finish, usually costing less than their worst case); it is
    refused only when it could not fit even with nothing in flight. So concurrent calls never
    pass a cap together, and a cap near the end does not refuse calls it can still afford.

    Raises:
        BudgetExceededError: as for `check_budget`, when nothing in flight could make room
            (nothing is held then).
    """
    meters = _meters.get()
    while True:
        held: list[UsageMeter] = []
        waiting = False
        for meter in meters:
            with meter._lock:
                left = meter.remaining_usd()
                if left is not None and worst_case_usd > left:
                    if not meter._in_flight:
                        for other in held:
                            other._release(worst_case_usd)
                        meter._refuse(worst_case_usd, what)
                    waiting = True
                    break
                meter._hold(worst_case_usd)
            held.append(meter)
        if not waiting:
            break
        for other in held:
            other._release(worst_case_usd)
        await asyncio.sleep(_WAIT)
    try:
        yield
    finally:
        for meter in held:
            meter._release(worst_case_usd)
