"""Records chosen as a collection chooses them, from units' activations held in memory.

`HFSubject` records a few units by holding every window's activations; it folds them into a
`LayerState` (the collector's state, every decision keyed by the window id) and reads the
records out the way `Collection` does: so ``explain_neuron`` straight from a model and a
collection of the same corpus select the same top, random and quantile windows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from neuron_explainer.records import ActivationRecord, NeuronRecord, Provenance, UnitId
from neuron_explainer.subjects._collect_state import LayerState

__all__ = ["choose_windows", "refuse_dead_record", "select_records"]

_FOLD = 256  # windows per update


def choose_windows(
    top_windows: Iterable[int],
    random_windows: Iterable[int],
    quantile_windows: Iterable[Iterable[int]],
    n_random: int,
    tokens: Callable[[int], tuple[int, ...]],
) -> dict[str, Any]:
    """A unit's excerpts, de-duplicated by their tokens (``tokens(window)``): a window whose
    tokens repeat a higher-ranked top window is dropped, a random window never repeats a top
    excerpt or an earlier random one (the first ``n_random`` left, in slot order), and a
    quantile sample holds no excerpt twice (by window id). So repeated text cannot put the same
    excerpt in two splits, and a record can hold fewer than asked for."""
    top: list[int] = []
    seen: set[tuple[int, ...]] = set()
    for w in top_windows:
        if w >= 0 and (key := tokens(int(w))) not in seen:
            seen.add(key)
            top.append(int(w))
    random: list[int] = []
    for w in random_windows:
        if len(random) == n_random:
            break
        if w >= 0 and (key := tokens(int(w))) not in seen:
            seen.add(key)
            random.append(int(w))
    quantiles = []
    for row in quantile_windows:
        kept, keys = [], set()
        for w in sorted(int(w) for w in row if w >= 0):
            if (key := tokens(w)) not in keys:
                keys.add(key)
                kept.append(w)
        quantiles.append(kept)
    return {"top": top, "random": random, "quantiles": quantiles}


def _fold(
    state: LayerState,
    columns: Sequence[Sequence[ActivationRecord]],
    width: int,
    seed: int,
    layer: int,
) -> None:
    n_windows, n = len(columns[0]), len(columns)
    for first in range(0, n_windows, _FOLD):
        last = min(first + _FOLD, n_windows)
        lengths = np.array([len(columns[0][w].activations) for w in range(first, last)])
        values = np.zeros((last - first, width, n), np.float32)
        for u, column in enumerate(columns):
            for b, record in enumerate(column[first:last]):
                values[b, : lengths[b], u] = record.activations
        state.update(values, lengths, first, seed, layer)


def refuse_dead_record(record: NeuronRecord, unit: UnitId) -> None:
    """Raise `DeadUnitError` when ``record`` (of every window of a corpus) shows ``unit`` never
    above 0: its top excerpt holds its highest activation.

    Raises:
        DeadUnitError: the unit never activated above 0 (the message begins as a
            collection's, `neuron_explainer.subjects._collection_units.DEAD_REASON`).
    """
    from neuron_explainer.errors import DeadUnitError
    from neuron_explainer.subjects._collection_units import DEAD_REASON

    top = max((max(r.activations, default=0.0) for r in record.top_records), default=0.0)
    if top > 0:
        return
    raise DeadUnitError(
        f"{DEAD_REASON} (its highest activation over the corpus is {top:g}): {unit} has "
        "nothing to explain"
    )


def _tokens_of(column: Sequence[ActivationRecord]) -> Callable[[int], tuple[Any, ...]]:
    def tokens(window: int) -> tuple[Any, ...]:
        record = column[window]
        return tuple(record.token_ids or record.tokens)

    return tokens


def select_records(
    units: Sequence[UnitId],
    columns: Sequence[Sequence[ActivationRecord]],
    *,
    layer: int,
    width: int,
    top_k: int,
    n_random: int,
    quantile_levels: Sequence[float],
    n_per_quantile: int,
    quantile_warmup: int,
    seed: int,
    provenance: Provenance,
) -> list[NeuronRecord]:
    """One record per unit from ``columns`` (per unit, its record of every window of the
    corpus, in corpus order), chosen as `collect` with the same settings chooses them: the
    hash lane of each unit is its index and ``layer`` keys its quantile decisions.

    ``width`` is the window length (an excerpt's longest).
    """
    from neuron_explainer.subjects.collection import moments_from_sums

    levels = tuple(float(q) for q in quantile_levels)
    state = LayerState.new(
        len(units), k=top_k, r=2 * n_random, levels=levels, m=n_per_quantile,
        warmup=quantile_warmup, length=width,
    )  # fmt: skip
    state.lanes = np.array([unit.index for unit in units], np.int64)
    _fold(state, columns, width, seed, layer)
    state.fix_boundaries(min(len(columns[0]), quantile_warmup))
    a, total = state.a, state.tree.total(len(units))
    out = []
    for u, (unit, column) in enumerate(zip(units, columns, strict=True)):
        chosen = choose_windows(
            a["top_windows"][u], a["random_windows"], a["quantile_windows"][u], n_random,
            _tokens_of(column),
        )  # fmt: skip
        bounds = a["quantile_boundaries"][u]
        has_bounds = bool(levels) and all(math.isfinite(float(x)) for x in bounds)
        out.append(
            NeuronRecord(
                unit=unit,
                top_records=tuple(column[w] for w in chosen["top"]),
                random_sample=tuple(column[w] for w in chosen["random"]),
                quantile_boundaries=tuple(float(x) for x in bounds) if has_bounds else (),
                quantile_levels=levels if has_bounds else None,
                quantile_samples=(
                    tuple(tuple(column[w] for w in row) for row in chosen["quantiles"])
                    if has_bounds
                    else ()
                ),
                provenance=provenance,
                **moments_from_sums(
                    int(a["token_count"][0]), float(a["moment_shift"][u]), total[:, u]
                ),
            )
        )
    return out
