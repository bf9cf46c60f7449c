"""The unit runner behind `neuron_explainer.runs`: work through a run's pending units,
``concurrency`` at a time, under one usage meter, committing each outcome as it comes."""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from neuron_explainer._aio import gather_or_cancel
from neuron_explainer.interfaces import track_simulations
from neuron_explainer.llm.usage import track_usage
from neuron_explainer.options import RunOptions
from neuron_explainer.records import UnitId
from neuron_explainer.results import ExplanationResult, SimulationStats, UsageSummary
from neuron_explainer.runs._attempts import Attempt, UnitExecutor, _BudgetShare, measure
from neuron_explainer.runs._sources import Source
from neuron_explainer.runs.store import RunStore

__all__ = ["FailedUnit", "RunEvent", "RunSummary", "run_units"]


class FailedUnit(BaseModel):
    """A chosen unit whose status is failed at the end of a call.

    Attributes:
        unit: the unit.
        reason: why it failed: the exception class and its message
            (``"SimulationError: ..."``), as `RunStore.failures` gives it.
        in_this_call: it failed in this call (else in an earlier one, and this call did not
            retry it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit: UnitId
    reason: str
    in_this_call: bool


class RunSummary(BaseModel):
    """What one call of `aexplain_neurons` or `arescore` did, and where its units stand.

    ``total = done + failed + skipped``, with

    * ``failed = failed_now + failed_before``: every chosen unit whose status is failed at the
      end of the call, whether it failed in this call (``failed_now``) or in an earlier one
      that this call did not retry (``failed_before``; ``retry_failed`` off, or the run stopped
      before it came to it). Their reasons are in ``failures``. A failure stays counted as
      failed in every later summary until a call retries it successfully.
    * ``skipped = already_done + pending``: units not attempted in this call that are not
      failed: done before it (``already_done``), or left pending because the run stopped (e.g.
      at the budget).

    Before 0.2 ``failed`` counted only this call's failures and ``skipped`` included the
    earlier ones (as ``not_retried``, now ``failed_before``).

    Attributes:
        db: the run database.
        total: units chosen for this call.
        done: units finished in this call.
        failed: chosen units that are failed now (see above).
        skipped: see above.
        failed_now: units that failed in this call.
        failed_before: units that failed in an earlier call and are still failed.
        failures: the failed units (``failed`` of them) with their reasons, in (layer, index)
            order.
        already_done: units done before this call.
        not_retried: deprecated alias of ``failed_before`` (removed in 0.4).
        pending: units left pending (not done, not failed).
        usage: tokens and cost spent by this call.
        simulation: how this call's simulations went (`SimulationStats`: excerpts attempted,
            failed by reason, constant, retried, and the simulator's tokens), over every unit
            it attempted (done, failed or stopped).
        sensitivity_measured: done units of this call whose score's sensitivity to its
            explanation was measured (`neuron_explainer.results.Sensitivity`).
        flagged: of those, the ones flagged: the prediction hardly depends on the explanation.
        elapsed_s: wall time of the call.
        stopped_reason: ``"budget"`` when the budget stopped the run, else ``None``.
        spent_usd: everything the database's runs have spent so far (this call included).
        collection: the collection the records came from, if any.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    db: str
    total: int
    done: int
    failed: int
    skipped: int
    failed_now: int = 0
    failed_before: int = 0
    failures: tuple[FailedUnit, ...] = ()
    already_done: int = 0
    not_retried: int = Field(
        default=0, deprecated="RunSummary.not_retried is deprecated: use failed_before"
    )
    pending: int = 0
    usage: UsageSummary = UsageSummary()
    simulation: SimulationStats = SimulationStats()
    sensitivity_measured: int = 0
    flagged: int = 0
    elapsed_s: float = 0.0
    stopped_reason: str | None = None
    spent_usd: float = 0.0
    collection: str | None = None


class RunEvent(BaseModel):
    """Progress of a run, passed to ``progress`` once per unit that finishes, fails or is
    stopped.

    Attributes:
        kind: ``"done"``, ``"failed"`` or ``"stopped"`` (stopped by the budget; the unit
            stays pending).
        unit: the unit.
        score: a done unit's headline score.
        reason: why a unit failed.
        usage: what this unit spent.
        simulation: how this unit's simulations went.
        completed: units finished (done, failed or stopped) in this call so far.
        total: units this call attempts (``skipped`` ones not counted).
        run_usage: what this call has spent so far.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["done", "failed", "stopped"]
    unit: UnitId
    score: float | None = None
    reason: str | None = None
    usage: UsageSummary = UsageSummary()
    simulation: SimulationStats = SimulationStats()
    completed: int = 0
    total: int = 0
    run_usage: UsageSummary = UsageSummary()


class _Counters:
    def __init__(self, total: int) -> None:
        self.total = total
        self.done = self.failed = self.stopped = 0
        self.measured = self.flagged = 0
        self.failed_units: set[UnitId] = set()
        self.stopped_reason: str | None = None

    @property
    def completed(self) -> int:
        return self.done + self.failed + self.stopped


async def run_units(
    store: RunStore,
    kind: str,
    chosen: Sequence[UnitId],
    work: Callable[[UnitId], Awaitable[ExplanationResult]] | None,
    *,
    run: RunOptions,
    progress: Callable[[RunEvent], None] | None,
    started: float,
    source: Source,
    executor: UnitExecutor | None = None,
) -> RunSummary:
    """Do ``work`` for every chosen unit that is not done, ``run.concurrency`` at a time,
    under ``run.budget_usd`` (less what ``store`` has spent already). Each attempt's usage
    and simulation statistics are measured around ``work`` (a done result carries them) and
    recorded with its outcome.

    With ``executor`` instead of ``work``, each unit is attempted elsewhere (a cluster's
    workers): the executor measures the attempt where it runs and gets a share of the budget
    left (`_BudgetShare`); this process alone records outcomes, as they arrive."""
    concurrency, budget_usd, retry_failed = run.concurrency, run.budget_usd, run.retry_failed
    store.add_units(chosen)
    status = {s.unit: s.status for s in store.units()}
    todo = collections.deque(
        u for u in chosen if status[u] == "pending" or (retry_failed and status[u] == "failed")
    )
    already_done = sum(status[u] == "done" for u in chosen)
    spent_before = store.spent().cost_usd
    left = None if budget_usd is None else max(0.0, budget_usd - spent_before)
    run_id = store.start_run(
        kind,
        budget_usd=budget_usd,
        options={"concurrency": concurrency, "retry_failed": retry_failed, "pid": os.getpid()},
    )
    count = _Counters(len(todo))

    with track_usage(left) as meter, track_simulations() as simulated:
        share = _BudgetShare(meter, concurrency)

        def emit(event_kind: Any, unit: UnitId, **fields: Any) -> None:
            if progress is not None:
                progress(
                    RunEvent(
                        kind=event_kind,
                        unit=unit,
                        completed=count.completed,
                        total=count.total,
                        run_usage=meter.summary,
                        **fields,
                    )
                )

        def record(unit: UnitId, attempt: Attempt) -> None:
            spent, sims = attempt.usage, attempt.simulation
            if attempt.outcome == "fatal" and attempt.error is not None:
                raise attempt.error
            if attempt.outcome == "stopped":
                count.stopped += 1
                count.stopped_reason = "budget"
                store.mark_stopped(unit, spent, run_id, sims)
                emit("stopped", unit, usage=spent, simulation=sims)
                return
            if attempt.result is None:
                count.failed += 1
                count.failed_units.add(unit)
                store.mark_failed(unit, attempt.error_type, attempt.reason, spent, run_id, sims)
                emit("failed", unit, usage=spent, simulation=sims, reason=attempt.reason)
                return
            result = attempt.result.model_copy(update={"usage": spent, "simulation": sims})
            count.done += 1
            scored = result.scored
            if scored is not None and (sensitivity := scored.sensitivity) is not None:
                count.measured += 1
                count.flagged += sensitivity.flagged
            store.mark_done(unit, result, spent, run_id)
            emit("done", unit, usage=spent, simulation=sims, score=result.score)

        async def remotely(unit: UnitId, executor: UnitExecutor) -> Attempt:
            allowance = await share.take(len(todo) + 1)
            spent = 0.0
            try:
                attempt = await executor.attempt(unit, allowance)
                meter.add(attempt.usage)  # spent elsewhere: counted here
                simulated.add(attempt.simulation)
                spent = attempt.usage.cost_usd
            finally:
                await share.give_back(allowance, spent)
            return attempt

        async def worker() -> None:
            while todo and count.stopped_reason is None:
                unit = todo.popleft()
                store.begin_unit(unit, run_id)
                if executor is not None:
                    attempt = await remotely(unit, executor)
                else:
                    assert work is not None
                    attempt = await measure(work, unit)
                record(unit, attempt)

        stopped_reason: str | None = "error"  # unless the workers end normally
        try:
            await gather_or_cancel(*(worker() for _ in range(min(concurrency, len(todo)))))
            stopped_reason = count.stopped_reason
        finally:
            skipped = len(chosen) - count.done - count.failed
            store.finish_run(
                run_id,
                done=count.done,
                failed=count.failed,
                skipped=skipped,
                cost_usd=meter.summary.cost_usd,
                stopped_reason=stopped_reason,
            )
    failures = tuple(
        FailedUnit(unit=unit, reason=reason, in_this_call=unit in count.failed_units)
        for unit, reason in store.failures(among=chosen)
    )
    failed_before = len(failures) - count.failed
    return RunSummary(
        db=str(store.path),
        total=len(chosen),
        done=count.done,
        failed=len(failures),
        skipped=len(chosen) - count.done - len(failures),
        failed_now=count.failed,
        failed_before=failed_before,
        failures=failures,
        already_done=already_done,
        not_retried=failed_before,
        pending=len(chosen) - count.done - len(failures) - already_done,
        usage=meter.summary,
        simulation=simulated.stats,
        sensitivity_measured=count.measured,
        flagged=count.flagged,
        elapsed_s=time.perf_counter() - started,
        stopped_reason=count.stopped_reason,
        spent_usd=store.spent().cost_usd,
        collection=source.path,
    )
