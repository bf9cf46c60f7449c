"""Re-score a finished run's explanations with another simulator, into a new run database.

The explainer never runs again: every done unit is simulated from its stored explanation on the
very held-out records that scored it (see `rescore`).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from neuron_explainer._aio import sync_twin
from neuron_explainer._version import __version__
from neuron_explainer.errors import InvalidInputError
from neuron_explainer.interfaces import Simulator, unit_context
from neuron_explainer.options import ExplainOptions, RunOptions, ScoringName
from neuron_explainer.plugins.registry import Registry, default_registry
from neuron_explainer.records import ActivationRecord, UnitId
from neuron_explainer.records.splits import split_records
from neuron_explainer.results import ExplanationResult
from neuron_explainer.runs._runner import RunEvent, RunSummary, run_units
from neuron_explainer.runs._sources import RecordSource, Source, open_source
from neuron_explainer.runs.explain import neutral_memos, score_with_options, simulate_baseline
from neuron_explainer.runs.scoring import (
    DEFAULT_SCORERS,
    RunScorers,
    build_scorers,
    correlation_entry,
    scorer_config,
)
from neuron_explainer.runs.store import RunStore
from neuron_explainer.scorers._memo import reusing_for_unit
from neuron_explainer.scorers.base import Scorer, ScoringData
from neuron_explainer.subjects.collection import Collection

__all__ = ["arescore", "rescore"]


def _default_out(db: Path, simulator: Simulator) -> Path:
    info = simulator.info
    label = str(info.settings.get("llm") or "") or info.name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "simulator"
    return db.with_name(f"{db.stem}.rescore-{slug}{db.suffix or '.sqlite'}")


async def arescore(
    db: str | os.PathLike[str],
    simulator: Simulator | str,
    *,
    out_db: str | os.PathLike[str] | None = None,
    records: RecordSource | None = None,
    source: Collection | str | os.PathLike[str] | None = None,
    concurrency: int = 8,
    budget_usd: float | None = None,
    retry_failed: bool = False,
    registry: Registry | None = None,
    progress: Callable[[RunEvent], None] | None = None,
    scoring: ScoringName | None = None,
    sensitivity: bool | Literal["auto"] | None = None,
    scorers: Sequence[Scorer | str] | None = None,
) -> RunSummary:
    """Re-score a run's explanations with another simulator (or other scorers); the explainer
    never runs again.

    `arescore` is the coroutine: await it inside a running event loop. `rescore` runs it from
    synchronous code; both take the same arguments.

    Every done unit of ``db`` is simulated again from its stored explanation, on the very
    records that scored it: the unit's record is read again from the run's source and cut by
    the stored split plan (a record whose held-out excerpts changed raises), the calibration
    (same method) is fitted on the calibration split and the same held-out split is scored.
    Results go to a new run database, ``out_db``, resumable like any run.

    Args:
        db: the run database to re-score (read only).
        simulator: the new `Simulator` or a registered name.
        out_db: where the new results go (default: beside ``db``,
            ``<db stem>.rescore-<simulator>.sqlite``).
        records: the records, when the run was made from ``records=`` (a collection is
            found from the run's meta).
        source: the run's collection, when it moved since the run (it must be the same
            collection: same model, config and windows).
        concurrency: units in flight at once.
        budget_usd: cap on the estimated cost of everything ``out_db`` records (see
            `explain_neurons`).
        retry_failed: re-score units whose re-scoring failed before.
        registry: where names are looked up.
        progress: called with a `RunEvent` after every unit.
        scoring: ``"plain"`` or ``"contrastive"`` (see `explain_neuron`); ``None``: as the
            run was scored. The neutral explanation is simulated by the new simulator.
        sensitivity: ``True``, ``False`` or ``"auto"`` (see `explain_neuron`); ``None``: as
            the run measured it.
        scorers: the scorers, as in `explain_neuron` (default: the simulation score alone,
            ``"correlation"``, with the new simulator); e.g. ``["detection"]`` judges the
            stored explanations on the same held-out split with the simulator's LLM.

    Returns:
        A `RunSummary` of the re-scoring run (``done``: units re-scored in this call).

    Raises:
        InvalidInputError: ``db`` holds no run, its source changed, or ``out_db`` holds
            another run.
        UsageError: called inside an event loop, or another process writes ``out_db``.
    """
    started = time.perf_counter()
    run = RunOptions.build(
        concurrency=concurrency, budget_usd=budget_usd, retry_failed=retry_failed
    )
    source_db = Path(db)
    components = registry or default_registry()
    the_simulator = components.simulator(simulator)
    the_scorers = build_scorers(scorers, components, the_simulator)
    target = Path(out_db) if out_db is not None else _default_out(source_db, the_simulator)
    if target.resolve() == source_db.resolve():
        raise InvalidInputError("out_db must differ from db: a rescore writes a new database")
    with RunStore(source_db) as explained, RunStore(target, create=True) as store:
        meta = explained.meta()
        held = meta.get("config")
        if held is None:
            raise InvalidInputError(f"{source_db} holds no run to re-score")
        src = await open_source(
            source if source is not None or records is not None else meta.get("source_path"),
            records=records,
            expect=held["source"],
        )
        changed = {
            key: value
            for key, value in (("scoring", scoring), ("sensitivity", sensitivity))
            if value is not None
        }
        options = ExplainOptions.build(held["options"], **changed)
        config = {
            "source": held["source"],
            "explainer": held["explainer"],
            "simulator": the_simulator.info.model_dump(mode="json"),
            # as the explained run holds them, with the scoring changes asked for
            "options": {**held["options"], **changed},
            "explained_with": held["simulator"],
        }
        if the_scorers.names != DEFAULT_SCORERS:  # rescores before scorers have no such key
            config["scorers"] = scorer_config(the_scorers)
        store.lock()
        store.check_config(
            "rescore",
            config,
            {"source_path": src.path, "rescored_from": str(source_db.resolve())},
        )

        shared = neutral_memos(options)  # the neutral simulations, once for the batch

        async def work(unit: UnitId) -> ExplanationResult:
            with reusing_for_unit(shared(unit)), unit_context(unit):
                return await _rescore_unit(
                    explained, src, the_simulator, unit, options, the_scorers
                )

        done = [s.unit for s in explained.units("done")]
        return await run_units(
            store, "rescore", done, work, run=run, progress=progress, started=started, source=src
        )


def _same_records(now: Sequence[ActivationRecord], stored: Sequence[ActivationRecord]) -> bool:
    """Whether ``now`` (read from the source again) are the records ``stored`` in a result: equal,
    a stored record without a window id (a result written before window ids) matching
    whatever window id the source now gives."""
    if len(now) != len(stored):
        return False
    return all(
        a == (b if b.window_id is not None else b.model_copy(update={"window_id": a.window_id}))
        for a, b in zip(now, stored, strict=True)
    )


async def _rescore_unit(
    explained: RunStore,
    src: Source,
    simulator: Simulator,
    unit: UnitId,
    options: ExplainOptions,
    scorers: RunScorers,
) -> ExplanationResult:
    original = explained.result(unit)
    if original is None:  # pragma: no cover - the unit was listed as done
        raise InvalidInputError(f"{unit} has no result in {explained.path}")
    record = await src.record(unit)
    plan = original.split_plan
    splits = split_records(
        record, n_top_per_split=plan.n_top_per_split, n_random_per_split=plan.n_random_per_split
    )
    split = original.scored.split if original.scored is not None else options.score_split
    same = original.scored is None or _same_records(
        splits.held_out(split).records, original.scored.held_out_records()
    )
    if not splits.plan.agrees_with(plan) or not same:
        raise InvalidInputError(
            f"the records of {unit} are not the ones it was explained with (its {split} split "
            "differs); the source changed since the run"
        )
    here = options.model_copy(update={"score_split": "test" if split == "test" else "valid"})
    scored = None
    if scorers.correlation:
        neutral = await simulate_baseline(simulator, splits, here)
        scored = await score_with_options(simulator, original.explanation, splits, here, neutral)
    others = await scorers.ascore(original.explanation, ScoringData(record, splits, split))
    entry = None if scored is None else correlation_entry(simulator, scored.correlation)
    return original.model_copy(
        update={
            "scored": scored,
            "scores": scorers.in_order(others, entry),
            "simulator": simulator.info,
            "library_version": __version__,
            "created_at": datetime.now(UTC),
        }
    )


rescore = sync_twin(arescore)
