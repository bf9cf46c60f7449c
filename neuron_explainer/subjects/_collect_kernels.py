"""The collector's per-batch loops, compiled with numba: `fold_batch` is one pass over a
batch, in window order, touching a unit's state only where a window enters it; `merge_top_k`
merges two states' top-k lists.

`fold_batch` is single-threaded and runs between two kernels of the forward pass (whose
OpenMP team still spins on the other cores then), reads the batch ``values`` [B, L, N]
(float32, window, position, unit; ``L`` up to the window length ``Lw``, and nothing past a
window's own length is read: the copies it makes are zero there) where the forward pass left
it (in cache), and gives the same bits however the corpus is batched or sharded: every
per-window result is a fixed sequence of float32 operations over that window alone.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

from neuron_explainer.subjects._collect_keys import _mix as _mix_arrays

__all__ = ["fold_batch", "merge_top_k"]

# SplitMix64's finalizer: the NumPy rule of `_collect_keys`, compiled for one uint64 at a time
_mix = njit(inline="always")(_mix_arrays)


@njit(cache=True, nogil=True)
def fold_batch(  # type: ignore[no-untyped-def]
    values, lengths, first, shift, maxes, sums, firing, count_firing,
    top_values, top_windows, top_slots, top_activations,
    binned, prefix, lanes, bounds, counts, keys, worst, bin_windows, bin_activations,
):  # fmt: skip
    """Fold the batch's windows (ids ``first + b``), one window at a time while it is in
    cache: its stats, then the top-k and (with ``binned``) the quantile bins it enters.

    Per window ``b`` and unit ``u``: ``maxes[b, u]`` the max over the window's real positions
    (NaN if any is NaN); ``sums[b, p - 1, u]`` the float32 sum of ``(x - shift[u]) ** p``
    (``p = 1..4``), stored as float64; with ``count_firing``, ``firing[u] +=`` its positions
    above zero. Then `_top_k_window` and, with ``binned``, `_bin_window`: their copies read
    the window right after its stats pass, from L2 (a copy's 64 reads, 12 KB apart, took about
    140 ns from L2 against 410 ns from L3 in a microbenchmark here).
    """
    n = values.shape[2]
    k = top_values.shape[1]
    least = top_values[:, k - 1].copy()  # each unit's k-th, contiguous for the scan
    scratch = np.empty((4, n), np.float32)
    for b in range(values.shape[0]):
        x = values[b]
        _window(x, lengths[b], shift, scratch, maxes[b])
        for p in range(4):
            for u in range(n):
                sums[b, p, u] = scratch[p, u]
        if count_firing:
            for t in range(lengths[b]):
                row = x[t]
                for u in range(n):
                    if row[u] > 0.0:
                        firing[u] += 1
        _top_k_window(values, b, lengths[b], maxes[b], first + b, least, top_values,
                      top_windows, top_slots, top_activations)  # fmt: skip
        if binned:
            _bin_window(values, b, lengths[b], maxes[b], first + b, prefix, lanes, bounds,
                        counts, keys, worst, bin_windows, bin_activations)  # fmt: skip


@njit(inline="always")
def _window(x, length, shift, sums, top):  # type: ignore[no-untyped-def]
    """One window ``x`` [Lw, N]: four positions at a time (their pairwise sum added to the
    running one), then one at a time, so the order of the additions depends on the length
    only; the max by comparisons that drop a NaN, then NaN where one was."""
    s1, s2, s3, s4 = sums[0], sums[1], sums[2], sums[3]
    sums[:] = 0.0
    top[:] = -np.inf
    t = 0
    while t + 4 <= length:
        r0, r1, r2, r3 = x[t], x[t + 1], x[t + 2], x[t + 3]
        for u in range(x.shape[1]):
            c = shift[u]
            x0, x1, x2, x3 = r0[u], r1[u], r2[u], r3[u]
            y0, y1, y2, y3 = x0 - c, x1 - c, x2 - c, x3 - c
            q0, q1, q2, q3 = y0 * y0, y1 * y1, y2 * y2, y3 * y3
            s1[u] += (y0 + y1) + (y2 + y3)
            s2[u] += (q0 + q1) + (q2 + q3)
            s3[u] += (q0 * y0 + q1 * y1) + (q2 * y2 + q3 * y3)
            s4[u] += (q0 * q0 + q1 * q1) + (q2 * q2 + q3 * q3)
            high, low = max(max(x0, x1), max(x2, x3)), top[u]
            top[u] = high if high > low else low
        t += 4
    for tail in range(t, length):
        row = x[tail]
        for u in range(x.shape[1]):
            y = row[u] - shift[u]
            y2 = y * y
            s1[u] += y
            s2[u] += y2
            s3[u] += y2 * y
            s4[u] += y2 * y2
            high, low = row[u], top[u]
            top[u] = high if high > low else low
    for u in range(x.shape[1]):  # a NaN position makes s1 NaN (so does inf - inf)
        if s1[u] != s1[u]:
            for t in range(length):
                if x[t, u] != x[t, u]:
                    top[u] = np.nan


@njit(inline="always")
def _top_k_window(  # type: ignore[no-untyped-def]
    values, b, length, maxes, window, least, top_values, top_windows, top_slots, top_activations
):
    """Fold window ``window`` (batch row ``b``, maxes [N]) into each unit's top ``k``, ranked
    by (max desc, window asc): it enters when its max beats the k-th (``least``; NaN never
    does), takes the evicted entry's slot, and its activations are copied there."""
    k = top_values.shape[1]
    for u in range(maxes.shape[0]):
        if maxes[u] > least[u]:
            _enter(values, b, length, u, maxes[u], window, top_values, top_windows, top_slots,
                   top_activations)  # fmt: skip
            least[u] = top_values[u, k - 1]


@njit(inline="always")
def _enter(values, b, length, u, v, window, top_values, top_windows, top_slots, top_activations):  # type: ignore[no-untyped-def]
    """Put window ``window`` (batch row ``b``, max ``v``) into unit ``u``'s top-k, below every
    entry it does not beat, in the slot of the entry it evicts."""
    tv, tw, ts = top_values[u], top_windows[u], top_slots[u]
    k = tv.shape[0]
    p = k - 1
    while p > 0 and tv[p - 1] < v:  # an equal earlier window stays ahead
        p -= 1
    slot = ts[k - 1]
    for j in range(k - 1, p, -1):
        tv[j] = tv[j - 1]
        tw[j] = tw[j - 1]
        ts[j] = ts[j - 1]
    tv[p] = v
    tw[p] = window
    ts[p] = slot
    _copy_window(values, b, length, u, top_activations[u, slot])


@njit(inline="always")
def _bin_window(  # type: ignore[no-untyped-def]
    values,
    b,
    length,
    maxes,
    window,
    prefix,
    lanes,
    bounds,
    counts,
    keys,
    worst,
    windows,
    activations,
):
    """Fold window ``window`` (batch row ``b``, maxes [N]) into the quantile bins: it falls in
    bin ``#{j: max >= bounds[u, j]}`` of unit ``u`` (counted), and each (unit, bin) keeps the
    ``m`` windows with the smallest keys (``pair_uniform``: SplitMix64 of ``prefix``, the
    window and the unit's lane); a window replaces the bin's largest key (the first empty
    slot, key +inf, before any) when its key is smaller."""
    q = bounds.shape[1]
    m = keys.shape[2]
    row_hash = _mix(prefix ^ uint64(window))
    for u in range(maxes.shape[0]):
        x = np.float64(maxes[u])
        cell = 0
        for j in range(q):
            if x >= bounds[u, j]:
                cell += 1
        counts[u, cell] += 1
        key = np.float64(_mix(row_hash ^ lanes[u]) >> uint64(11)) * 2.0**-53
        if not key < worst[u, cell]:
            continue
        cell_keys = keys[u, cell]
        slot = 0
        for s in range(1, m):
            if cell_keys[s] > cell_keys[slot]:
                slot = s
        cell_keys[slot] = key
        largest = cell_keys[0]
        for s in range(1, m):
            largest = max(largest, cell_keys[s])
        worst[u, cell] = largest
        windows[u, cell, slot] = window
        _copy_window(values, b, length, u, activations[u, cell, slot])


@njit(inline="always")
def _copy_window(values, b, length, u, row):  # type: ignore[no-untyped-def]
    """``row`` [Lw] = unit ``u``'s activations in batch row ``b``: its ``length`` real
    positions, then zeros (whatever the batch holds past them)."""
    for t in range(length):
        row[t] = values[b, t, u]
    for t in range(length, row.shape[0]):
        row[t] = 0.0


@njit(cache=True, nogil=True)
def merge_top_k(  # type: ignore[no-untyped-def]
    a_values,
    a_windows,
    a_slots,
    a_acts,
    b_values,
    b_windows,
    b_slots,
    b_acts,
    values,
    windows,
    acts,
):
    """Merge two states' top-k lists (each in rank order) into ``values``, ``windows`` and
    ``acts`` (in rank order, slot = rank): rank by (max desc, window asc), an empty entry
    (window -1) after every real one, a NaN max as -inf, and on an exact tie the entry of
    ``a`` first."""
    n, k = a_values.shape
    for u in range(n):
        i = 0
        j = 0
        for r in range(k):
            take_a = j >= k
            if i < k and j < k:
                va, vb = a_values[u, i], b_values[u, j]
                va = -np.inf if va != va else va
                vb = -np.inf if vb != vb else vb
                wa, wb = a_windows[u, i], b_windows[u, j]
                ka = np.iinfo(np.int64).max if wa < 0 else wa
                kb = np.iinfo(np.int64).max if wb < 0 else wb
                take_a = va > vb or (va == vb and ka <= kb)
            if take_a:
                v, w, src = a_values[u, i], a_windows[u, i], a_acts[u, a_slots[u, i]]
                i += 1
            else:
                v, w, src = b_values[u, j], b_windows[u, j], b_acts[u, b_slots[u, j]]
                j += 1
            values[u, r] = -np.inf if v != v else v
            windows[u, r] = w
            acts[u, r] = src
