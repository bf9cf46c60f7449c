"""One attempt at a unit, measured where it runs: its result or why it has none, and what it
spent. The runner records attempts (`neuron_explainer.runs._runner`); they are made in this
process (`measure`) or on a cluster's workers (a `UnitExecutor`), and travel back pickled."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from neuron_explainer.errors import (
    AuthenticationError,
    ExplanationError,
    InsufficientRecordsError,
    InvalidRecordError,
    LLMError,
    SimulationError,
)
from neuron_explainer.interfaces import track_simulations
from neuron_explainer.llm.usage import BudgetExceededError, UsageMeter, track_usage
from neuron_explainer.records import UnitId
from neuron_explainer.results import ExplanationResult, SimulationStats, UsageSummary

__all__ = ["FATAL", "UNIT_FAILURES", "Attempt", "UnitExecutor", "measure"]

# Failures of one unit: recorded with their reason, and the run goes on. Anything else (a
# TypeError, a CapabilityError, an InvalidInputError about the settings, a rejected API key)
# stops the run and propagates.
UNIT_FAILURES = (
    SimulationError,
    ExplanationError,
    InsufficientRecordsError,
    InvalidRecordError,
    LLMError,
)
FATAL = (AuthenticationError,)

Outcome = Literal["done", "failed", "stopped", "fatal"]


@dataclass(frozen=True)
class Attempt:
    """What one attempt at a unit came to.

    Attributes:
        outcome: ``"done"`` (``result`` is set), ``"failed"`` (a unit failure: recorded, the
            run goes on), ``"stopped"`` (the budget refused a call; the unit stays pending) or
            ``"fatal"`` (``error`` stops the run).
        result: the result of a done unit.
        error_type, reason: a failure's exception class name and message.
        error: the exception of a fatal attempt.
        usage, simulation: what the attempt spent and how its simulations went.
    """

    outcome: Outcome
    usage: UsageSummary
    simulation: SimulationStats
    result: ExplanationResult | None = None
    error_type: str = ""
    reason: str = ""
    error: BaseException | None = None


def judged(exc: BaseException, usage: UsageSummary, simulation: SimulationStats) -> Attempt:
    """The attempt that raised ``exc`` (one of `UNIT_FAILURES`, `FATAL` or
    `BudgetExceededError`)."""
    if isinstance(exc, BudgetExceededError):
        return Attempt("stopped", usage, simulation, error_type=type(exc).__name__)
    if isinstance(exc, FATAL):
        return Attempt("fatal", usage, simulation, error=exc, error_type=type(exc).__name__)
    reason = str(exc) or repr(exc)
    return Attempt("failed", usage, simulation, error_type=type(exc).__name__, reason=reason)


async def measure(
    work: Callable[[UnitId], Awaitable[ExplanationResult]],
    unit: UnitId,
    budget_usd: float | None = None,
) -> Attempt:
    """Run ``work(unit)`` under its own usage and simulation meters (the usage meter capped at
    ``budget_usd``); a unit's own failure, the budget or a fatal error becomes the attempt,
    anything else propagates."""
    with track_usage(budget_usd) as spent, track_simulations() as sims:
        try:
            result = await work(unit)
        except (BudgetExceededError, *FATAL, *UNIT_FAILURES) as exc:
            return judged(exc, spent.summary, sims.stats)
    return Attempt("done", spent.summary, sims.stats, result=result)


class UnitExecutor(Protocol):
    """Attempts units somewhere else (a cluster's workers) and hands back each `Attempt`."""

    async def attempt(self, unit: UnitId, budget_usd: float | None) -> Attempt:
        """Attempt ``unit`` spending at most ``budget_usd`` (``None``: no cap); raises what
        stops the run."""
        ...


class _BudgetShare:
    """How much of a run's budget an attempt made elsewhere may spend, so that the attempts in
    flight together never pass it (each is capped at its share where it runs).

    The first attempt gets all that is left. Once one has ended, the next may start while
    what is left (less what attempts in flight hold) covers ``HEADROOM`` times the most an
    attempt has cost, and gets that much, or an even share of what is left when that is more;
    otherwise it waits for an attempt to end. With nothing in flight an attempt gets what is
    left, however little. An attempt that needs more than its share is stopped by the budget
    (it stays pending) and the run stops, as in one process when a call does not fit.
    """

    HEADROOM = 1.5

    def __init__(self, meter: UsageMeter, concurrency: int) -> None:
        self.meter = meter
        self.concurrency = concurrency
        self.held = 0.0
        self.in_flight = 0
        self.ended = 0
        self.most = 0.0
        self._changed = asyncio.Condition()

    def _grant(self, waiting: int) -> float | None:
        """The share to give now, or ``None`` to wait."""
        left = self.meter.remaining_usd()
        assert left is not None
        free = max(0.0, left - self.held)
        if self.in_flight == 0:
            return free
        need = self.HEADROOM * self.most
        if not self.ended or free < need:
            return None
        ways = max(1, min(self.concurrency - self.in_flight, waiting))
        return min(free, max(need, free / ways))

    async def take(self, waiting: int) -> float | None:
        """The share of an attempt about to start (``None``: no budget), with ``waiting``
        units not started yet (this one included); waits while too little is free."""
        if self.meter.budget_usd is None:
            return None
        async with self._changed:
            while (share := self._grant(waiting)) is None:
                await self._changed.wait()
            self.held += share
            self.in_flight += 1
            return share

    async def give_back(self, share: float | None, spent_usd: float) -> None:
        """The attempt holding ``share`` has ended, having spent ``spent_usd`` (on the meter
        by now)."""
        if share is None:
            return
        async with self._changed:
            self.in_flight -= 1
            self.held = max(0.0, self.held - share) if self.in_flight else 0.0
            self.ended += 1
            self.most = max(self.most, spent_usd)
            self._changed.notify_all()
