"""Explain many units in one resumable run, with the run's state in SQLite.

`aexplain_neurons` (sync twin `explain_neurons`) runs collection → explanation → simulation →
scoring for every chosen unit, ``concurrency`` units at a time on one event loop (the LLM
backend applies its own request and token limits), and commits each unit's result to a
`neuron_explainer.runs.store.RunStore` the moment it finishes. Run the same call again after a
crash, a kill or a budget stop and it does only the units that are not done. `arescore`
re-scores a finished run's explanations with another simulator, on the same held-out records.

Records come from, in order of precedence:

* ``records=``: a mapping ``{UnitId: NeuronRecord}`` or a function ``unit -> NeuronRecord``
  (called in a worker thread); each record's ``unit`` must be the unit asked for;
* ``source=``: a `Collection` or its folder (records are read in worker threads);
* ``model=`` and ``corpus=``: `collect` first (resumably) into ``collection_dir``, default
  ``<db folder>/<db stem>.collection``, then read that collection.

See docs/batch.md for the database, the resume and budget rules, dry runs and exports.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from neuron_explainer._aio import sync_twin
from neuron_explainer.errors import InvalidInputError
from neuron_explainer.interfaces import Explainer, Simulator
from neuron_explainer.options import ExplainOptions, RunOptions
from neuron_explainer.plugins.registry import Registry, default_registry
from neuron_explainer.records import UnitId
from neuron_explainer.results import ExplanationResult
from neuron_explainer.runs._files import check_writable, is_empty
from neuron_explainer.runs._runner import RunEvent, RunSummary, run_units
from neuron_explainer.runs._sources import RecordSource, Source, open_source, select_units
from neuron_explainer.runs.explain import explain_record, neutral_memos
from neuron_explainer.runs.scoring import DEFAULT_SCORERS, RunScorers, build_scorers, scorer_config
from neuron_explainer.runs.store import RunStore, config_mismatch
from neuron_explainer.scorers.base import Scorer
from neuron_explainer.subjects.collection import Collection

__all__ = ["EXPLAIN_OPTIONS", "RunEstimate", "aexplain_neurons", "explain_neurons"]

EXPLAIN_OPTIONS: dict[str, Any] = ExplainOptions().model_dump()
"""The options ``explain_options`` may set, with their defaults: the fields of
`neuron_explainer.ExplainOptions`."""


class RunEstimate(BaseModel):
    """What a run would cost, from a dry run (nothing is sent).

    Attributes:
        units: units the run would explain (not done yet).
        requests, prompt_tokens, completion_tokens, cost_usd: totals, extrapolated from the
            sampled units' prompts to all ``units``.
        per_neuron: the per-unit means (``requests``, ``prompt_tokens``,
            ``completion_tokens``, ``cost_usd``), the same per role (``explainer``,
            ``simulator``) and the units sampled (``sampled``).
        notes: how it was estimated, and what could not be.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    units: int
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    per_neuron: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


def _held_options(options: Any) -> Any:
    """Options as a run database holds them, read by this version: missing fields take their
    defaults (a run written before a field existed); options this version cannot read are
    returned as they are (and so differ from any wanted ones)."""
    try:
        return ExplainOptions.build(options or {}).model_dump(mode="json")
    except InvalidInputError:
        return options


def _held(db: Path) -> tuple[str | None, dict[str, Any] | None, dict[UnitId, str], float]:
    """The kind, config (options read by `_held_options`), unit statuses and spending of an
    existing database (nothing written; an empty file holds nothing yet)."""
    if not db.exists() or is_empty(db):
        return None, None, {}, 0.0
    with RunStore(db) as store:
        meta = store.meta()
        statuses: dict[UnitId, str] = {s.unit: s.status for s in store.units()}
        config = meta.get("config")
        if config is not None:
            config = {**config, "options": _held_options(config.get("options"))}
        return meta.get("kind"), config, statuses, store.spent().cost_usd


def _refuse_mismatch(db: Path, kind: str, config: Mapping[str, Any], partial: bool) -> None:
    """Raise before any work if ``db`` holds another config (``partial``: compare all but the
    source, which is known only after collecting)."""
    held_kind, held, _, _ = _held(db)
    if held is None:
        return
    wanted = {**config, "source": held.get("source")} if partial else config
    problem = config_mismatch(held_kind, held, kind, wanted)
    if problem is not None:
        raise InvalidInputError(
            f"{db} holds results of another configuration ({problem}); results are never "
            "mixed: use another database, or the same settings to resume"
        )


def _as_held(store: RunStore, config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with the options exactly as ``store`` holds them when they mean the same
    (so a run written before an option existed resumes, its config unchanged)."""
    held = store.meta().get("config")
    if held is not None and _held_options(held.get("options")) == config["options"]:
        return {**config, "options": held["options"]}
    return dict(config)


async def _dry_run(
    db: Path,
    config: dict[str, Any],
    src: Source,
    chosen: list[UnitId],
    explainer: Explainer,
    simulator: Simulator,
    options: ExplainOptions,
    run: RunOptions,
    scorers: RunScorers,
) -> RunEstimate:
    from neuron_explainer.runs.estimate import estimate_run

    _refuse_mismatch(db, "explain", config, partial=False)
    _, _, statuses, spent = _held(db)
    estimate = await estimate_run(
        src,
        chosen,
        statuses,
        explainer,
        simulator,
        options=options,
        retry_failed=run.retry_failed,
        sample_units=run.sample_units,
        scorers=None if scorers.names == DEFAULT_SCORERS else scorers,
    )
    if run.budget_usd is not None:
        left = max(0.0, run.budget_usd - spent)
        fits = "fits in" if estimate["cost_usd"] <= left else "exceeds"
        estimate["notes"].append(
            f"the estimate {fits} the budget left: ${left:.4f} of ${run.budget_usd:.4f} "
            f"(${spent:.4f} spent by earlier calls)"
        )
    return RunEstimate(**estimate)


async def aexplain_neurons(
    source: Collection | str | os.PathLike[str] | None = None,
    *,
    model: str | os.PathLike[str] | Any = None,
    corpus: Any = None,
    records: RecordSource | None = None,
    source_name: str | None = None,
    collection_dir: str | os.PathLike[str] | None = None,
    layers: str | Sequence[int] | None = None,
    neurons: str | Sequence[int] | None = None,
    units: Iterable[UnitId] | None = None,
    sae: str | os.PathLike[str] | Any = None,
    latents: Sequence[int] | None = None,
    heads: Sequence[tuple[int, int]] | None = None,
    direction: str | os.PathLike[str] | Any = None,
    hook: str | None = None,
    db: str | os.PathLike[str],
    explainer: Explainer | str = "token-table",
    simulator: Simulator | str = "token-table",
    concurrency: int = 8,
    budget_usd: float | None = None,
    dry_run: bool = False,
    retry_failed: bool = False,
    collect_options: Mapping[str, Any] | None = None,
    explain_options: ExplainOptions | Mapping[str, Any] | None = None,
    registry: Registry | None = None,
    progress: Callable[[RunEvent], None] | None = None,
    sample_units: int = 3,
    scorers: Sequence[Scorer | str] | None = None,
    cluster: str | int | Any = None,
) -> RunSummary | RunEstimate:
    """Explain and score many units, resumably, with the run's state in the SQLite file ``db``.

    `aexplain_neurons` is the coroutine: await it inside a running event loop. `explain_neurons`
    runs it from synchronous code; both take the same arguments.

    Every chosen unit that is not done yet goes through `explain_neuron`, ``concurrency`` at
    a time; each result is committed the moment it finishes. Call it again with the same
    arguments after an interruption and only the remaining units run. A unit that fails
    (`SimulationError`, `ExplanationError`, `InsufficientRecordsError`, an `LLMError` after
    the backend's retries) is recorded as failed with its reason and the run goes on.

    Args:
        source: a `Collection` or its folder.
        model: instead of ``source``: a model to `collect` first (anything `load_model`
            takes), with ``corpus``; the collection goes to ``collection_dir``.
        corpus: the text to collect over (anything `corpus_from` takes).
        records: instead of ``source``: ``{UnitId: NeuronRecord}`` or a function of the
            unit (give ``units=``, or ``layers=``/``neurons=`` to pick mapping keys).
        source_name: with ``records``, a name for them, checked when the run resumes
            (default ``"records"``).
        collection_dir: where ``model`` is collected (default
            ``<db folder>/<db stem>.collection``).
        layers: layers to explain (``"0-3"``, ``[0, 5]``); default every collected layer.
            Required with ``model`` (they are the layers collected).
        neurons: neurons of each layer (``"0-99"``, ``[3, 7]``); default all.
        units: instead of ``layers`` x ``neurons``: the units to explain.
        sae, latents, heads: with ``model``, collect an SAE's latents (all when ``latents``
            is ``None``) or attention heads (``(layer, head)`` pairs) instead of ``layers``
            (`collect`'s arguments of those names); ``neurons`` then picks indices among
            them. A collection of latents or heads is explained whole by default.
        direction, hook: with ``model``, collect directions (one vector ``[d_model]`` or rows
            ``[K, d_model]``, an array or ``.npy`` file) at the site ``hook`` instead
            (``hook`` alone: the site of an SAE whose files do not name it).
        db: the run database (created if missing or an empty file).
        explainer: an `Explainer` or a registered name (``"openai:gpt-4o-mini"``).
        simulator: a `Simulator` or a registered name.
        concurrency: units in flight at once.
        budget_usd: cap on the estimated cost of *all* calls recorded in ``db`` (earlier
            calls included); the run stops cleanly before a call that could pass it.
        dry_run: estimate requests, tokens and cost without sending anything (returns a
            `RunEstimate`; a ``model`` is still collected).
        retry_failed: run failed units again.
        collect_options: options for `collect` (``window_length``, ``top_k``, ``device``,
            ...).
        explain_options: the options of every unit's explanation and score: an
            `ExplainOptions`, or a mapping of its fields (`EXPLAIN_OPTIONS`).
        registry: where names are looked up.
        progress: called with a `RunEvent` at the start and after every unit.
        sample_units: units whose prompts a dry run builds.
        scorers: the scorers of every unit, as in `explain_neuron` (default: the simulation
            score alone; the first is each unit's headline score). They are part of the run's
            configuration: resuming with others is refused.
        cluster: run each unit's pipeline on a Dask cluster (docs/cluster.md): a scheduler's
            address (``"tcp://10.0.0.5:8786"``), a number of local worker processes started
            for the run, or a ``distributed.Client``. Components named by string are built on
            each worker; the LLMs' rate limits and concurrency hold across the cluster; only
            this process reads records and writes ``db``. Ignored by a dry run.

    Returns:
        A `RunSummary` (a `RunEstimate` with ``dry_run``).

    Raises:
        InvalidInputError: bad arguments (an unknown explain option, a value out of range),
            units the source does not have, or ``db`` holds a run with another source,
            explainer, simulator or options; with ``cluster``: Dask is not installed, the
            scheduler cannot be reached, the workers run another version, or a component
            cannot be sent to them.
        UsageError: another process is running on ``db``, or called inside an event loop.
        DatabaseAccessError: ``db`` or its folder cannot be written (checked before anything
            is collected); the message names the path and the cause.
        AuthenticationError, CapabilityError, and any error that is not a unit's own failure:
            the run stops (finished units stay committed) and the error propagates.
    """
    started = time.perf_counter()
    units_asked = {"sae": sae, "latents": latents, "heads": heads, "direction": direction}
    units_asked["hook"] = hook
    if any(v is not None for v in units_asked.values()):
        if model is None:
            raise InvalidInputError(
                "sae=, latents=, heads=, direction= and hook= collect from a model: give model="
            )
        asked = {k: v for k, v in units_asked.items() if v is not None}
        collect_options = {**(collect_options or {}), **asked}
    run = RunOptions.build(
        concurrency=concurrency,
        budget_usd=budget_usd,
        retry_failed=retry_failed,
        sample_units=sample_units,
    )
    options = ExplainOptions.build(explain_options)
    db_path = Path(db)
    if cluster is not None and not dry_run:
        from neuron_explainer.runs._cluster import explain_on_cluster

        return await explain_on_cluster(
            cluster,
            (explainer, simulator, scorers, registry),
            options,
            run,
            db_path,
            opening={
                "source": source,
                "model": model,
                "corpus": corpus,
                "records": records,
                "source_name": source_name,
                "collection_dir": collection_dir or db_path.with_name(db_path.stem + ".collection"),
                "layers": layers,
                "collect_options": collect_options,
            },
            selection={"layers": layers, "neurons": neurons, "units": units},
            progress=progress,
            started=started,
        )
    components = registry or default_registry()
    the_explainer = components.explainer(explainer)
    if options.revise:
        from neuron_explainer.runs.revision import check_can_revise

        check_can_revise(the_explainer)
    the_simulator = components.simulator(simulator)
    the_scorers = build_scorers(scorers, components, the_simulator)
    config: dict[str, Any] = {
        "explainer": the_explainer.info.model_dump(mode="json"),
        "simulator": the_simulator.info.model_dump(mode="json"),
        "options": options.model_dump(mode="json"),
    }
    if the_scorers.names != DEFAULT_SCORERS:  # runs before scorers existed have no such key
        config["scorers"] = scorer_config(the_scorers)
    _refuse_mismatch(db_path, "explain", config, partial=True)
    if not dry_run:
        check_writable(db_path)  # before collecting, which may take long
    src = await open_source(
        source,
        model=model,
        corpus=corpus,
        records=records,
        source_name=source_name,
        collection_dir=collection_dir or db_path.with_name(db_path.stem + ".collection"),
        layers=layers,
        collect_options=collect_options,
    )
    config["source"] = src.identity
    chosen = select_units(src, layers=layers, neurons=neurons, units=units)
    if dry_run:
        return await _dry_run(
            db_path, config, src, chosen, the_explainer, the_simulator, options, run, the_scorers
        )

    # the neutral explanation's simulation of an excerpt is the same for every unit of a kind,
    # and the units of a collection share its random excerpts: simulated once for the batch
    shared = neutral_memos(options)

    async def work(unit: UnitId) -> ExplanationResult:
        probe = src.probe(unit) if options.revise and options.test_sentences else None
        return await explain_record(
            await src.record(unit),
            the_explainer,
            the_simulator,
            options,
            shared=shared(unit),
            probe=probe,
            scorers=the_scorers,
        )

    with RunStore(db_path, create=True) as store:
        store.lock()
        store.check_config("explain", _as_held(store, config), {"source_path": src.path})
        return await run_units(
            store, "explain", chosen, work, run=run, progress=progress, started=started, source=src
        )


explain_neurons = sync_twin(aexplain_neurons)
