"""The fixed-size per-layer state of a streaming collection (see `neuron_explainer.subjects.collect`
for what it holds and the on-disk layout), and the stateless sampling decisions it uses.

Every batch arrives as a float32 torch tensor ``values`` [B, Lw, N] (window, position, neuron;
zero beyond each window's length) with its per-window maxes [B, N]. The moments are reduced in
torch (float32 partial sums per batch, accumulated in float64); the rest of the state is NumPy
and is touched only where a window enters a top-k, a reservoir or a quantile bin, so after the
first few hundred windows a batch costs little beyond the comparisons that decide it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

_U64 = np.uint64


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer, elementwise on uint64 (wrapping arithmetic)."""
    x = x + _U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    out: np.ndarray = x ^ (x >> _U64(31))
    return out


def _key_hash(key: Sequence[int]) -> np.ndarray:
    h = np.zeros(1, dtype=_U64)
    for part in key:
        h = _mix(h ^ np.array([part], dtype=_U64))
    return h


def stateless_uniform(key: Sequence[int], lanes: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1), one per lane, a pure function of ``key`` and the lane."""
    with np.errstate(over="ignore"):
        h = _mix(_key_hash(key) ^ lanes.astype(_U64))
    return (h >> _U64(11)).astype(np.float64) * 2.0**-53


def stateless_uniform_grid(
    prefix: Sequence[int], last: np.ndarray, lanes: np.ndarray
) -> np.ndarray:
    """``stateless_uniform((*prefix, last[i]), lanes)`` for every ``i``, as rows of one array."""
    with np.errstate(over="ignore"):
        h = _key_hash(prefix)
        rows = _mix(h ^ last.astype(_U64))
        grid = _mix(rows[:, None] ^ lanes.astype(_U64)[None, :])
    return (grid >> _U64(11)).astype(np.float64) * 2.0**-53


@functools.lru_cache(maxsize=4096)
def reservoir_slot(w: int, size: int, seed: int) -> int | None:
    """The reservoir slot window ``w`` takes (Algorithm R), or ``None``: a pure function."""
    if w < size:
        return w
    slot = int(stateless_uniform((seed, 0, w), np.zeros(1, np.int64))[0] * (w + 1))
    return slot if slot < size else None


class _Rows:
    """Gathers activation rows ``values[b, :, n]`` (one per requested pair) from a batch.

    Few rows are read strided from the batch-first array; when many are needed (the first
    windows fill every top-k and reservoir) the batch is transposed once, in torch (threaded),
    so every row is a contiguous copy.
    """

    def __init__(self, values: Any, many: int) -> None:
        self._values = values  # torch [B, Lw, N], on the CPU
        self._many = many
        self._batch_first: np.ndarray = values.numpy()
        self._transposed: np.ndarray | None = None

    def transpose(self) -> np.ndarray:
        """The batch as [B, N, Lw] (made once)."""
        if self._transposed is None:
            self._transposed = self._values.transpose(1, 2).contiguous().numpy()
        return self._transposed

    def get(self, b: np.ndarray, n: np.ndarray) -> np.ndarray:
        """[len(b), Lw] rows."""
        if self._transposed is not None or b.size >= self._many:
            out: np.ndarray = self.transpose()[b, n]
        else:
            out = self._batch_first[b, :, n]
        return out

    def window(self, b: int) -> np.ndarray:
        """All neurons of window ``b``: [N, Lw]."""
        source = self._batch_first[b].T if self._transposed is None else self._transposed[b]
        out: np.ndarray = source
        return out


class LayerState:
    """The fixed-size state of one layer (arrays named as in `collect`'s docstring)."""

    def __init__(self, arrays: dict[str, np.ndarray], levels: Sequence[float]) -> None:
        self.a = arrays
        self.levels = tuple(float(q) for q in levels)

    @classmethod
    def new(
        cls,
        n: int,
        *,
        k: int,
        r: int,
        levels: Sequence[float],
        m: int,
        warmup: int,
        length: int,
    ) -> LayerState:
        """An empty state for ``n`` neurons (top ``k``, reservoir ``r``, ``m`` per bin)."""
        q = len(levels)
        return cls(
            {
                "top_values": np.full((n, k), -np.inf, np.float32),
                "top_windows": np.full((n, k), -1, np.int64),
                "top_slots": np.broadcast_to(np.arange(k), (n, k)).copy(),
                "top_activations": np.zeros((n, k, length), np.float32),
                "random_windows": np.full(r, -1, np.int64),
                "random_activations": np.zeros((n, r, length), np.float32),
                "quantile_boundaries": np.full((n, q), np.nan, np.float64),
                "quantile_counts": np.zeros((n, q + 1), np.int64),
                "quantile_windows": np.full((n, q + 1, m), -1, np.int64),
                "quantile_activations": np.zeros((n, q + 1, m, length), np.float32),
                "warmup_maxes": np.zeros((warmup, n), np.float32),
                "moment_shift": np.zeros(n, np.float64),
                "moment_sums": np.zeros((n, 4), np.float64),
                "token_count": np.zeros(1, np.int64),
            },
            levels,
        )

    def update(
        self,
        values: Any,
        maxes: np.ndarray,
        padding: Any,
        n_tokens: int,
        first: int,
        seed: int,
        layer: int,
    ) -> None:
        """Fold in windows ``first .. first + B - 1``.

        Args:
            values: float32 torch tensor [B, Lw, N] on any device, zero beyond each window's
                length (the moments are reduced there; the rest is copied to the CPU).
            maxes: [B, N] per-window maxes (over each window's own tokens).
            padding: torch bool tensor [B * Lw], True at positions beyond a window's length, or
                ``None`` when every window is full.
            n_tokens: the number of real (non-padding) positions.
            first: the stream index of window 0 of the batch.
            seed, layer: key the sampling decisions.
        """
        self._moments(values, padding, n_tokens)  # on the capture device
        rows = _Rows(values.cpu(), many=values.shape[2] // 2)
        self._top_k(rows, maxes, first)
        self._random(rows, maxes.shape[0], first, seed)
        self._quantiles(rows, maxes, first, seed, layer)

    def _moments(self, values: Any, padding: Any, n_tokens: int) -> None:
        import torch

        a = self.a
        flat = values.reshape(-1, values.shape[2])
        if a["token_count"][0] == 0:
            real = flat if padding is None else flat[~padding.to(flat.device)]
            a["moment_shift"][:] = real.double().mean(dim=0).cpu().numpy()
        # float32 partial sums of (x - c)^p over this batch (a few hundred to a few thousand
        # tokens: relative error ~1e-6), accumulated across batches in float64.
        y = flat - torch.from_numpy(a["moment_shift"]).to(flat.device, flat.dtype)
        if padding is not None:
            y[padding.to(flat.device)] = 0.0
        y2 = y * y
        s1 = y.sum(0)
        s2 = y2.sum(0)
        s3 = y.mul_(y2).sum(0)
        s4 = y2.square_().sum(0)
        a["moment_sums"] += torch.stack([s1, s2, s3, s4], dim=1).double().cpu().numpy()
        a["token_count"][0] += n_tokens

    def _top_k(self, rows: _Rows, maxes: np.ndarray, first: int) -> None:
        """Each neuron keeps the ``k`` windows with the highest max; ties keep the earlier one."""
        a = self.a
        k = a["top_values"].shape[1]
        beats = (maxes > a["top_values"][:, -1][None, :]).any(axis=0)
        sub = np.flatnonzero(beats)
        if sub.size == 0:
            return
        n_batch = maxes.shape[0]
        values = np.concatenate([a["top_values"][sub], maxes[:, sub].T], axis=1)
        batch_windows = np.broadcast_to(np.arange(first, first + n_batch), (sub.size, n_batch))
        windows = np.concatenate([a["top_windows"][sub], batch_windows], axis=1)
        # Stable sort of the negated values: existing entries (earlier windows) win ties.
        kept = np.argsort(-values, axis=1, kind="stable")[:, :k]
        a["top_values"][sub] = np.take_along_axis(values, kept, axis=1)
        a["top_windows"][sub] = np.take_along_axis(windows, kept, axis=1)
        # Activations stay in their slots; a new entry takes the slot of an evicted one.
        kept_mask = np.zeros(values.shape, bool)
        np.put_along_axis(kept_mask, kept, True, axis=1)
        old_slots = a["top_slots"][sub]
        free = old_slots[~kept_mask[:, :k]]  # row-major: per neuron, in rank order
        slots = np.take_along_axis(
            np.concatenate([old_slots, np.zeros((sub.size, n_batch), np.int64)], axis=1),
            kept,
            axis=1,
        )
        is_new = kept >= k
        slots[is_new] = free  # equal counts per row, both row-major
        a["top_slots"][sub] = slots
        entry_rows, ranks = np.nonzero(is_new)
        neurons = sub[entry_rows]
        a["top_activations"][neurons, slots[entry_rows, ranks]] = rows.get(
            kept[entry_rows, ranks] - k, neurons
        )

    def _random(self, rows: _Rows, n_batch: int, first: int, seed: int) -> None:
        """The shared reservoir: window ``w`` takes `reservoir_slot` ``(w)``, if any."""
        a = self.a
        r = a["random_windows"].shape[0]
        hits = [(b, reservoir_slot(first + b, r, seed)) for b in range(n_batch)]
        hits = [(b, slot) for b, slot in hits if slot is not None]
        if len(hits) > 1:
            rows.transpose()  # one threaded copy beats several strided ones
        for b, slot in hits:  # in order: a later window replaces an earlier one
            a["random_windows"][slot] = first + b
            a["random_activations"][:, slot, :] = rows.window(b)

    def _quantiles(self, rows: _Rows, maxes: np.ndarray, first: int, seed: int, layer: int) -> None:
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
        later = maxes[start:]
        n_later = later.shape[0]
        neurons = np.arange(later.shape[1])
        bounds = a["quantile_boundaries"]
        bins = (later[:, :, None].astype(np.float64) >= bounds[None]).sum(axis=2)  # [b, N]
        onehot = bins[:, :, None] == np.arange(q + 1)  # [b, N, Q+1]
        before = np.cumsum(onehot, axis=0, dtype=np.int32) - onehot  # same bin, earlier window
        seen = (
            a["quantile_counts"][neurons[None, :], bins]
            + np.take_along_axis(before, bins[:, :, None], axis=2)[:, :, 0]
        )
        ws = np.arange(first + start, first + n_batch)
        u = stateless_uniform_grid((seed, 1 + layer), ws, neurons)
        slots = np.where(seen < m, seen, np.floor(u * (seen + 1)).astype(np.int64))
        a["quantile_counts"] += onehot.sum(axis=0)
        for i in range(n_later):  # in order: a later window replaces an earlier one
            take = np.flatnonzero(slots[i] < m)
            if take.size == 0:
                continue
            b_bins, b_slots = bins[i, take], slots[i, take]
            a["quantile_windows"][take, b_bins, b_slots] = ws[i]
            a["quantile_activations"][take, b_bins, b_slots, :] = rows.get(
                np.full(take.size, start + i), take
            )

    def fix_boundaries(self, n_windows: int) -> None:
        """Fix the quantile boundaries from the first ``n_windows`` buffered maxes."""
        a = self.a
        if n_windows == 0 or not np.isnan(a["quantile_boundaries"]).any():
            return
        maxes = a["warmup_maxes"][:n_windows].astype(np.float64)
        a["quantile_boundaries"][:] = np.quantile(maxes, self.levels, axis=0).T
