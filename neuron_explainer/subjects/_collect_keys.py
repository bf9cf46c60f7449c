"""The collector's sampling keys: stateless hashes of the seed, the window's id in the corpus
and the unit, so every decision is the same whatever order (or shard) windows come in."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

__all__ = [
    "key_hash",
    "pair_uniform",
    "quantile_keys",
    "reservoir_slot",
    "stateless_uniform",
    "stateless_uniform_grid",
]

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


def key_hash(key: Sequence[int]) -> np.uint64:
    """The hash of ``key`` that `stateless_uniform` mixes with each lane."""
    return _key_hash(key)[0]  # type: ignore[no-any-return]


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


def pair_uniform(prefix: Sequence[int], last: np.ndarray, lanes: np.ndarray) -> np.ndarray:
    """``stateless_uniform((*prefix, last[i]), [lanes[i]])[0]`` for every ``i`` (elementwise,
    any shape): the quantile key of window ``last`` for the unit in lane ``lanes``."""
    with np.errstate(over="ignore"):
        h = _mix(_mix(_key_hash(prefix) ^ last.astype(_U64)) ^ lanes.astype(_U64))
    return (h >> _U64(11)).astype(np.float64) * 2.0**-53


def quantile_keys(
    windows: np.ndarray, lanes: np.ndarray | None, seed: int, layer: int
) -> np.ndarray:
    """The `pair_uniform` key of every quantile entry ``windows`` [N, Q+1, m] (+inf where a
    slot is empty, -1); ``lanes`` [N] as in `LayerState.lanes` (``None``: the row)."""
    n = windows.shape[0]
    lane = np.arange(n) if lanes is None else np.asarray(lanes)
    keys = pair_uniform((seed, 1 + layer), np.maximum(windows, 0), lane[:, None, None])
    keys[windows < 0] = np.inf
    return keys
