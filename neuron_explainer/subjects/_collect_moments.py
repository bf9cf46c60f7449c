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

from collections.abc import Iterable

import numpy as np

from neuron_explainer.errors import InvalidInputError

__all__ = ["MomentTree"]


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
        """Add one leaf per window ``first, first + 1, ...`` (each ``[4, N]`` float64, owned by
        the tree from now on).

        The same nodes as inserting each leaf, made faster: siblings that are both among
        these windows are added a level at a time (``left + right`` in one NumPy call per
        level), and only the rest (a level's first node when it is a right child, its last
        when it is a left one) go through `insert`.

        Raises:
            InvalidInputError: a node is already present (a window folded twice).
        """
        values = np.asarray(sums if isinstance(sums, np.ndarray) else list(sums))
        level, index = 0, int(first)
        while len(values):
            if index & 1:  # its left sibling is not among these
                self.insert(level, index, values[0])
                values, index = values[1:], index + 1
            if len(values) & 1:  # the last one's right sibling is not among these
                self.insert(level, index + len(values) - 1, values[-1])
                values = values[:-1]
            # each pair's parent, left + right, in the left child's place (no new array)
            values = np.add(values[0::2], values[1::2], out=values[0::2])
            level, index = level + 1, index >> 1

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
