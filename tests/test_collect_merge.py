"""Partial collection states merge into exactly the state of one pass (issue 19): every
sampling decision is keyed by the window id, so any sharding, merged in any order, gives the
same arrays, moments included."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import torch

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.subjects._collect_merge import canonical, merge_into
from neuron_explainer.subjects._collect_moments import MomentTree
from neuron_explainer.subjects._collect_state import LayerState

SEED, LAYER = 11, 2
OPTIONS = {"k": 3, "r": 4, "levels": (0.3, 0.7), "m": 2, "warmup": 13, "length": 4}


def _data(windows: int = 90, neurons: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    values = rng.normal(size=(windows, 4, neurons)).astype(np.float32)
    return values, rng.integers(1, 5, size=windows)


def _fold(state: LayerState, values: np.ndarray, lengths: np.ndarray, start: int, end: int) -> None:
    """Fold windows ``[start, end)`` in batches of 5."""
    for first in range(start, end, 5):
        last = min(first + 5, end)
        chunk, n = values[first:last].copy(), lengths[first:last]
        for b, length in enumerate(n):
            chunk[b, length:] = 0.0
        state.update(torch.from_numpy(chunk), n, first, SEED, LAYER)


def _sharded(values: np.ndarray, lengths: np.ndarray, cuts: list[int], order: Any) -> LayerState:
    """The driver's three phases: window 0 (the moment shift), the warm-up windows (the
    quantile boundaries), the rest; shards cut at ``cuts``, merged in ``order``."""
    n, neurons, warmup = len(values), values.shape[2], OPTIONS["warmup"]
    edges = sorted({0, 1, warmup, n, *cuts})
    merged = LayerState.new(neurons, **OPTIONS)
    _fold(merged, values, lengths, 0, 1)
    for phase in ((1, warmup), (warmup, n)):
        shards = []
        for start, end in itertools.pairwise(edges):
            if phase[0] <= start and end <= phase[1]:
                state = LayerState.new(neurons, **OPTIONS)
                bounds = merged.a["quantile_boundaries"] if start >= warmup else None
                state.prime(merged.a["moment_shift"], bounds)
                _fold(state, values, lengths, start, end)
                shards.append(state)
        for i in order(len(shards)):
            merge_into(merged, shards[i], seed=SEED, layer=LAYER)
    return merged


@pytest.mark.parametrize(
    ("cuts", "reverse"),
    [([], False), ([7, 40, 41, 77], False), ([3, 9, 20, 33, 50, 64, 80], True)],
)
def test_any_sharding_merges_into_the_single_pass_state_bit_for_bit(
    cuts: list[int], reverse: bool
) -> None:
    values, lengths = _data()
    single = LayerState.new(values.shape[2], **OPTIONS)
    _fold(single, values, lengths, 0, len(values))
    order = (lambda k: range(k - 1, -1, -1)) if reverse else range
    merged = _sharded(values, lengths, cuts, order)
    want, got = canonical(single, seed=SEED, layer=LAYER), canonical(merged, seed=SEED, layer=LAYER)
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert merged.covered == [(0, len(values))]
    assert (want["quantile_windows"] >= 13).any()  # the bins were sampled


def test_overlapping_or_foreign_states_are_refused() -> None:
    values, lengths = _data()
    a = LayerState.new(values.shape[2], **OPTIONS)
    _fold(a, values, lengths, 0, 10)
    b = LayerState.new(values.shape[2], **OPTIONS)
    b.prime(a.a["moment_shift"], None)
    _fold(b, values, lengths, 5, 12)
    with pytest.raises(InvalidInputError, match=r"windows 5\.\.9 were folded in twice"):
        merge_into(a, b, seed=SEED, layer=LAYER)
    wider = LayerState.new(values.shape[2] + 1, **OPTIONS)
    with pytest.raises(InvalidInputError, match="differ in top_values"):
        merge_into(a, wider, seed=SEED, layer=LAYER)


def test_a_shard_without_window_zero_needs_the_shift() -> None:
    values, lengths = _data()
    state = LayerState.new(values.shape[2], **OPTIONS)
    with pytest.raises(RuntimeError, match="moment shift"):
        _fold(state, values, lengths, 5, 10)


def test_moment_tree_total_does_not_depend_on_how_windows_are_grouped() -> None:
    rng = np.random.default_rng(2)
    leaves = rng.normal(scale=1e6, size=(37, 4, 3)) + rng.normal(size=(37, 4, 3))
    whole = MomentTree()
    whole.add_windows(0, (leaf.copy() for leaf in leaves))
    parts = [MomentTree() for _ in range(3)]
    for tree, (start, end) in zip(parts, ((20, 37), (0, 11), (11, 20)), strict=True):
        tree.add_windows(start, (leaf.copy() for leaf in leaves[start:end]))
    merged = parts[0]
    merged.merge(parts[2])
    merged.merge(parts[1])
    assert sorted(merged.nodes) == sorted(whole.nodes) == [(0, 36), (2, 8), (5, 0)]
    np.testing.assert_array_equal(merged.total(3), whole.total(3))
    running = np.zeros((4, 3))
    for leaf in leaves[::-1]:
        running += leaf
    assert np.allclose(whole.total(3), running, rtol=1e-12)
    with pytest.raises(InvalidInputError, match="folded into the moments twice"):
        merged.merge(parts[1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_moment_tree_adds_a_run_of_windows_as_its_leaves_one_by_one_would(seed: int) -> None:
    """`MomentTree.add_windows` pre-adds siblings within a run; the nodes and their bits are
    those of inserting every leaf alone, whatever the runs' starts and lengths."""
    rng = np.random.default_rng(seed)
    leaves = rng.normal(scale=1e6, size=(100, 4, 3)) + rng.normal(size=(100, 4, 3))
    cuts = np.sort(rng.choice(np.arange(1, 100), size=12, replace=False))
    runs = list(zip([0, *cuts], [*cuts, 100], strict=True))
    rng.shuffle(runs)
    one_by_one, by_runs = MomentTree(), MomentTree()
    for start, end in runs:
        for w in range(start, end):
            one_by_one.insert(0, w, leaves[w].copy())
        by_runs.add_windows(start, leaves[start:end].copy())
        assert sorted(by_runs.nodes) == sorted(one_by_one.nodes)
    for key, value in one_by_one.nodes.items():
        np.testing.assert_array_equal(by_runs.nodes[key], value)
    assert sorted(by_runs.nodes) == [(2, 24), (5, 2), (6, 0)]  # windows 96..99, 64..95, 0..63
    with pytest.raises(InvalidInputError, match="folded into the moments twice"):
        by_runs.add_windows(96, leaves[96:].copy())  # node (2, 24) again


def test_only_each_windows_own_positions_are_read() -> None:
    """A batch narrower than the window length, with NaN past each window's length (what the
    model leaves at padded positions is never written to or read), folds into the same
    state as the zero-padded batch: its kept activations are zero past the length."""
    values, lengths = _data()
    lengths[:] = np.minimum(lengths, 3)
    padded, narrow = (
        LayerState.new(values.shape[2], **OPTIONS),
        LayerState.new(values.shape[2], **OPTIONS),
    )
    _fold(padded, values, lengths, 0, len(values))
    for first in range(0, len(values), 5):
        chunk = values[first : first + 5, :3].copy()
        for b, length in enumerate(lengths[first : first + 5]):
            chunk[b, length:] = np.nan
        narrow.update(torch.from_numpy(chunk), lengths[first : first + 5], first, SEED, LAYER)
    want, got = padded.arrays(), narrow.arrays()
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert not np.isnan(got["top_activations"]).any()
