"""The fixed-size per-layer state of a streaming collection (see `neuron_explainer.subjects.collect`
for what it holds and the on-disk layout), and the stateless sampling decisions it uses.

Every batch arrives as float32 ``values`` [B, L, N] (window, position, neuron; ``L <= Lw``)
with each window's length; nothing past a window's length is read. The state is NumPy arrays,
updated by one compiled pass over the batch (`neuron_explainer.subjects._collect_kernels`):
window by window, it takes the window's maxes and moment sums, then touches a unit's top-k and
quantile entries only where the window enters them, so after the first few thousand windows a
batch costs little beyond reading it once and the comparisons that decide it.

Every decision is a pure function of the global window id (and the seed, layer and unit), never
of the order windows arrive in: top-k ranks by ``(-max, window)``, reservoir slot ``s`` holds
the largest window hashed to it, each quantile bin keeps the ``m`` windows with the smallest
hash keys, and the moments are a `MomentTree` over window ids shifted by window 0's mean. So a
state can fold any set of windows (a shard of the corpus), and partial states merge
(`neuron_explainer.subjects._collect_merge`) into exactly the state one pass would make.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.subjects._collect_keys import key_hash, quantile_keys, reservoir_slot
from neuron_explainer.subjects._collect_moments import MomentTree

# what the compiled pass is given for a part it skips (no quantile bins, no firing counts)
_NO_KEYS = np.zeros((0, 0, 0))
_NO_FIRING = np.zeros(0, np.int64)


def kernels() -> Any:
    """`neuron_explainer.subjects._collect_kernels` (numba loads and compiles on first use)."""
    from neuron_explainer.subjects import _collect_kernels

    return _collect_kernels


def quantile_boundaries(maxes: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Each unit's quantile boundaries [N, Q] from warm-up maxes [W, N] (in window order):
    what ``numpy.quantile`` (method ``linear``, in float64) gives, the one rule every path
    fixes them by.

    Each unit's maxes are sorted (NumPy's vectorised sort, several times faster than the
    partition ``numpy.quantile`` makes along the window axis), then the two order statistics
    around each level are interpolated with ``numpy.quantile``'s own float64 operations; a
    unit with a NaN max gets NaN boundaries, as there.
    """
    import torch

    # [N, W], each unit's maxes sorted (NaN last); torch's blocked transpose is faster
    rows = np.sort(torch.from_numpy(np.ascontiguousarray(maxes)).T.contiguous().numpy(), axis=1)
    n = rows.shape[1]
    virtual = (n - 1) * np.asarray(levels, np.float64)
    below = np.floor(virtual)
    above = below + 1
    below[virtual >= n - 1] = -1  # past the last: the largest, as numpy takes it
    above[virtual >= n - 1] = -1
    below_i, above_i = below.astype(np.intp), above.astype(np.intp)
    gamma = (virtual - below_i)[None, :]
    low = rows[:, below_i].astype(np.float64)
    high = rows[:, above_i].astype(np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, as in numpy.quantile
        diff = high - low
        out: np.ndarray = low + diff * gamma
        np.subtract(high, diff * (1 - gamma), out=out, where=gamma >= 0.5)
    nan = np.isnan(rows[:, -1])
    out[nan] = np.nan
    return out


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
        self._worst = np.zeros((0, 0))  # each (unit, bin) cell's largest key, set with _keys
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
            "top_activations": np.zeros((n, k, length), np.float32),
            "random_windows": np.full(r, -1, np.int64),
            # window-major in memory; a transposed view satisfies the constructor
            "random_activations": np.zeros((r, length, n), np.float32).transpose(2, 0, 1),
            "quantile_boundaries": np.full((n, q), np.nan, np.float64),
            "quantile_counts": np.zeros((n, q + 1), np.int64),
            "quantile_windows": np.full((n, q + 1, m), -1, np.int64),
            "quantile_activations": np.zeros((n, q + 1, m, length), np.float32),
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

    def update(self, values: Any, lengths: Any, first: int, seed: int, layer: int) -> None:
        """Fold in windows ``first .. first + B - 1``.

        Args:
            values: float32 [B, L, N] with ``L <= Lw`` (a torch tensor on any device, or a
                NumPy array), read on the CPU; only each window's first ``length`` positions
                are read (what is kept is zero past them).
            lengths: [B] each window's real length (its positions ``0 .. length - 1``).
            first: the stream index of window 0 of the batch.
            seed, layer: key the sampling decisions.
        """
        x = values if isinstance(values, np.ndarray) else values.detach().cpu().numpy()
        # the kernels are compiled for C order (a slice past a BOS position is copied: read
        # strided, their loops would not vectorise and take about 4x as long)
        x = np.ascontiguousarray(x, np.float32)
        lengths = np.asarray(lengths, np.int64)
        n_batch = x.shape[0]
        self._cover(first, first + n_batch)
        if first == 0:  # the shift against cancellation: window 0's mean
            self.set_shift(x[0, : lengths[0]].astype(np.float64).mean(axis=0))
        elif not self.shift_known:
            raise RuntimeError("a partial state needs window 0's moment shift (set_shift)")
        maxes = np.empty((n_batch, x.shape[2]), np.float32)
        for lo, hi, binned in self._parts(first, n_batch):
            self._fold(x[lo:hi], lengths[lo:hi], first + lo, maxes[lo:hi], seed, layer, binned)
            if not binned:
                self._warm_up(maxes[lo:hi], first + lo)
        self._random(x, lengths, first, seed)
        self._bin_batch(x, maxes, first, seed, layer)

    def _parts(self, first: int, n_batch: int) -> list[tuple[int, int, bool]]:
        """The batch's rows as ``(start, stop, binned)`` parts: the windows still in the
        quantile warm-up, then those past it (binned, when there are bins). When the warm-up
        ends inside the batch the two are folded apart and the boundaries fixed in between;
        this gives the same bits, as every decision is per window."""
        a = self.a
        if not a["quantile_boundaries"].shape[1] or not a["quantile_windows"].shape[2]:
            return [(0, n_batch, False)]
        warm = int(np.clip(a["warmup_maxes"].shape[0] - first, 0, n_batch))
        parts = [(0, warm, False), (warm, n_batch, True)]
        return [part for part in parts if part[0] < part[1]]

    def _fold(
        self, x: np.ndarray, lengths: np.ndarray, first: int, maxes: np.ndarray, seed: int,
        layer: int, binned: bool,
    ) -> None:  # fmt: skip
        """One compiled pass over windows ``first ..`` (their ``maxes`` written): moments,
        firing counts, top-k and, when ``binned``, the quantile bins."""
        a = self.a
        if binned and np.isnan(a["quantile_boundaries"]).all():
            raise RuntimeError("a partial state past the warm-up needs the quantile boundaries")
        keys = self._quantile_keys(seed, layer) if binned else _NO_KEYS
        lanes = np.arange(x.shape[2]) if self.lanes is None else self.lanes
        sums = np.empty((x.shape[0], 4, x.shape[2]), np.float64)
        firing = a.get("firing_counts")
        kernels().fold_batch(
            x, lengths, first, a["moment_shift"].astype(np.float32), maxes, sums,
            _NO_FIRING if firing is None else firing, firing is not None,
            a["top_values"], a["top_windows"], a["top_slots"], a["top_activations"],
            binned, key_hash((seed, 1 + layer)), lanes.astype(np.uint64),
            a["quantile_boundaries"], a["quantile_counts"], keys, self._worst,
            a["quantile_windows"], a["quantile_activations"],
        )  # fmt: skip
        self.tree.add_windows(first, sums)
        a["token_count"][0] += int(lengths.sum())

    def _warm_up(self, maxes: np.ndarray, first: int) -> None:
        """Buffer the maxes of windows ``first ..`` below the warm-up's end ``W``; once windows
        ``0 .. W - 1`` are all in, fix the quantile boundaries from them."""
        a = self.a
        warmup = a["warmup_maxes"].shape[0]
        start = int(np.clip(warmup - first, 0, maxes.shape[0]))
        if not a["quantile_boundaries"].shape[1] or not start:
            return
        a["warmup_maxes"][first : first + start] = maxes[:start]
        if first + start == warmup and self.covers(0, warmup):
            self.fix_boundaries(warmup)

    def _bin_batch(
        self, x: np.ndarray, maxes: np.ndarray, first: int, seed: int, layer: int
    ) -> None:
        """Nothing: the compiled pass bins the windows (sampler 1's state bins them here)."""

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

    def _random(self, x: np.ndarray, lengths: np.ndarray, first: int, seed: int) -> None:
        """The shared reservoir: window ``w`` takes `reservoir_slot` ``(w)``, if any."""
        a = self.a
        reservoir = self.random_by_window
        for b in range(x.shape[0]):  # in order: a later window replaces an earlier one
            slot = reservoir_slot(first + b, reservoir.shape[0], seed)
            if slot is not None:
                a["random_windows"][slot] = first + b
                reservoir[slot, : lengths[b]] = x[b, : lengths[b]]
                reservoir[slot, lengths[b] :] = 0.0

    def _quantile_keys(self, seed: int, layer: int) -> np.ndarray:
        """Each quantile entry's key [N, Q+1, m] (+inf where empty), kept up to date."""
        if self._keys is None:
            self._keys = quantile_keys(self.a["quantile_windows"], self.lanes, seed, layer)
            self._worst = self._keys.max(axis=2)
        return self._keys

    def fix_boundaries(self, n_windows: int) -> None:
        """Fix the quantile boundaries from the first ``n_windows`` buffered maxes."""
        a = self.a
        if n_windows == 0 or not np.isnan(a["quantile_boundaries"]).any():
            return
        a["quantile_boundaries"][:] = quantile_boundaries(
            a["warmup_maxes"][:n_windows], self.levels
        )
