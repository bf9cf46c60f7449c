"""`collect(..., cluster=...)`: the same collection, its windows folded by cluster workers.

The driver reads the corpus, writes the window files and cuts the windows into shards; each
worker loads the model once (kept per worker process across shards), folds a shard into
partial states (`CollectionRun.fold` with fresh states) and sends them back; the driver merges
them (`neuron_explainer.subjects._collect_merge`) and checkpoints exactly as a single process
does. Every sampling decision is keyed by the window id and batches are cut on the same grid
(`batch_end`), so the result equals a single process's bit for bit on the CPU.

Later windows need what earlier ones fix: first one worker computes window 0's moment shift
(`window_shifts`, a few numbers per unit), then the warm-up windows are folded in one shard per
worker, then the rest, in equal shards (or up to each multiple of ``checkpoint_every``).
The later shards need the quantile boundaries, which need only the warm-up windows' maxes, not
their whole states: on each warm-up shard's result a small task (`_warmup_maxes`, run where
the result is) returns its windows' ``warmup_maxes`` rows; the driver fixes the boundaries from
them as a single process does (`warmup_boundaries`) and submits the later shards with them
before it fetches a warm-up state (seconds each: a shard's partial state is as big as the
whole collection's, whatever its length, so shards are few and long). A resumed driver past
the warm-up takes the boundaries from its merged states; one stopped within it adds the maxes
of the windows it has merged to those of the warm-up shards still to run.

Results are merged in window order (a shard fetched early waits, in memory, for the ones
before it; at most ``2 * workers + 1`` shards are queued, running, unfetched or unmerged), so a
checkpoint always covers a prefix of the corpus and a restarted driver resumes like a single
process: finished shards past the last checkpoint are redone. A worker that dies is replaced by
the engine, which reruns its shard (and the maxes task on it); a finished shard is never folded
twice (`merge_into` refuses an overlap), and merging a later shard checks that its boundaries
are the merged warm-up's (`merge_into` refuses others).
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
from neuron_explainer.subjects._collect_state import quantile_boundaries
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
    run: CollectionRun,
    shifts: dict[str, np.ndarray],
    bounds: dict[str, np.ndarray] | None = None,
) -> dict[str, tuple[np.ndarray | None, np.ndarray | None]]:
    """What a new shard's states start from: window 0's shift (from the merged states, or
    `window_shifts` before any is merged) and the quantile boundaries once fixed (in the
    merged states, or ``bounds``: `warmup_boundaries` of the warm-up shards' maxes)."""
    bounds = bounds or {}
    out: dict[str, tuple[np.ndarray | None, np.ndarray | None]] = {
        key: (shifts.get(key), bounds.get(key)) for key in shifts.keys() | bounds.keys()
    }
    for key, state in run.states.items():
        fixed: np.ndarray | None = state.a["quantile_boundaries"]
        if fixed is not None and fixed.size and np.isnan(fixed).all():
            fixed = bounds.get(key)
        out[key] = (
            state.a["moment_shift"].copy() if state.shift_known else shifts.get(key),
            None if fixed is None else fixed.copy(),
        )
    return out


def _warmup_maxes(
    arrays: dict[str, dict[str, np.ndarray]], first: int, count: int
) -> dict[str, np.ndarray]:
    """Each state's warm-up maxes of windows ``first .. first + count - 1``, out of a warm-up
    shard's partial states (run where they are: only these rows travel to the driver)."""
    return {key: part["warmup_maxes"][first : first + count].copy() for key, part in arrays.items()}


def warmup_boundaries(
    parts: dict[int, tuple[int, dict[str, np.ndarray]]], warmup: int, levels: tuple[float, ...]
) -> dict[str, np.ndarray] | None:
    """Each state's quantile boundaries from the warm-up maxes, by the rule one process fixes
    them by (`quantile_boundaries`), once ``parts`` (first window -> (count, each state's maxes
    rows)) cover windows ``0 .. warmup - 1``; else ``None``."""
    end = 0
    for first in sorted(parts):
        if first != end:
            return None
        end += parts[first][0]
    if end < warmup:
        return None
    rows = [parts[first][1] for first in sorted(parts)]
    out = {}
    for key in rows[0]:
        out[key] = quantile_boundaries(
            np.concatenate([part[key] for part in rows])[:warmup], levels
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
    _Driver(run, client, job, shards, workers=workers, shifts=shifts, progress=progress).drive()


class _Driver:
    """The driver's side of `_fold_shards`: submits shards (at most ``2 * workers + 1`` queued,
    running, finished on a worker or fetched and waiting to merge, so memory stays bounded),
    and for each warm-up shard a `_warmup_maxes` task on its result; fixes the quantile
    boundaries from those maxes as soon as they cover the warm-up, submitting the later shards
    with them, and only then fetches the warm-up shards; merges in window order."""

    def __init__(
        self,
        run: CollectionRun,
        client: Any,
        job: ShardJob,
        shards: Iterator[_Shard],
        *,
        workers: int,
        shifts: dict[str, np.ndarray],
        progress: Callable[[int], None] | None,
    ) -> None:
        from neuron_explainer.cluster.engine import dask_distributed

        self.run, self.client, self.job, self.shards = run, client, job, shards
        self.shifts, self.progress = shifts, progress
        self.lookahead = 2 * workers + 1
        self.resources = _gpu_resources(client)
        self.warmup = run.config["quantile_warmup"]
        self.futures = dask_distributed().as_completed()
        self.queue: deque[_Shard] = deque()
        self.inflight: dict[Any, _Shard] = {}  # shards submitted, not yet fetched
        self.probes: dict[Any, _Shard] = {}  # `_warmup_maxes` tasks not yet gathered
        self.held: list[tuple[Any, _Shard]] = []  # finished, fetched once the probes are in
        self.finished: dict[int, tuple[_Shard, dict[str, dict[str, np.ndarray]]]] = {}
        self.bounds: dict[str, np.ndarray] | None = None  # from the warm-up maxes
        # warm-up maxes known so far (first window -> (count, per state key)): those of a
        # resumed collection's merged windows, then each warm-up shard's
        self.maxes: dict[int, tuple[int, dict[str, np.ndarray]]] = {}
        done = run.windows_done
        if 0 < done < self.warmup:
            self.maxes[0] = (done, {k: s.a["warmup_maxes"][:done] for k, s in run.states.items()})
        self.exhausted = False

    def drive(self) -> None:
        while True:
            self._fill()
            self._submit()
            if self.held and not self.probes:  # the later shards are out: fetch in order
                self.held.sort(key=lambda pair: pair[1].first)
                self._fetch(*self.held.pop(0))
                continue
            if not self.inflight and not self.probes:
                return
            future = next(self.futures)
            if future in self.probes:
                self._gather_maxes(future)
            elif self.probes:  # the boundaries first: fetching a state takes seconds
                self.held.append((future, self.inflight.pop(future)))
            else:
                self._fetch(future, self.inflight.pop(future))

    def _fill(self) -> None:
        count = len(self.queue) + len(self.inflight) + len(self.held) + len(self.finished)
        while not self.exhausted and count < self.lookahead:
            shard = next(self.shards, None)
            if shard is None:
                self.exhausted = True
            else:
                self.queue.append(shard)
                count += 1

    def _submit(self) -> None:
        while self.queue and (
            self.queue[0].need <= self.run.windows_done or self.bounds is not None
        ):
            shard = self.queue.popleft()
            primes = _primes(self.run, self.shifts, self.bounds)
            future = self.client.submit(
                fold_shard, self.job, shard.first, shard.windows, primes, pure=False,
                resources=self.resources,
            )  # fmt: skip
            self.inflight[future] = shard
            self.futures.add(future)
            log.debug("shard %d+%d submitted", shard.first, len(shard.windows))
            if shard.first < self.warmup:  # its maxes, from where its states are
                probe = self.client.submit(
                    _warmup_maxes, future, shard.first, len(shard.windows), pure=False, priority=1
                )
                self.probes[probe] = shard
                self.futures.add(probe)

    def _gather_maxes(self, probe: Any) -> None:
        shard = self.probes.pop(probe)
        self.maxes[shard.first] = (len(shard.windows), probe.result())
        probe.release()
        if self.bounds is None:
            levels = tuple(float(q) for q in self.run.config["quantile_levels"])
            self.bounds = warmup_boundaries(self.maxes, self.warmup, levels)
            if self.bounds is not None:
                self.maxes.clear()
                log.debug("quantile boundaries fixed from the warm-up maxes")

    def _fetch(self, future: Any, shard: _Shard) -> None:
        started = time.perf_counter()
        self.finished[shard.first] = (shard, future.result())
        future.release()
        log.debug("shard %d+%d fetched in %.1f s", shard.first, len(shard.windows),
                  time.perf_counter() - started)  # fmt: skip
        self._merge_ready()

    def _merge_ready(self) -> None:
        run, every = self.run, self.run.sizes["checkpoint_every"]
        while run.windows_done in self.finished:
            shard, arrays = self.finished.pop(run.windows_done)
            started = time.perf_counter()
            _merge(run, arrays)
            log.debug("shard %d merged in %.1f s", shard.first, time.perf_counter() - started)
            before = run.windows_done
            run.record(shard.windows)
            if run.windows_done // every > before // every:
                started = time.perf_counter()
                run.checkpoint(finished=False)
                log.debug("checkpoint in %.1f s", time.perf_counter() - started)
            if self.progress is not None:
                self.progress(run.windows_done)
