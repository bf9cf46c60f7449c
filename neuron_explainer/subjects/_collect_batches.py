"""The batches a collection folds: cut on a fixed grid of window ids (`batch_end`), so a
shard of the corpus folded anywhere sees the same batches as one pass, and the single-process
loop (`fold_here`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

from neuron_explainer.subjects._collect_run import CollectionRun
from neuron_explainer.subjects.corpus import Window

__all__ = ["batch_end", "fold_here"]


def batch_end(start: int, batch_size: int, every: int, warmup: int) -> int:
    """Where the batch beginning at window ``start`` ends: at most ``batch_size`` windows, never
    past a multiple of ``batch_size`` or of ``every``, nor past window 1 or ``warmup``. Batches
    cut on this fixed grid are the same whichever shard of the corpus holds them (window 0
    alone fixes the moment shift, the warm-up windows the quantile boundaries)."""
    end = (start // batch_size + 1) * batch_size
    end = min(end, (start // every + 1) * every)
    for edge in (1, warmup):
        if start < edge < end:
            end = edge
    return end


def fold_here(
    run: CollectionRun, stream: Iterator[Window], progress: Callable[[int], None] | None
) -> None:
    """Fold ``stream`` in this process, batch by batch, checkpointing every
    ``checkpoint_every`` windows."""
    every = run.sizes["checkpoint_every"]
    warmup = run.config["quantile_warmup"]
    for batch in _batches(stream, run.windows_done, run.sizes["batch_size"], every, warmup):
        run.process(batch)
        if run.windows_done % every == 0:
            run.checkpoint(finished=False)
        if progress is not None:
            progress(run.windows_done)


def _batches(
    windows: Iterator[Window], start: int, batch_size: int, every: int, warmup: int
) -> Iterator[list[Window]]:
    """The batches `batch_end` cuts, from window ``start`` on."""
    done = start
    while True:
        size = batch_end(done, batch_size, every, warmup) - done
        batch = list(itertools.islice(windows, size))
        if not batch:
            return
        done += len(batch)
        yield batch
