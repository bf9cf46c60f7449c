"""Merging partial collection states: two `LayerState` that folded disjoint sets of windows
become exactly the state one pass over both sets makes (every decision is keyed by the window
id, see `neuron_explainer.subjects._collect_state`).

`merge_into` leaves the merged state canonical: top-k entries in rank order (``top_slots`` =
rank) and each quantile bin's entries ordered by key, empty slots last; `canonical` puts any
state in that form, so a merged state and a single pass compare array for array.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.subjects._collect_keys import quantile_keys
from neuron_explainer.subjects._collect_state import LayerState, kernels

__all__ = ["canonical", "merge_into"]


def _top_by_rank(state: LayerState) -> np.ndarray:
    """``top_activations`` [N, k, Lw] with rank ``r``'s row at ``r``."""
    import torch

    acts = torch.from_numpy(state.a["top_activations"])
    slots = torch.from_numpy(state.a["top_slots"])
    return acts.gather(1, slots[:, :, None].expand(-1, -1, acts.shape[2])).numpy()


def _merge_top(target: LayerState, other: LayerState) -> None:
    """Each unit's two top-k lists merged in rank order (`_collect_kernels.merge_top_k`)."""
    a, b = target.a, other.a
    values = np.empty_like(a["top_values"])
    windows = np.empty_like(a["top_windows"])
    acts = np.empty_like(a["top_activations"])
    kernels().merge_top_k(
        a["top_values"], a["top_windows"], a["top_slots"], a["top_activations"],
        b["top_values"], b["top_windows"], b["top_slots"], b["top_activations"],
        values, windows, acts,
    )  # fmt: skip
    a["top_values"], a["top_windows"], a["top_activations"] = values, windows, acts
    a["top_slots"] = np.broadcast_to(np.arange(values.shape[1]), values.shape).copy()


def _merge_random(target: LayerState, other: LayerState) -> None:
    mine, theirs = target.a["random_windows"], other.a["random_windows"]
    take = theirs > mine  # slot s holds the largest window hashed to it
    mine[take] = theirs[take]
    target.random_by_window[take] = other.random_by_window[take]


def _merge_quantiles(target: LayerState, other: LayerState, seed: int, layer: int) -> None:
    import torch

    a, b = target.a, other.a
    warmup = a["warmup_maxes"].shape[0]
    for start, end in other.covered:
        if start < warmup:
            a["warmup_maxes"][start : min(end, warmup)] = b["warmup_maxes"][
                start : min(end, warmup)
            ]
    mine, theirs = a["quantile_boundaries"], b["quantile_boundaries"]
    if np.isnan(mine).all():
        mine[:] = theirs
    elif not np.isnan(theirs).all() and not np.array_equal(mine, theirs, equal_nan=True):
        raise InvalidInputError("partial collection states with other quantile boundaries")
    a["quantile_counts"] += b["quantile_counts"]
    m = a["quantile_windows"].shape[2]
    if m == 0 or a["quantile_windows"].shape[1] == 1:
        return
    keys = np.concatenate(
        [quantile_keys(s.a["quantile_windows"], s.lanes, seed, layer) for s in (target, other)],
        axis=2,
    )
    windows = np.concatenate([a["quantile_windows"], b["quantile_windows"]], axis=2)
    order = np.lexsort((windows, keys))[:, :, :m]  # empties (+inf) last
    acts = np.concatenate([a["quantile_activations"], b["quantile_activations"]], axis=2)
    index = torch.from_numpy(order)[:, :, :, None].expand(-1, -1, -1, acts.shape[3])
    a["quantile_windows"] = np.ascontiguousarray(np.take_along_axis(windows, order, axis=2))
    a["quantile_activations"] = torch.from_numpy(acts).gather(2, index).numpy()
    target._keys = None


def _merge_moments(target: LayerState, other: LayerState) -> None:
    a, b = target.a, other.a
    if not target.shift_known:
        if other.shift_known:
            target.set_shift(b["moment_shift"])
    elif other.shift_known and not np.array_equal(
        a["moment_shift"], b["moment_shift"], equal_nan=True
    ):
        raise InvalidInputError("partial collection states shifted by different window-0 means")
    target.tree.merge(other.tree)
    a["token_count"] += b["token_count"]
    if "firing_counts" in a:
        a["firing_counts"] += b["firing_counts"]


def merge_into(target: LayerState, other: LayerState, *, seed: int, layer: int) -> None:
    """Fold ``other`` (a partial state over other windows) into ``target``.

    Args:
        target, other: states of the same units and sizes; ``other`` is not changed.
        seed, layer: the sampling keys both were collected with.

    Raises:
        InvalidInputError: the two cover a window in common, differ in shape, or hold other
            quantile boundaries or moment shifts (they come from different collections).
    """
    for name in ("top_values", "quantile_windows", "warmup_maxes"):
        if target.a[name].shape != other.a[name].shape:
            raise InvalidInputError(
                f"partial collection states differ in {name}: {target.a[name].shape} and "
                f"{other.a[name].shape}"
            )
    for start, end in other.covered:
        target._cover(start, end)
    _merge_top(target, other)
    _merge_random(target, other)
    _merge_quantiles(target, other, seed, layer)
    _merge_moments(target, other)
    warmup = target.a["warmup_maxes"].shape[0]
    if target.covers(0, warmup):
        target.fix_boundaries(warmup)


def canonical(state: LayerState, *, seed: int, layer: int) -> dict[str, Any]:
    """``state``'s arrays with top-k entries in rank order and quantile entries by key, the
    form `merge_into` leaves (for comparing states made by different shardings)."""
    arrays = state.arrays()
    k = arrays["top_values"].shape[1]
    arrays["top_activations"] = _top_by_rank(state)
    arrays["top_slots"] = np.broadcast_to(np.arange(k), arrays["top_slots"].shape).copy()
    windows = arrays["quantile_windows"]
    keys = quantile_keys(windows, state.lanes, seed, layer)
    order = np.lexsort((windows, keys))
    arrays["quantile_windows"] = np.take_along_axis(windows, order, axis=2)
    arrays["quantile_activations"] = np.take_along_axis(
        arrays["quantile_activations"], order[..., None], axis=2
    )
    return arrays
