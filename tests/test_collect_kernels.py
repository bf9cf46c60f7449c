"""The collector's compiled loops (`neuron_explainer.subjects._collect_kernels`) against plain
NumPy references: the per-window stats, the top-k and the quantile bins."""

from __future__ import annotations

import numpy as np
import pytest

from neuron_explainer.subjects._collect_keys import key_hash, pair_uniform
from neuron_explainer.subjects._collect_state import kernels, quantile_boundaries


class _Fold:
    """Every array `fold_batch` updates, for ``n`` units (top ``k``; ``q`` boundaries and
    ``m`` windows a bin, from ``bounds``), and a call over one batch."""

    def __init__(
        self,
        n: int,
        width: int,
        *,
        k: int = 1,
        bounds: np.ndarray | None = None,
        m: int = 0,
        lanes: np.ndarray | None = None,
        firing: bool = False,
    ) -> None:
        self.top = (
            np.full((n, k), -np.inf, np.float32),
            np.full((n, k), -1, np.int64),
            np.broadcast_to(np.arange(k), (n, k)).copy(),
            np.zeros((n, k, width), np.float32),
        )
        self.bounds = np.zeros((n, 0)) if bounds is None else bounds
        q = self.bounds.shape[1]
        self.counts = np.zeros((n, q + 1), np.int64)
        self.keys = np.full((n, q + 1, m), np.inf)
        self.worst = np.full((n, q + 1), np.inf)
        self.windows = np.full((n, q + 1, m), -1, np.int64)
        self.acts = np.zeros((n, q + 1, m, width), np.float32)
        self.lanes = np.arange(n, dtype=np.uint64) if lanes is None else lanes
        self.firing = np.zeros(n if firing else 0, np.int64)

    def __call__(
        self,
        x: np.ndarray,
        lengths: list[int],
        first: int,
        *,
        shift: np.ndarray | None = None,
        binned: bool = False,
        prefix: int = 0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fold ``x`` (windows ``first ..``) in; return its maxes and moment sums."""
        n = x.shape[2]
        maxes = np.empty((x.shape[0], n), np.float32)
        sums = np.empty((x.shape[0], 4, n), np.float64)
        kernels().fold_batch(
            np.ascontiguousarray(x), np.asarray(lengths, np.int64), first,
            np.zeros(n, np.float32) if shift is None else shift, maxes, sums,
            self.firing, len(self.firing) > 0, *self.top, binned, np.uint64(prefix),
            self.lanes, self.bounds, self.counts, self.keys, self.worst, self.windows,
            self.acts,
        )  # fmt: skip
        return maxes, sums


def _stats(x: np.ndarray, lengths: list[int], shift: np.ndarray, firing: np.ndarray | None):  # type: ignore[no-untyped-def]
    fold = _Fold(x.shape[2], x.shape[1], firing=firing is not None)
    out = fold(x, lengths, 0, shift=shift)
    if firing is not None:
        firing += fold.firing
    return out


@pytest.mark.parametrize("n", [1, 37, 3072])
def test_window_stats_are_each_windows_own_and_close_to_float64(n: int) -> None:
    """A window's maxes and moment sums are the same bits alone or in any batch, skip its
    padding, match float64 and NumPy's max (NaN included), and count positions above 0."""
    rng = np.random.default_rng(n)
    width = 64
    lengths = [64, 30, 64, 1, 64]
    x = rng.gamma(0.5, 1.0, size=(len(lengths), width, n)).astype(np.float32) - 0.3
    for b, length in enumerate(lengths):
        x[b, length:] = 0.0
    x[2, 5, 0] = np.nan
    shift = rng.normal(0.0, 0.1, n).astype(np.float32)
    firing = np.zeros(n, np.int64)
    maxes, sums = _stats(x, lengths, shift, firing)
    for b, length in enumerate(lengths):
        real = x[b, :length]
        np.testing.assert_array_equal(maxes[b], real.max(axis=0))
        if b == 2:
            continue  # its NaN makes unit 0's sums NaN
        y = real.astype(np.float64) - shift
        expected = np.stack([(y**p).sum(axis=0) for p in (1, 2, 3, 4)])
        np.testing.assert_allclose(sums[b], expected, rtol=2e-5, atol=1e-6 * length)
    assert np.isnan(maxes[2, 0]) and np.isnan(sums[2, :, 0]).all()
    assert (firing == (np.nan_to_num(x) > 0).sum(axis=(0, 1))).all()
    for b, length in enumerate(lengths):  # alone
        alone = _stats(x[b : b + 1], [length], shift, None)
        np.testing.assert_array_equal(alone[0][0], maxes[b])
        np.testing.assert_array_equal(alone[1][0], sums[b])
    pair = _stats(np.ascontiguousarray(x[1:3]), lengths[1:3], shift, None)
    np.testing.assert_array_equal(pair[1], sums[1:3])


def _top_reference(maxes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each unit's top ``k`` (value, window) by (max desc, window asc); NaN never enters."""
    n_windows, n = maxes.shape
    values = np.full((n, k), -np.inf, np.float32)
    windows = np.full((n, k), -1, np.int64)
    for u in range(n):
        entries = sorted(
            ((-maxes[w, u], w) for w in range(n_windows) if not np.isnan(maxes[w, u])),
        )[:k]
        for r, (v, w) in enumerate(entries):
            values[u, r], windows[u, r] = -v, w
    return values, windows


@pytest.mark.parametrize("batch", [1, 4, 7])
def test_top_k_keeps_the_highest_maxes_earliest_first_with_their_activations(batch: int) -> None:
    rng = np.random.default_rng(batch)
    n_windows, width, n, k = 40, 3, 5, 4
    x = rng.integers(0, 6, size=(n_windows, width, n)).astype(np.float32)  # many ties
    x[rng.random(size=x.shape) < 0.02] = np.nan
    maxes = x.max(axis=1)
    fold = _Fold(n, width, k=k)
    for first in range(0, n_windows, batch):
        chunk = x[first : first + batch]
        fold(chunk, [width] * len(chunk), first)
    values, windows, slots, acts = fold.top
    want_values, want_windows = _top_reference(maxes, k)
    np.testing.assert_array_equal(values, want_values)
    np.testing.assert_array_equal(windows, want_windows)
    assert sorted(slots[0]) == list(range(k))
    for u in range(n):
        for r in range(k):
            if windows[u, r] >= 0:
                np.testing.assert_array_equal(acts[u, slots[u, r]], x[windows[u, r], :, u])


def test_quantile_bins_keep_their_smallest_keys_and_count_every_window() -> None:
    rng = np.random.default_rng(3)
    n_windows, width, n, m, seed, layer = 60, 2, 4, 3, 5, 1
    x = rng.normal(size=(n_windows, width, n)).astype(np.float32)
    maxes = x.max(axis=1)
    bounds = np.quantile(maxes.astype(np.float64), [0.3, 0.8], axis=0).T.copy()
    bounds[2] = np.nan  # a unit without boundaries: every window in bin 0
    lanes = np.array([7, 8, 9, 10], np.uint64)
    fold = _Fold(n, width, bounds=bounds, m=m, lanes=lanes)
    prefix = key_hash((seed, 1 + layer))
    skip = 2  # windows 0 and 1 are warm-up windows: folded apart, without bins
    fold(x[:skip], [width] * skip, 0)
    for first in range(skip, n_windows, 8):
        chunk = x[first : first + 8]
        fold(chunk, [width] * len(chunk), first, binned=True, prefix=int(prefix))
    counts, keys, worst, windows, acts = fold.counts, fold.keys, fold.worst, fold.windows, fold.acts
    ws = np.arange(skip, n_windows)
    for u in range(n):
        cell = np.zeros(len(ws), np.int64)
        for j in range(2):
            cell += maxes[ws, u].astype(np.float64) >= bounds[u, j]
        key = pair_uniform((seed, 1 + layer), ws, np.full(len(ws), lanes[u]))
        for b in range(3):
            mine = ws[cell == b]
            assert counts[u, b] == len(mine)
            want = mine[np.argsort(key[cell == b])][:m]
            got = windows[u, b][windows[u, b] >= 0]
            assert sorted(got) == sorted(want)
            filled = keys[u, b][windows[u, b] >= 0]
            np.testing.assert_array_equal(np.sort(filled), np.sort(key[cell == b])[: len(got)])
            assert worst[u, b] == keys[u, b].max()
            for s, w in enumerate(windows[u, b]):
                if w >= 0:
                    np.testing.assert_array_equal(acts[u, b, s], x[w, :, u])
    assert counts[2, 0] == len(ws)


def test_quantile_boundaries_are_numpys_linear_quantiles_bit_for_bit() -> None:
    """The sort-and-interpolate rule gives ``numpy.quantile``'s float64 values exactly, with
    ties, infinities and NaN (a unit with one NaN max gets NaN boundaries)."""
    rng = np.random.default_rng(0)
    for trial in range(200):
        shape = (int(rng.integers(1, 60)), int(rng.integers(1, 9)))
        if trial % 3 == 0:
            x = rng.integers(-2, 3, size=shape).astype(np.float32)  # ties
        else:
            x = (rng.gamma(0.3, size=shape) * 10.0 ** rng.integers(-3, 7)).astype(np.float32)
        if trial % 4 == 0:
            for value in (np.nan, np.inf, -np.inf):
                x[rng.random(size=shape) < 0.1] = value
        levels = tuple(sorted(rng.random(size=int(rng.integers(1, 6)))))
        levels += (0.0, 1.0) if trial % 5 == 0 else ()
        with np.errstate(invalid="ignore"):
            want = np.quantile(x.astype(np.float64), levels, axis=0).T
        got = quantile_boundaries(x, levels)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want, err_msg=f"trial {trial}")


def test_merged_top_k_is_the_lexsorted_union_earlier_state_first_on_ties() -> None:
    """Two rank-ordered top-k lists (ties, empty entries, slots in any order) merge into the
    first ``k`` of their union by (max desc, window asc, empties last), slot = rank."""
    rng = np.random.default_rng(4)
    n, k, width = 6, 5, 3

    def side(windows: np.ndarray) -> tuple[np.ndarray, ...]:
        values = rng.integers(0, 4, size=(n, k)).astype(np.float32)
        empty = rng.random(size=(n, k)) < 0.2
        values[empty] = -np.inf
        wins = np.where(empty, -1, windows)
        order = np.lexsort((np.where(wins < 0, 10**9, wins), -values))
        values = np.take_along_axis(values, order, axis=1)
        wins = np.take_along_axis(wins, order, axis=1)
        slots = np.stack([rng.permutation(k) for _ in range(n)])
        acts = rng.normal(size=(n, k, width)).astype(np.float32)
        return values, wins, slots, acts

    a = side(np.broadcast_to(np.arange(0, 2 * k, 2), (n, k)))  # even windows
    b = side(np.broadcast_to(np.arange(1, 2 * k, 2), (n, k)))  # odd windows
    values = np.empty((n, k), np.float32)
    windows = np.empty((n, k), np.int64)
    acts = np.empty((n, k, width), np.float32)
    kernels().merge_top_k(*a, *b, values, windows, acts)
    for u in range(n):
        entries = [
            (-s[0][u, r], s[1][u, r] if s[1][u, r] >= 0 else 10**9, side_index, s[3][u, s[2][u, r]])
            for side_index, s in enumerate((a, b))
            for r in range(k)
        ]
        entries.sort(key=lambda e: (e[0], e[1], e[2]))
        for r, (neg, window, _, row) in enumerate(entries[:k]):
            assert values[u, r] == -neg
            assert windows[u, r] == (window if window < 10**9 else -1)
            np.testing.assert_array_equal(acts[u, r], row)
