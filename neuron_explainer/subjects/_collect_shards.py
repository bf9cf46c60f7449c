"""`collect(..., cluster=...)`: the same collection, its windows folded by cluster workers.

The driver reads the corpus, writes the window files and cuts the windows into shards; each
worker loads the model once (kept per worker process across shards), folds a shard into
partial states (`CollectionRun.fold` with fresh states) and sends them back; the driver merges
them (`neuron_explainer.subjects._collect_merge`) and checkpoints exactly as a single process
does. Every sampling decision is keyed by the window id and batches are cut on the same grid
(`batch_end`), so the result equals a single process's bit for bit on the CPU.

Later windows need what earlier ones fix: first one worker computes window 0's moment shift
(`window_shifts`, a few numbers per unit), then the warm-up windows are folded in one shard per
worker, and once they are merged (the quantile boundaries are fixed) the rest, in shards up to
each multiple of ``checkpoint_every``. Within a phase shards run in parallel. A shard's partial
state is as big as the whole collection's, whatever its length, so shards are few and long.

Results are merged in window order (a shard that finishes early waits, in
memory, for the ones before it), so a checkpoint always covers a prefix of the corpus and a
restarted driver resumes like a single process: finished shards past the last checkpoint are
redone. A worker that dies is replaced by the engine, which reruns its shard; a finished shard
is never folded twice (`merge_into` refuses an overlap).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import pickle
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.subjects._collect_batches import batch_end
from neuron_explainer.subjects._collect_merge import merge_into
from neuron_explainer.subjects._collect_run import CollectionRun
from neuron_explainer.subjects.corpus import Window

__all__ = ["ShardJob", "fold_on_cluster", "fold_shard", "window_shifts"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardJob:
    """What a worker needs to rebuild the collector: the `load_model` arguments, the units
    (`collect`'s ``layers`` / ``sae`` / ``heads`` / ``direction`` arguments) and the config."""

    model: str
    tokenizer: Any
    dtype: str
    device: str | None
    units: dict[str, Any]
    config: dict[str, Any]
    key: str = field(default="", compare=False)

    def with_key(self) -> ShardJob:
        digest = hashlib.sha256(pickle.dumps((self.model, self.dtype, self.units, self.config)))
        return ShardJob(
            self.model, self.tokenizer, self.dtype, self.device, self.units, self.config,
            digest.hexdigest(),
        )  # fmt: skip


_HELD: list[tuple[str, ...]] = []  # the worker_cache key of the collector this process keeps
_HELD_LOCK = threading.Lock()


def _worker_run(job: ShardJob) -> tuple[threading.Lock, CollectionRun]:
    """The collector of ``job`` in this worker process (`worker_cache`: built once, kept
    across shards; one collection per process, so another's model is let go)."""
    from neuron_explainer.cluster.cache import forget_cached, worker_cache

    key = ("neuron_explainer", "collection", job.key)
    with _HELD_LOCK:
        for old in _HELD:
            if old != key:
                forget_cached(old)
        _HELD[:] = [key]
    return worker_cache(key, lambda: (threading.Lock(), _build_run(job)))


def _build_run(job: ShardJob) -> CollectionRun:
    from neuron_explainer.models.loading import load_model
    from neuron_explainer.subjects.collect import build_capture

    loaded = load_model(job.model, tokenizer=job.tokenizer, dtype=job.dtype, device=job.device)
    capture, groups, _ = build_capture(loaded, job.units)
    return CollectionRun(Path("."), job.config, job.key, loaded, capture, {}, groups)


def _limit_threads() -> None:
    """Give torch the worker's thread count (a process per worker on a shared node)."""
    try:
        from distributed import get_worker

        threads = get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        return
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def fold_shard(
    job: ShardJob,
    first: int,
    windows: list[Window],
    primes: dict[str, tuple[np.ndarray | None, np.ndarray | None]],
) -> dict[str, dict[str, np.ndarray]]:
    """Fold windows ``first, first + 1, ...`` into fresh partial states (run on a worker).

    Args:
        job: the collector to use (`ShardJob`, built with `ShardJob.with_key`).
        first: the id of ``windows[0]``.
        windows: the shard's windows, in order.
        primes: per state key, window 0's moment shift and the quantile boundaries (each
            ``None`` while not known: only shards before them may lack them).

    Returns:
        Per state key, the partial state's arrays (`LayerState.arrays`).
    """
    _limit_threads()
    started = time.perf_counter()
    lock, run = _worker_run(job)
    config = job.config
    loaded = time.perf_counter()
    with lock:
        run.states, run.primes = {}, primes
        done = 0
        while done < len(windows):
            start = first + done
            end = batch_end(
                start, config["batch_size"], config["checkpoint_every"], config["quantile_warmup"]
            )
            run.fold(windows[done : done + end - start], start)
            done += end - start
        out = {key: state.arrays() for key, state in run.states.items()}
        run.states = {}
    log.debug("shard %d+%d: model %.1f s, folded in %.1f s", first, len(windows),
              loaded - started, time.perf_counter() - loaded)  # fmt: skip
    return out


def window_shifts(job: ShardJob, window: Window) -> dict[str, np.ndarray]:
    """Each state's moment shift, window 0's mean (run on a worker before the shards, so that
    every shard starts from it; a few numbers per unit, not a whole state)."""
    _limit_threads()
    lock, run = _worker_run(job)
    with lock:
        run.states, run.primes = {}, {}
        run.fold([window], 0)
        out = {key: state.a["moment_shift"].copy() for key, state in run.states.items()}
        run.states = {}
    return out


@dataclass
class _Shard:
    first: int
    windows: list[Window]
    need: int  # the prefix that must be merged before it can start


def _shards(
    stream: Iterator[Window], start: int, cuts: Callable[[int], int], warmup: int
) -> Iterator[_Shard]:
    """Cut the windows from ``start`` on at ``cuts(first)`` (the end of the shard beginning
    at ``first``), never across ``warmup``."""
    first = start
    while True:
        end = cuts(first)
        if first < warmup < end:
            end = warmup
        windows = [w for _, w in zip(range(end - first), stream, strict=False)]
        if not windows:
            return
        need = 0 if first < warmup else warmup
        yield _Shard(first, windows, need)
        first += len(windows)


def shard_cuts(
    batch_size: int, every: int, warmup: int, workers: int, total: int | None = None
) -> Callable[[int], int]:
    """Shard ends, each on a multiple of ``batch_size`` (a batch edge on every path):
    warm-up windows in one shard per worker; with the number of windows ``total`` known, the
    later ones in equal shards of at most ``every``, a multiple of ``workers`` of them (so the
    workers finish together), else up to each multiple of ``every``. A shard's state is as big
    as a whole collection's, so shards are few and long."""
    warm = max(batch_size, -(-warmup // workers // batch_size) * batch_size)
    edges: list[int] = []
    if total is not None and total > warmup:
        remaining = total - warmup
        k = workers * -(-remaining // (workers * every))
        size = -(-remaining // k)
        edges = sorted(
            {min(total, -(-(warmup + i * size) // batch_size) * batch_size) for i in range(1, k)}
            | {total}
        )

    def cut(first: int) -> int:
        if first < warmup:
            return (first // warm + 1) * warm
        later = [e for e in edges if e > first]
        return later[0] if later else (first // every + 1) * every

    return cut


def _primes(
    run: CollectionRun, shifts: dict[str, np.ndarray]
) -> dict[str, tuple[np.ndarray | None, np.ndarray | None]]:
    """What a new shard's states start from: window 0's shift (from the merged states, or
    `window_shifts` before any is merged) and the quantile boundaries once fixed."""
    out: dict[str, tuple[np.ndarray | None, np.ndarray | None]] = {
        key: (shift, None) for key, shift in shifts.items()
    }
    for key, state in run.states.items():
        bounds = state.a["quantile_boundaries"]
        fixed = bounds.size == 0 or not np.isnan(bounds).all()
        out[key] = (
            state.a["moment_shift"].copy() if state.shift_known else None,
            bounds.copy() if fixed else None,
        )
    return out


def _gpu_resources(client: Any) -> dict[str, int] | None:
    """``{"GPU": 1}`` when some worker advertises a ``GPU`` resource (``dask worker
    --resources GPU=1``, one per GPU as dask-cuda starts them): each shard then runs on a
    worker holding a GPU, one at a time per GPU; else no constraint."""
    workers = client.scheduler_info().get("workers", {}).values()
    return {"GPU": 1} if any(w.get("resources", {}).get("GPU") for w in workers) else None


def _merge(run: CollectionRun, arrays: dict[str, dict[str, np.ndarray]]) -> None:
    seed = run.config["seed"]
    lanes = {key: (layer, lanes) for key, layer, lanes in run.targets.values()}
    for key, part in arrays.items():
        layer, lane = lanes[key]
        incoming = run._state(part, lane)
        if key in run.states:
            merge_into(run.states[key], incoming, seed=seed, layer=layer)
        else:
            run.states[key] = incoming


def fold_on_cluster(
    run: CollectionRun,
    cluster: Any,
    job: ShardJob,
    stream: Iterator[Window],
    progress: Callable[[int], None] | None = None,
    total: int | None = None,
) -> None:
    """Fold ``stream`` into ``run`` on ``cluster`` (`collect`'s ``cluster`` argument);
    ``total``: the number of windows of the whole corpus, when counted (balanced shards)."""
    from neuron_explainer.cluster.engine import open_cluster

    if run.sampler != 2:
        raise InvalidInputError(
            f"the collection in {run.out} was begun by an earlier version of neuron-explainer "
            "(sampler 1, whose samples depend on the order windows come in): finish it in one "
            "process (without cluster=), or pass overwrite=True to start over"
        )
    with open_cluster(cluster) as client:
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        _fold_shards(run, client, job, stream, workers=workers, progress=progress, total=total)


def _fold_shards(
    run: CollectionRun,
    client: Any,
    job: ShardJob,
    stream: Iterator[Window],
    *,
    workers: int,
    progress: Callable[[int], None] | None = None,
    total: int | None = None,
) -> None:
    """Fold ``stream`` (the windows after ``run.windows_done``) on ``client``'s workers into
    ``run``, checkpointing as a single process would (see the module docstring)."""
    from neuron_explainer.cluster.engine import dask_distributed

    every, warmup = run.sizes["checkpoint_every"], run.config["quantile_warmup"]
    cuts = shard_cuts(run.sizes["batch_size"], every, warmup, workers, total)
    shifts: dict[str, np.ndarray] = {}
    if run.windows_done == 0:  # window 0's shift first, for every shard to start from
        window = next(stream, None)
        if window is None:
            return
        stream = itertools.chain([window], stream)
        resources = _gpu_resources(client)
        shifts = client.submit(window_shifts, job, window, pure=False, resources=resources).result()
    shards = _shards(stream, run.windows_done, cuts, warmup)
    queue: deque[_Shard] = deque()
    inflight: dict[Any, _Shard] = {}
    finished: dict[int, tuple[_Shard, dict[str, dict[str, np.ndarray]]]] = {}
    futures = dask_distributed().as_completed()
    lookahead = 2 * workers + 1
    resources = _gpu_resources(client)
    exhausted = False
    while True:
        while not exhausted and len(queue) + len(inflight) + len(finished) < lookahead:
            shard = next(shards, None)
            if shard is None:
                exhausted = True
            else:
                queue.append(shard)
        while queue and queue[0].need <= run.windows_done:
            shard = queue.popleft()
            future = client.submit(
                fold_shard, job, shard.first, shard.windows, _primes(run, shifts), pure=False,
                resources=resources,
            )  # fmt: skip
            inflight[future] = shard
            futures.add(future)
        if not inflight:
            return
        future = next(futures)
        shard = inflight.pop(future)
        started = time.perf_counter()
        finished[shard.first] = (shard, future.result())
        future.release()
        log.debug("shard %d+%d fetched in %.1f s", shard.first, len(shard.windows),
                  time.perf_counter() - started)  # fmt: skip
        while run.windows_done in finished:
            shard, arrays = finished.pop(run.windows_done)
            started = time.perf_counter()
            _merge(run, arrays)
            log.debug("shard %d merged in %.1f s", shard.first, time.perf_counter() - started)
            before = run.windows_done
            run.record(shard.windows)
            if run.windows_done // every > before // every:
                started = time.perf_counter()
                run.checkpoint(finished=False)
                log.debug("checkpoint in %.1f s", time.perf_counter() - started)
            if progress is not None:
                progress(run.windows_done)
