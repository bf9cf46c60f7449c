"""Order-independent moment sums: a dyadic tree over window ids.

Each window's sums of ``(x - c) ** p`` (``p = 1..4``, over its real tokens) are a leaf at
``(level 0, index w)``; a node ``(l, i)`` covers windows ``[i * 2**l, (i + 1) * 2**l)`` and
its value is always ``left + right`` (float64) of its two children. A node is made as soon as
both its children are present, so a stream in window order is a binary counter (about one
addition per window, as a running sum would be) and any set of windows, folded in any order,
in any number of pieces merged in any order, holds the same nodes with the same values: the
maximal aligned blocks of what it covers. The total of windows ``[0, n)`` adds those blocks
left to right, so it is bit-identical however the corpus was split (a running float64 sum is
not: addition does not associate).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from neuron_explainer.errors import InvalidInputError

__all__ = ["MomentTree", "window_sums"]

_CHUNK_BYTES = 3 << 20  # CPU: rows of a window per pass, so every pass stays in cache
_POOL: list[ThreadPoolExecutor] = []  # CPU: threads for the windows of a batch, made once


def window_sums(
    values: Any, lengths: Sequence[int] | None, shift: np.ndarray, firing: np.ndarray | None
) -> np.ndarray:
    """Sums of ``(x - shift) ** p``, ``p = 1..4``, over the real positions of each window of a
    batch: ``[B, 4, N]`` float64, one `MomentTree` leaf per window.

    Args:
        values: float32 torch tensor ``[B, Lw, N]`` (window, position, unit) on any device,
            zero beyond each window's length.
        lengths: each window's real length, or ``None`` when every window is full.
        shift: ``[N]`` float64, subtracted in float32 before the powers are taken.
        firing: ``[N]`` int64 or ``None``; if given, each unit's count of real positions above
            zero is added to it.

    On an accelerator, in torch, in one piece (float32 sums per window). On the CPU, in NumPy,
    window by window over its real rows, in chunks of rows that stay in cache: float32 sums
    per chunk, added in float64. The chunks depend on ``N`` only, so a window's sums are the
    same bits in any batch. The windows are shared among up to ``torch.get_num_threads()``
    Python threads (NumPy lets go of the GIL): torch's own threaded kernels would be faster
    on idle cores, but each waits for its whole thread team, and with another process busy
    on a core that costs a scheduler slice per kernel (measured on 2 cores: 0.78 s per batch
    of 16 windows x 3,072 units against 12 ms for NumPy).
    """
    import torch

    if values.device.type != "cpu":
        return _torch_window_sums(values, lengths, shift, firing)
    x = values.numpy()
    n_batch = x.shape[0]
    lengths = [x.shape[1]] * n_batch if lengths is None else [int(n) for n in lengths]
    c = np.asarray(shift, np.float64).astype(np.float32)
    leaves = np.zeros((n_batch, 4, x.shape[2]), np.float64)
    threads = max(1, min(torch.get_num_threads(), n_batch))
    if threads == 1:
        _numpy_window_sums(x, lengths, c, leaves, firing)
        return leaves
    if not _POOL or _POOL[0]._max_workers < threads:
        _POOL[:] = [ThreadPoolExecutor(max(threads, 2), thread_name_prefix="window-sums")]
    cuts = [n_batch * i // threads for i in range(threads + 1)]
    counts = [None if firing is None else np.zeros_like(firing) for _ in range(threads)]
    jobs = [
        _POOL[0].submit(_numpy_window_sums, x[a:b], lengths[a:b], c, leaves[a:b], count)
        for a, b, count in zip(cuts, cuts[1:], counts, strict=False)
    ]
    for job in jobs:
        job.result()
    if firing is not None:
        for count in counts:
            firing += count
    return leaves


def _numpy_window_sums(
    x: np.ndarray,
    lengths: Sequence[int],
    c: np.ndarray,
    leaves: np.ndarray,
    firing: np.ndarray | None,
) -> None:
    """`window_sums` of CPU windows ``x`` [b, Lw, N] into ``leaves`` [b, 4, N] (one thread)."""
    n = x.shape[2]
    rows = min(255, max(1, _CHUNK_BYTES // (4 * n)))  # 255: a uint8 firing count per chunk
    y, y2 = np.empty((rows, n), np.float32), np.empty((rows, n), np.float32)
    fires = np.empty((rows, n), np.bool_)
    part = np.empty(n, np.float32)
    for b, length in enumerate(lengths):
        window, sums = x[b, :length], leaves[b]
        for start in range(0, length, rows):
            chunk = window[start : start + rows]
            yc, yc2 = y[: len(chunk)], y2[: len(chunk)]
            if firing is not None:  # a bool pass and a uint8 column sum (rows <= 255): cheapest
                above = np.greater(chunk, 0, out=fires[: len(chunk)]).view(np.uint8)
                firing += np.add.reduce(above, axis=0, dtype=np.uint8)
            np.subtract(chunk, c, out=yc)
            np.square(yc, out=yc2)
            sums[0] += np.add.reduce(yc, axis=0, out=part)
            sums[1] += np.add.reduce(yc2, axis=0, out=part)
            sums[2] += np.einsum("ij,ij->j", yc, yc2, out=part)  # no product array written
            sums[3] += np.einsum("ij,ij->j", yc2, yc2, out=part)


def _torch_window_sums(
    values: Any, lengths: Sequence[int] | None, shift: np.ndarray, firing: np.ndarray | None
) -> np.ndarray:
    """`window_sums` on an accelerator: float32 per window, in one piece."""
    import torch

    c = torch.from_numpy(np.asarray(shift, np.float64)).to(values.device, values.dtype)
    y = values - c
    if lengths is not None:  # zero whole padded rows
        positions = torch.arange(values.shape[1], device=values.device)
        real = positions[None, :] < torch.tensor(list(lengths), device=values.device)[:, None]
        y.mul_(real[:, :, None])
    if firing is not None:  # padding is zero: never above it
        firing += (values > 0).sum(dim=(0, 1)).cpu().numpy()
    y2 = y * y
    powers = torch.stack([y.sum(1), y2.sum(1), y.mul_(y2).sum(1), y2.square_().sum(1)])
    return powers.transpose(0, 1).double().cpu().numpy()


class MomentTree:
    """Moment sums keyed by dyadic window blocks (see the module docstring).

    Args:
        nodes: ``(level, index) -> [4, N] float64`` to start from (e.g. read back from a
            checkpoint); siblings must not both be present.
    """

    def __init__(self, nodes: dict[tuple[int, int], np.ndarray] | None = None) -> None:
        self.nodes: dict[tuple[int, int], np.ndarray] = {}
        for (level, index), value in sorted((nodes or {}).items()):
            self.insert(level, index, value)

    def insert(self, level: int, index: int, value: np.ndarray) -> None:
        """Add the node ``(level, index)`` with ``value`` (owned by the tree from now on),
        combining it with its sibling, then its parent's sibling, and so on.

        Raises:
            InvalidInputError: the node is already present (a window folded twice).
        """
        while True:
            if (level, index) in self.nodes:
                start, end = index << level, (index + 1) << level
                raise InvalidInputError(
                    f"windows {start}..{end - 1} were folded into the moments twice; partial "
                    "collection states that overlap cannot be merged"
                )
            sibling = self.nodes.pop((level, index ^ 1), None)
            if sibling is None:
                self.nodes[(level, index)] = value
                return
            if index & 1:  # the sibling is the left child
                np.add(sibling, value, out=sibling)
                value = sibling
            else:
                np.add(value, sibling, out=value)
            level, index = level + 1, index >> 1

    def add_windows(self, first: int, sums: Iterable[np.ndarray]) -> None:
        """Add one leaf per window ``first, first + 1, ...`` (each ``[4, N]`` float64)."""
        for offset, leaf in enumerate(sums):
            self.insert(0, first + offset, leaf)

    def merge(self, other: MomentTree) -> None:
        """Fold ``other``'s nodes in (copies).

        Raises:
            InvalidInputError: the two cover a window in common.
        """
        mine = [(i << lv, (i + 1) << lv) for lv, i in self.nodes]
        for (level, index), value in sorted(other.nodes.items()):
            start, end = index << level, (index + 1) << level
            if any(a < end and start < b for a, b in mine):
                raise InvalidInputError(
                    f"windows {start}..{end - 1} were folded into the moments twice; partial "
                    "collection states that overlap cannot be merged"
                )
            self.insert(level, index, value.copy())

    def total(self, n: int) -> np.ndarray:
        """The sums over every folded window, as ``[4, N]``: the nodes added in window order
        (all zeros with no node; ``n`` is the number of units)."""
        ordered = sorted(self.nodes.items(), key=lambda item: item[0][1] << item[0][0])
        if not ordered:
            return np.zeros((4, n), np.float64)
        total = ordered[0][1].copy()
        for _, value in ordered[1:]:
            np.add(total, value, out=total)
        return total

    def arrays(self, n: int) -> dict[str, np.ndarray]:
        """The tree as stored: ``moment_node_ids`` i64 [K, 2] (level, index) and
        ``moment_nodes`` f64 [K, 4, N]."""
        keys = sorted(self.nodes)
        ids = np.array(keys, np.int64).reshape(len(keys), 2)
        values = (
            np.stack([self.nodes[key] for key in keys]) if keys else np.zeros((0, 4, n), np.float64)
        )
        return {"moment_node_ids": ids, "moment_nodes": values}

    @classmethod
    def from_arrays(cls, ids: np.ndarray, values: np.ndarray) -> MomentTree:
        """The tree `arrays` wrote."""
        return cls({(int(lv), int(i)): values[k].copy() for k, (lv, i) in enumerate(ids)})
