"""The fixed-size per-layer state of a streaming collection (see `neuron_explainer.subjects.collect`
for what it holds and the on-disk layout), and the stateless sampling decisions it uses.

Every batch arrives as a float32 torch tensor ``values`` [B, Lw, N] (window, position, neuron;
zero beyond each window's length) with its per-window maxes [B, N]. The moments are float32
sums per window, reduced in torch on the capture device (`window_sums`: on the CPU a few windows
at a time, so each pass stays in cache) and kept in float64. The rest of the state is NumPy arrays,
updated through torch views (threaded sorts, gathers and scatters; the reservoir's whole-window
copies in NumPy) and touched only where a window enters a top-k, a reservoir or a quantile bin,
so after the first few thousand windows a batch costs little beyond the moments and the
comparisons that decide it.

Every decision is a pure function of the global window id (and the seed, layer and unit), never
of the order windows arrive in: top-k ranks by ``(-max, window)``, reservoir slot ``s`` holds
the largest window hashed to it, each quantile bin keeps the ``m`` windows with the smallest
hash keys, and the moments are a `MomentTree` over window ids shifted by window 0's mean. So a
state can fold any set of windows (a shard of the corpus), and partial states merge
(`neuron_explainer.subjects._collect_merge`) into exactly the state one pass would make.

Why the moments use torch's threads on the CPU (and what that costs on busy cores) is
told at `window_sums`.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

import numpy as np

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.subjects._collect_keys import (
    quantile_keys,
    reservoir_slot,
    stateless_uniform_grid,
)
from neuron_explainer.subjects._collect_moments import MomentTree, window_sums


def _zeros(shape: tuple[int, ...]) -> np.ndarray:
    """A float32 array of zeros; a large one on anonymous memory marked for huge pages (where
    the system has them), so its first writes fault in 2 MiB pages rather than 4 KiB ones
    (about 4x faster for the first windows, which fill every top-k and the reservoir)."""
    size = 4 * int(np.prod(shape))
    if size < 1 << 22 or not hasattr(mmap, "MADV_HUGEPAGE"):
        return np.zeros(shape, np.float32)
    memory = mmap.mmap(-1, size)  # anonymous: zero-filled
    with suppress(OSError):
        memory.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(memory, np.float32).reshape(shape)


def quantile_boundaries(maxes: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Each unit's quantile boundaries [N, Q] from warm-up maxes [W, N] (in window order):
    ``numpy.quantile`` (linear) in float64, the one rule every path fixes them by."""
    return np.ascontiguousarray(np.quantile(maxes.astype(np.float64), levels, axis=0).T)


class _Rows:
    """Gathers activation rows ``values[b, :, n]`` (one per requested pair) from a batch.

    Up to a few thousand rows are gathered strided from the batch-first tensor (torch's
    threaded index kernel); when more are needed (the first windows fill every top-k) the batch
    is transposed once, so every row is a contiguous copy.
    """

    def __init__(self, values: Any, many: int) -> None:
        self._values = values  # torch [B, Lw, N], on the CPU
        self._many = many
        self._transposed: Any = None

    def get(self, b: Any, n: Any) -> Any:
        """[len(b), Lw] rows (torch; ``b`` and ``n`` are int64 tensors)."""
        if self._transposed is None and b.numel() >= self._many:
            self._transposed = self._values.transpose(1, 2).contiguous()
        if self._transposed is not None:
            return self._transposed[b, n]
        return self._values.permute(0, 2, 1)[b, n]

    def window(self, b: int) -> np.ndarray:
        """All neurons of window ``b``: [Lw, N] (a NumPy view)."""
        return np.asarray(self._values[b].numpy())


class LayerState:
    """The fixed-size state of one layer (arrays named as in `collect`'s docstring).

    ``a`` holds every array in its on-disk layout except the random reservoir, which is kept
    window-major ([R, Lw, N], one contiguous copy per sampled window) while collecting, and
    the moments, kept as a `MomentTree` (``tree``); `arrays` returns everything in the
    on-disk layout. ``covered`` lists the window ranges ``[start, end)`` folded in.
    """

    def __init__(self, arrays: dict[str, np.ndarray], levels: Sequence[float]) -> None:
        arrays = dict(arrays)
        self.random_by_window = np.ascontiguousarray(
            arrays.pop("random_activations").transpose(1, 2, 0)
        )
        n = arrays["top_values"].shape[0]
        ids, nodes = arrays.pop("moment_node_ids", None), arrays.pop("moment_nodes", None)
        self.tree = (
            MomentTree() if ids is None or nodes is None else MomentTree.from_arrays(ids, nodes)
        )
        covered = arrays.pop("covered", None)
        self.covered: list[tuple[int, int]] = (
            [] if covered is None else [(int(a), int(b)) for a, b in covered]
        )
        arrays.setdefault("moment_shift", np.full(n, np.nan))
        self.a = arrays
        # whether moment_shift holds window 0's mean (it can itself be NaN)
        self.shift_known = self.covers(0, 1) or not np.isnan(arrays["moment_shift"]).all()
        self.levels = tuple(float(q) for q in levels)
        self._keys: np.ndarray | None = None  # each quantile entry's hash key (+inf: empty)
        self._worst = np.zeros(0)  # each (unit, bin) cell's largest key, set with _keys
        # the hash lane of each row in the quantile decisions: the row (a layer's neuron) or,
        # for a part of a unit group, the unit's index (so parts decide as one state would)
        self.lanes: np.ndarray | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array in the on-disk layout (``random_activations`` is [N, R, Lw], a copy
        transposed by torch: blocked and threaded, several times faster than NumPy's)."""
        import torch

        window_major = torch.from_numpy(self.random_by_window)
        return self._laid_out(window_major.permute(2, 0, 1).contiguous().numpy())

    def stored(self) -> dict[str, Any]:
        """`arrays` for `write_safetensors`: the reservoir as `Blocks`, transposed to
        [N, R, Lw] a block of units at a time (no whole transposed copy)."""
        from neuron_explainer.subjects._state_file import Blocks

        window_major = self.random_by_window
        r, length, n = window_major.shape

        def block(start: int, stop: int) -> np.ndarray:
            return np.ascontiguousarray(window_major[:, :, start:stop].transpose(2, 0, 1))

        return self._laid_out(Blocks((n, r, length), window_major.dtype, block))

    def _laid_out(self, random: Any) -> dict[str, Any]:
        """The on-disk arrays with ``random`` as the reservoir: the moments' total and tree,
        and the windows covered, derived from what the state keeps."""
        n = self.a["top_values"].shape[0]
        covered = np.array(self.covered, np.int64).reshape(len(self.covered), 2)
        return {
            **self.a,
            "random_activations": random,
            "moment_sums": np.ascontiguousarray(self.tree.total(n).T),
            **self.tree.arrays(n),
            "covered": covered,
        }

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
        firing: bool = False,
    ) -> LayerState:
        """An empty state for ``n`` neurons (top ``k``, reservoir ``r``, ``m`` per bin;
        ``firing``: count each unit's positions above zero)."""
        q = len(levels)
        arrays: dict[str, np.ndarray] = {
            "top_values": np.full((n, k), -np.inf, np.float32),
            "top_windows": np.full((n, k), -1, np.int64),
            "top_slots": np.broadcast_to(np.arange(k), (n, k)).copy(),
            "top_activations": _zeros((n, k, length)),
            "random_windows": np.full(r, -1, np.int64),
            # window-major in memory; a transposed view satisfies the constructor
            "random_activations": _zeros((r, length, n)).transpose(2, 0, 1),
            "quantile_boundaries": np.full((n, q), np.nan, np.float64),
            "quantile_counts": np.zeros((n, q + 1), np.int64),
            "quantile_windows": np.full((n, q + 1, m), -1, np.int64),
            "quantile_activations": _zeros((n, q + 1, m, length)),
            "warmup_maxes": np.zeros((warmup, n), np.float32),
            "moment_shift": np.full(n, np.nan, np.float64),
            "token_count": np.zeros(1, np.int64),
        }
        if firing:
            arrays["firing_counts"] = np.zeros(n, np.int64)
        return cls(arrays, levels)

    def covers(self, start: int, end: int) -> bool:
        """Whether every window in ``[start, end)`` has been folded in."""
        return any(a <= start and end <= b for a, b in self.covered)

    def _cover(self, start: int, end: int) -> None:
        ranges = sorted([*self.covered, (start, end)])
        merged = [ranges[0]]
        for a, b in ranges[1:]:
            if a < merged[-1][1]:
                raise InvalidInputError(
                    f"windows {a}..{min(b, merged[-1][1]) - 1} were folded in twice; partial "
                    "collection states that overlap cannot be merged"
                )
            if a == merged[-1][1]:
                merged[-1] = (merged[-1][0], b)
            else:
                merged.append((a, b))
        self.covered = merged

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
        self._cover(first, first + maxes.shape[0])
        self._moments(values, padding, n_tokens, first)  # on the capture device
        rows = _Rows(values.cpu(), many=3 * values.shape[2])
        self._top_k(rows, maxes, first)
        self._random(rows, maxes.shape[0], first, seed)
        self._quantiles(rows, maxes, first, seed, layer)

    def prime(self, shift: np.ndarray | None, boundaries: np.ndarray | None) -> None:
        """Give a state that will fold a shard of the corpus what the windows before it fix:
        window 0's moment shift and (past the warm-up) the quantile boundaries."""
        if shift is not None:
            self.set_shift(shift)
        if boundaries is not None:
            self.a["quantile_boundaries"][:] = boundaries

    def set_shift(self, shift: np.ndarray) -> None:
        """Shift the moments by ``shift`` (window 0's mean, from the state that folded it)."""
        self.a["moment_shift"][:] = shift
        self.shift_known = True

    def _moments(self, values: Any, padding: Any, n_tokens: int, first: int) -> None:
        a = self.a
        if first == 0:  # the shift against cancellation: window 0's mean
            width = values.shape[1]
            length = width if padding is None else int((~padding[:width]).sum())
            self.set_shift(values[0, :length].double().mean(dim=0).cpu().numpy())
        elif not self.shift_known:
            raise RuntimeError("a partial state needs window 0's moment shift (set_shift)")
        lengths = None
        if padding is not None:
            lengths = (~padding).reshape(values.shape[:2]).sum(dim=1).tolist()
        leaves = window_sums(values, lengths, a["moment_shift"], a.get("firing_counts"))
        self.tree.add_windows(first, leaves)
        a["token_count"][0] += n_tokens

    def _top_k(self, rows: _Rows, maxes: np.ndarray, first: int) -> None:
        """Each neuron keeps the ``k`` windows with the highest max; ties keep the earlier one.

        Done in torch (threaded) on views of the NumPy state; NaN maxes never enter.
        """
        import torch

        a = self.a
        top_values = torch.from_numpy(a["top_values"])
        k = top_values.shape[1]
        batch_maxes = torch.from_numpy(maxes)
        sub = (batch_maxes > top_values[:, -1]).any(dim=0).nonzero().squeeze(1)
        if sub.numel() == 0:
            return
        n_sub, n_batch = sub.numel(), batch_maxes.shape[0]
        values = torch.cat([top_values[sub], batch_maxes[:, sub].T], dim=1)
        values = torch.where(values.isnan(), -torch.inf, values)
        # Stable descending sort: existing entries (earlier windows) win ties.
        kept = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :k]
        top_values[sub] = values.gather(1, kept)
        top_windows = torch.from_numpy(a["top_windows"])
        batch_windows = torch.arange(first, first + n_batch).expand(n_sub, n_batch)
        top_windows[sub] = torch.cat([top_windows[sub], batch_windows], dim=1).gather(1, kept)
        # Activations stay in their slots; a new entry takes the slot of an evicted one.
        kept_mask = torch.zeros(values.shape, dtype=torch.bool).scatter_(1, kept, True)
        top_slots = torch.from_numpy(a["top_slots"])
        old_slots = top_slots[sub]
        free = old_slots[~kept_mask[:, :k]]  # row-major: per neuron, in rank order
        padded = torch.cat([old_slots, old_slots.new_zeros((n_sub, n_batch))], dim=1)
        slots = padded.gather(1, kept)
        is_new = kept >= k
        slots[is_new] = free  # equal counts per row, both row-major
        top_slots[sub] = slots
        entry_rows, ranks = is_new.nonzero(as_tuple=True)
        neurons = sub[entry_rows]
        torch.from_numpy(a["top_activations"]).index_put_(
            (neurons, slots[entry_rows, ranks]), rows.get(kept[entry_rows, ranks] - k, neurons)
        )

    def _random(self, rows: _Rows, n_batch: int, first: int, seed: int) -> None:
        """The shared reservoir: window ``w`` takes `reservoir_slot` ``(w)``, if any."""
        a = self.a
        reservoir = self.random_by_window
        for b in range(n_batch):  # in order: a later window replaces an earlier one
            slot = reservoir_slot(first + b, reservoir.shape[0], seed)
            if slot is not None:
                a["random_windows"][slot] = first + b
                np.copyto(reservoir[slot], rows.window(b))  # one thread: a plain copy

    def _quantiles(self, rows: _Rows, maxes: np.ndarray, first: int, seed: int, layer: int) -> None:
        """Warm-up maxes (windows below ``W``), then for every later window its bin per
        neuron; each (neuron, bin) keeps the ``m`` windows with the smallest `pair_uniform`
        keys (a bottom-m sample: uniform within the bin, whatever order windows come in)."""
        a = self.a
        q = a["quantile_boundaries"].shape[1]
        if q == 0:
            return
        warmup = a["warmup_maxes"].shape[0]
        n_batch = maxes.shape[0]
        start = int(np.clip(warmup - first, 0, n_batch))
        if start:
            a["warmup_maxes"][first : first + start] = maxes[:start]
            if first + start == warmup and self.covers(0, warmup):
                self.fix_boundaries(warmup)
        m = a["quantile_windows"].shape[2]
        if start == n_batch or m == 0:
            return
        bounds = a["quantile_boundaries"]
        if np.isnan(bounds).all():
            raise RuntimeError("a partial state past the warm-up needs the quantile boundaries")
        later = maxes[start:].astype(np.float64)
        n = later.shape[1]
        bins = np.zeros(later.shape, np.int64)  # [b, N]: the bin of each window, per neuron
        for j in range(q):
            bins += later >= bounds[:, j]
        cells = np.arange(n) * (q + 1) + bins
        counts = a["quantile_counts"].reshape(-1)  # a view: updated in place
        counts += np.bincount(cells.reshape(-1), minlength=counts.size)
        ws = np.arange(first + start, first + n_batch)
        lanes = np.arange(n) if self.lanes is None else self.lanes
        u = stateless_uniform_grid((seed, 1 + layer), ws, lanes)
        keys = self._quantile_keys(seed, layer)
        worst = self._worst  # each cell's largest key, kept with keys
        hit_i, hit_n = np.nonzero(u < worst[cells])  # candidates, in window order
        hits: list[tuple[np.ndarray, ...]] = []
        while hit_i.size:  # a round takes each cell's earliest candidate: cells are independent
            cell = cells[hit_i, hit_n]
            order = np.lexsort((hit_i, cell))
            head = np.ones(order.size, bool)
            head[1:] = cell[order[1:]] != cell[order[:-1]]
            i, n = hit_i[order[head]], hit_n[order[head]]
            b, key = bins[i, n], u[i, n]
            slot = keys[n, b].argmax(axis=1)  # the worst entry (an empty one first)
            ok = key < keys[n, b, slot]
            keys[n[ok], b[ok], slot[ok]] = key[ok]
            worst[n[ok] * (q + 1) + b[ok]] = keys[n[ok], b[ok]].max(axis=1)
            hits.append((i[ok], n[ok], b[ok], slot[ok]))
            hit_i, hit_n = hit_i[order[~head]], hit_n[order[~head]]  # later candidates
            if hit_i.size:
                still = u[hit_i, hit_n] < worst[cells[hit_i, hit_n]]
                hit_i, hit_n = hit_i[still], hit_n[still]
        if hits:
            self._store_quantiles(
                rows, start, ws, *(np.concatenate(h) for h in zip(*hits, strict=True))
            )

    def _store_quantiles(
        self, rows: _Rows, start: int, ws: np.ndarray, i: Any, n: Any, b: Any, s: Any
    ) -> None:
        """Write the windows (and activations) that took quantile slots ``(n, b, s)`` from
        batch rows ``start + i``; a later row replacing an earlier one in a slot wins."""
        import torch

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
        n_t = torch.from_numpy(n)
        torch.from_numpy(a["quantile_activations"]).index_put_(
            (n_t, torch.from_numpy(b), torch.from_numpy(s)),
            rows.get(torch.from_numpy(start + i), n_t),
        )

    def _quantile_keys(self, seed: int, layer: int) -> np.ndarray:
        """Each quantile entry's key [N, Q+1, m] (+inf where empty), kept up to date."""
        if self._keys is None:
            self._keys = quantile_keys(self.a["quantile_windows"], self.lanes, seed, layer)
            self._worst = self._keys.max(axis=2).reshape(-1)
        return self._keys

    def fix_boundaries(self, n_windows: int) -> None:
        """Fix the quantile boundaries from the first ``n_windows`` buffered maxes."""
        a = self.a
        if n_windows == 0 or not np.isnan(a["quantile_boundaries"]).any():
            return
        a["quantile_boundaries"][:] = quantile_boundaries(
            a["warmup_maxes"][:n_windows], self.levels
        )
