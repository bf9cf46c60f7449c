"""Sampler 1, kept only to finish collections begun by an earlier version (collection format 3
and before): per-(neuron, bin) reservoirs decided by running counts (Algorithm R) and moment
sums accumulated in window order, shifted by the mean of the first batch. Such a collection
resumes in the order it began (one process, window after window) and ends as that version
would have ended it; it cannot be sharded or merged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from neuron_explainer.subjects._collect_keys import stateless_uniform_grid
from neuron_explainer.subjects._collect_moments import MomentTree
from neuron_explainer.subjects._collect_state import LayerState

__all__ = ["LegacyLayerState"]


class _RunningSums(MomentTree):
    """Moment sums added in window order into one running total (no blocks stored)."""

    def __init__(self, total: np.ndarray) -> None:
        super().__init__()
        self.running = total  # [4, N]

    def add_windows(self, first: int, sums: Iterable[np.ndarray]) -> None:
        for leaf in sums:
            self.running += leaf

    def total(self, n: int) -> np.ndarray:
        return self.running.copy()

    def arrays(self, n: int) -> dict[str, np.ndarray]:
        return {}


class LegacyLayerState(LayerState):
    """A `LayerState` read from a sampler-1 checkpoint, folding later windows as sampler 1."""

    def __init__(self, arrays: dict[str, np.ndarray], levels: Sequence[float]) -> None:
        super().__init__(arrays, levels)
        self.tree = _RunningSums(np.ascontiguousarray(arrays["moment_sums"].T, np.float64))
        self.shift_known = True

    def update(self, values: Any, lengths: Any, first: int, seed: int, layer: int) -> None:
        """`LayerState.update`, on a copy of ``values`` zero past each window's length and
        padded to ``Lw`` (the quantile reservoirs store whole rows)."""
        x = values if isinstance(values, np.ndarray) else values.detach().cpu().numpy()
        lengths = np.asarray(lengths, np.int64)
        padded = np.zeros((x.shape[0], self.a["top_activations"].shape[2], x.shape[2]), np.float32)
        for b, length in enumerate(lengths):
            padded[b, :length] = x[b, :length]
        super().update(padded, lengths, first, seed, layer)

    def _parts(self, first: int, n_batch: int) -> list[tuple[int, int, bool]]:
        return [(0, n_batch, False)]  # no bins in the compiled pass: `_bin_batch` makes them

    def _warm_up(self, maxes: np.ndarray, first: int) -> None:
        """Nothing: `_bin_batch` buffers sampler 1's warm-up maxes."""

    def _bin_batch(
        self, x: np.ndarray, maxes: np.ndarray, first: int, seed: int, layer: int
    ) -> None:
        """Warm-up maxes, then per-(neuron, bin) reservoirs, decided for the whole batch at once
        exactly as window-by-window Algorithm R would."""
        a = self.a
        q = a["quantile_boundaries"].shape[1]
        if q == 0:
            return
        warmup = a["warmup_maxes"].shape[0]
        n_batch = maxes.shape[0]
        start = 0
        if first < warmup:
            start = min(n_batch, warmup - first)
            a["warmup_maxes"][first : first + start] = maxes[:start]
            if first + start == warmup:
                self.fix_boundaries(warmup)
        m = a["quantile_windows"].shape[2]
        if start == n_batch or m == 0:
            return
        later = maxes[start:].astype(np.float64)
        neurons = np.arange(later.shape[1])
        bins = np.zeros(later.shape, np.int64)  # [b, N]: the bin of each window, per neuron
        for j in range(q):
            bins += later >= a["quantile_boundaries"][:, j]
        # seen[i, n]: windows of neuron n's bin before window i (earlier batches and this one).
        counts = a["quantile_counts"].reshape(-1)  # a view: updated in place
        cells = neurons * (q + 1)
        seen = np.empty_like(bins)
        for i in range(len(later)):  # window order; the neurons of one row are distinct
            cell = cells + bins[i]
            seen[i] = counts[cell]
            counts[cell] += 1
        ws = np.arange(first + start, first + n_batch)
        lanes = neurons if self.lanes is None else self.lanes
        u = stateless_uniform_grid((seed, 1 + layer), ws, lanes)
        slots = np.where(seen < m, seen, np.floor(u * (seen + 1)).astype(np.int64))
        hit_i, hit_n = np.nonzero(slots < m)  # window-major, as Algorithm R visits them
        self._store(x, start, ws, hit_i, hit_n, bins[hit_i, hit_n], slots[hit_i, hit_n])

    def _store(
        self, x: np.ndarray, start: int, ws: np.ndarray, i: Any, n: Any, b: Any, s: Any
    ) -> None:
        """Write the windows (and activations) that took quantile slots ``(n, b, s)`` from
        batch rows ``start + i``; a later row replacing an earlier one in a slot wins."""
        a = self.a
        if i.size == 0:
            return
        q1, m = a["quantile_windows"].shape[1:]
        key = (n * q1 + b) * m + s
        order = np.argsort(key, kind="stable")
        ordered = key[order]
        last = order[np.append(ordered[1:] != ordered[:-1], True)]
        i, n, b, s = i[last], n[last], b[last], s[last]
        a["quantile_windows"][n, b, s] = ws[i]
        a["quantile_activations"][n, b, s] = x[start + i, :, n]
