"""`explain_neurons(..., cluster=...)`: the batch with its units spread over a Dask cluster.

The driver (this process) opens the cluster, ships the run's components to the scheduler once
(`neuron_explainer.cluster.shipping`; names travel as names and are built on the workers, so a
``hf:`` model is loaded by each worker, not here) and asks one worker to build them and describe
them (the run's configuration, checked against the database as in one process). Then, at most
``concurrency`` units at a time, it reads each unit's record, submits one task per unit and, when
the task ends, takes the unit's `Attempt` from the run's mailbox on the scheduler and records it:
only the driver writes the run database.

A worker builds the components once per run (`_components`), points every LLM client at the
run's shared pools (`neuron_explainer.cluster.limits`), runs the unit's pipeline on its event
loop and delivers the attempt before its task ends. A task whose worker dies is run again by
Dask elsewhere; if its unit was delivered already, the new run finds it so and spends nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from neuron_explainer._version import __version__
from neuron_explainer.cluster.engine import aopen_cluster, dask_distributed
from neuron_explainer.cluster.limits import share_limits
from neuron_explainer.cluster.service import RunChannel, WorkerLink
from neuron_explainer.cluster.shipping import ship, unship
from neuron_explainer.errors import InvalidInputError, NeuronExplainerError
from neuron_explainer.interfaces import Explainer, Simulator
from neuron_explainer.options import ExplainOptions, RunOptions
from neuron_explainer.plugins.registry import Registry, default_registry
from neuron_explainer.records import NeuronRecord, UnitId
from neuron_explainer.results import ExplanationResult, SimulationStats, UsageSummary
from neuron_explainer.runs._attempts import FATAL, UNIT_FAILURES, Attempt, judged, measure
from neuron_explainer.runs._files import check_writable
from neuron_explainer.runs._runner import RunEvent, RunSummary, run_units
from neuron_explainer.runs._sources import Source, open_source, select_units
from neuron_explainer.runs.explain import explain_record, neutral_memos
from neuron_explainer.runs.scoring import DEFAULT_SCORERS, RunScorers, build_scorers, scorer_config
from neuron_explainer.runs.store import RunStore

__all__ = ["explain_on_cluster", "unit_task_key"]

_BLOB = "components"


@dataclass(frozen=True)
class _Spec:
    """What the workers build a run's components from (names or objects, as given)."""

    explainer: Explainer | str
    simulator: Simulator | str
    scorers: tuple[Any, ...] | None
    registry: Registry | None
    options: ExplainOptions


@dataclass(frozen=True)
class _Bundle:
    """A run's components as one worker built them."""

    explainer: Explainer
    simulator: Simulator
    scorers: RunScorers
    options: ExplainOptions
    shared: Callable[[UnitId], Any]  # the neutral simulations' memo of a unit's kind


def _registry(registry: Registry) -> tuple[Any, ...]:
    """A registry travels as its plugins and entry-point setting; the worker's own
    environment applies there (``NEURON_EXPLAINER_PLUGINS``, ...)."""
    return _new_registry, (list(registry._extra), registry._use_entry_points)


def _new_registry(plugins: list[object], entry_points: bool) -> Registry:
    return Registry(plugins=plugins, entry_points=entry_points)


def _build(spec: _Spec) -> _Bundle:
    """Build the components of ``spec`` (in a worker thread: a model may load)."""
    registry = spec.registry or default_registry()
    explainer = registry.explainer(spec.explainer)
    if spec.options.revise:
        from neuron_explainer.runs.revision import check_can_revise

        check_can_revise(explainer)
    simulator = registry.simulator(spec.simulator)
    scorers = build_scorers(spec.scorers, registry, simulator)
    return _Bundle(explainer, simulator, scorers, spec.options, neutral_memos(spec.options))


def _config(bundle: _Bundle) -> dict[str, Any]:
    """The run's configuration (as `explain_neurons` records it), without its source."""
    config: dict[str, Any] = {
        "explainer": bundle.explainer.info.model_dump(mode="json"),
        "simulator": bundle.simulator.info.model_dump(mode="json"),
        "options": bundle.options.model_dump(mode="json"),
    }
    if bundle.scorers.names != DEFAULT_SCORERS:
        config["scorers"] = scorer_config(bundle.scorers)
    return config


# -- the workers' side (module-level: Dask pickles these functions by reference) -------------

_building: dict[str, asyncio.Future[_Bundle]] = {}  # per worker process: run id -> bundle


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else an `InvalidInputError` with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return InvalidInputError(f"{type(exc).__name__}: {exc}")
    return exc


async def _make(worker: Any, run: str) -> _Bundle:
    link = WorkerLink(worker, run)
    data = await link.call("blob", name=_BLOB)
    if data is None:
        raise InvalidInputError(f"run {run} is not open on the scheduler (it has ended)")
    bundle = await asyncio.to_thread(lambda: _build(unship(data)))
    pools = share_limits((bundle.explainer, bundle.simulator, bundle.scorers), link)
    for key, (rpm, tpm, slots) in pools.items():
        await link.call("pool", pool=key, rpm=rpm, tpm=tpm, slots=slots)
    return bundle


async def _components(worker: Any, run: str) -> _Bundle:
    """The run's components on this worker, built by the first task of the run that needs
    them (the others wait for it)."""
    future = _building.get(run)
    if future is None:
        future = asyncio.ensure_future(_make(worker, run))
        _building[run] = future
    return await asyncio.shield(future)


async def _describe(run: str) -> dict[str, Any]:
    """Task: build the run's components here and return their configuration."""
    from distributed import get_worker

    try:
        return _config(await _components(get_worker(), run))
    except NeuronExplainerError as exc:
        raise _portable(exc) from None


async def _unit_task(run: str, key: str, record: NeuronRecord, budget_usd: float | None) -> None:
    """Task: explain and score ``record``'s unit, and deliver the attempt to the run's mailbox
    (nothing at all when it was delivered already, by an earlier run of this task)."""
    from distributed import get_worker

    worker = get_worker()
    link = WorkerLink(worker, run)
    if await link.call("delivered", key=key):
        return
    bundle = await _components(worker, run)

    async def work(unit: UnitId) -> ExplanationResult:
        return await explain_record(
            record,
            bundle.explainer,
            bundle.simulator,
            bundle.options,
            shared=bundle.shared(unit),
            scorers=bundle.scorers,
        )

    attempt = await measure(work, record.unit, budget_usd)
    if attempt.error is not None:
        attempt = replace(attempt, error=_portable(attempt.error))
    await link.call("deliver", key=key, payload=pickle.dumps(attempt))


def _forget(run: str) -> None:
    """Drop the run's components from this worker."""
    _building.pop(run, None)


def _version() -> str:
    return __version__


# -- the driver's side ------------------------------------------------------------------------


def unit_task_key(run: str, n: int, unit: UnitId) -> str:
    """The Dask key of the ``n``-th task of run ``run``, for ``unit``."""
    return f"neuron-explainer-unit-{run}-{n}-L{unit.layer}-I{unit.index}"


class _ClusterUnits:
    """The `UnitExecutor` of a run on a cluster."""

    def __init__(self, client: Any, channel: RunChannel, source: Source) -> None:
        self.client = client
        self.channel = channel
        self.source = source
        self.submitted = 0

    async def attempt(self, unit: UnitId, budget_usd: float | None) -> Attempt:
        try:
            record = await self.source.record(unit)
        except (*FATAL, *UNIT_FAILURES) as exc:
            return judged(exc, UsageSummary(), SimulationStats())
        self.submitted += 1
        key = unit_task_key(self.channel.run, self.submitted, unit)
        future = self.client.submit(
            _unit_task, self.channel.run, key, record, budget_usd, key=key, pure=False
        )
        distributed = dask_distributed()
        try:
            await distributed.wait(future)  # ended: no round trip for its (empty) result
            if future.status != "finished":
                await future  # raises what the task raised
        except distributed.KilledWorker as exc:
            reason = f"the workers running it died, again and again ({exc})"
            return Attempt(
                "failed",
                UsageSummary(),
                SimulationStats(),
                error_type="KilledWorker",
                reason=reason,
            )
        finally:
            future.release()
        payload = await self.channel.take(key)
        if payload is None:  # pragma: no cover - a task ends only after delivering
            raise RuntimeError(f"the task of {unit} ended without delivering its outcome")
        attempt: Attempt = pickle.loads(payload)
        return attempt


async def _check_workers(client: Any) -> None:
    """Refuse workers that run another version of neuron_explainer (or none)."""
    try:
        versions: dict[str, str] = await client.run(_version)
    except ImportError as exc:
        raise InvalidInputError(
            f"the cluster's workers cannot import neuron_explainer ({exc}): install "
            f"neuron-explainer[dask]=={__version__} on every worker"
        ) from exc
    other = {address: v for address, v in versions.items() if v != __version__}
    if other:
        raise InvalidInputError(
            f"workers run other versions of neuron-explainer than this process "
            f"({__version__}): {other}; install the same version everywhere"
        )


@contextlib.asynccontextmanager
async def _opened(client: Any, spec: _Spec) -> AsyncIterator[tuple[RunChannel, dict[str, Any]]]:
    """The run opened on the scheduler, and its configuration as a worker described it."""
    await _check_workers(client)
    try:
        await RunChannel.attach(client)
    except Exception as exc:
        raise InvalidInputError(
            f"the Dask scheduler could not load neuron_explainer's run service ({exc}); install "
            f"neuron-explainer=={__version__} where the scheduler runs"
        ) from exc
    channel = RunChannel(client, uuid.uuid4().hex)
    blob = ship(spec, what="the run's components", reducers={Registry: _registry})
    await channel.open({_BLOB: blob})
    try:
        config = await client.submit(
            _describe, channel.run, key=f"neuron-explainer-describe-{channel.run}", pure=False
        )
        yield channel, config
    finally:
        await asyncio.shield(channel.close())
        with contextlib.suppress(Exception):
            await client.run(_forget, channel.run)


async def explain_on_cluster(
    cluster: Any,
    components: tuple[Explainer | str, Simulator | str, Any, Registry | None],
    options: ExplainOptions,
    run: RunOptions,
    db_path: Path,
    *,
    opening: Mapping[str, Any],
    selection: Mapping[str, Any],
    progress: Callable[[RunEvent], None] | None,
    started: float,
) -> RunSummary:
    """`aexplain_neurons` on ``cluster``: the same checks, records read and results recorded
    here, each unit's pipeline run on a worker.

    Args:
        cluster: what `neuron_explainer.cluster.aopen_cluster` takes.
        components: the explainer, simulator, scorers and registry as given.
        options, run: the validated options.
        db_path: the run database.
        opening: the keyword arguments of `open_source`.
        selection: ``layers``, ``neurons`` and ``units``, for `select_units`.
        progress, started: as for `run_units`.
    """
    from neuron_explainer.runs.batch import _as_held, _refuse_mismatch

    explainer, simulator, scorers, registry = components
    spec = _Spec(
        explainer, simulator, None if scorers is None else tuple(scorers), registry, options
    )
    async with aopen_cluster(cluster) as client, _opened(client, spec) as (channel, config):
        _refuse_mismatch(db_path, "explain", config, partial=True)
        check_writable(db_path)
        src = await open_source(**opening)
        config["source"] = src.identity
        chosen = select_units(src, **selection)
        if options.revise and options.test_sentences and opening.get("model") is not None:
            raise InvalidInputError(
                "revision with test sentences runs the model on new text here, not on the "
                "workers: run it without cluster=, or with test_sentences=0"
            )
        with RunStore(db_path, create=True) as store:
            store.lock()
            store.check_config("explain", _as_held(store, config), {"source_path": src.path})
            units = _ClusterUnits(client, channel, src)
            return await run_units(
                store,
                "explain",
                chosen,
                None,
                run=run,
                progress=progress,
                started=started,
                source=src,
                executor=units,
            )
