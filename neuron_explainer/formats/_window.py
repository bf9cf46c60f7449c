"""The arithmetic of `neuron_explainer.formats.delphi`: sparse activations (row, position,
value) cut into windows and made into a `NeuronRecord`, and records made into delphi's arrays."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.records import ActivationRecord, NeuronRecord, Provenance, UnitId, WindowId

__all__ = ["LatentData", "latent_record", "module_arrays", "window_moments"]

THRESHOLD = 1e-5
"""delphi keeps an activation when its absolute value is above this (``cache.py``)."""


@dataclass(frozen=True)
class LatentData:
    """One latent's entries: ``positions`` int [n, 2] (row, position), ``values`` [n], over
    ``tokens`` [rows, row length] cut into windows of ``width`` tokens."""

    positions: np.ndarray
    values: np.ndarray
    tokens: np.ndarray
    width: int

    @property
    def per_row(self) -> int:
        return int(self.tokens.shape[1] // self.width)

    @property
    def n_windows(self) -> int:
        return int(self.tokens.shape[0]) * self.per_row


def window_moments(values: np.ndarray, count: int) -> dict[str, float | None]:
    """Mean, population variance, skewness and excess kurtosis of ``count`` values of which
    ``values`` are the non-zero ones (the rest are 0)."""
    if count == 0:
        return {"mean": None, "variance": None, "skewness": None, "kurtosis": None}
    s1, s2, s3, s4 = (float(np.sum(values**p)) / count for p in (1, 2, 3, 4))
    m2 = max(s2 - s1 * s1, 0.0)
    if m2 == 0.0:
        return {"mean": s1, "variance": 0.0, "skewness": None, "kurtosis": None}
    m3 = s3 - 3 * s1 * s2 + 2 * s1**3
    m4 = s4 - 4 * s1 * s3 + 6 * s1 * s1 * s2 - 3 * s1**4
    return {"mean": s1, "variance": m2, "skewness": m3 / m2**1.5, "kurtosis": m4 / m2**2 - 3.0}


def _excerpt(
    data: LatentData, window: int, entries: np.ndarray, strings: Mapping[int, str]
) -> ActivationRecord:
    """Window ``window`` as an excerpt, its activations from ``entries`` (indices of its
    entries in ``data``)."""
    row, start = divmod(window, data.per_row)
    start *= data.width
    ids = data.tokens[row, start : start + data.width]
    activations = np.zeros(data.width)
    activations[data.positions[entries, 1] - start] = data.values[entries]
    return ActivationRecord(
        tokens=tuple(strings[int(i)] for i in ids),
        activations=tuple(activations.tolist()),
        token_ids=tuple(int(i) for i in ids),
        window_id=WindowId(document=row, start=start),
    )


def _random_windows(
    data: LatentData, top: set[int], n_random: int, rng: np.random.Generator
) -> list[int]:
    """Up to ``n_random`` windows drawn uniformly without replacement, none of ``top``."""
    want = min(n_random, data.n_windows - len(top))
    if want <= 0:
        return []
    drawn = rng.choice(data.n_windows, size=min(data.n_windows, want + len(top)), replace=False)
    return [int(w) for w in drawn if int(w) not in top][:want]


def latent_record(
    unit: UnitId,
    data: LatentData,
    strings: Mapping[int, str],
    provenance: Provenance,
    *,
    top_k: int,
    n_random: int,
    seed: int,
) -> NeuronRecord:
    """``unit``'s record: its ``top_k`` firing windows by max activation (ties: the earlier
    window), ``n_random`` other windows at random, its moments over every token."""
    windows = data.positions[:, 0] * data.per_row + data.positions[:, 1] // data.width
    order = np.argsort(windows, kind="stable")
    windows = windows[order]
    found, starts = np.unique(windows, return_index=True)
    maxes = np.maximum.reduceat(data.values[order], starts) if len(found) else np.zeros(0)
    firing = maxes > 0
    ranked = sorted(zip((-maxes[firing]).tolist(), found[firing].tolist(), strict=True))
    top = [w for _, w in ranked[:top_k]]
    rng = np.random.default_rng([seed, unit.layer, unit.index])
    chosen = _random_windows(data, set(top), n_random, rng)

    def excerpt(window: int) -> ActivationRecord:
        a, b = np.searchsorted(windows, [window, window + 1])
        return _excerpt(data, window, order[a:b], strings)

    return NeuronRecord(
        unit=unit,
        top_records=tuple(excerpt(w) for w in top),
        random_sample=tuple(excerpt(w) for w in chosen),
        provenance=provenance,
        **window_moments(data.values, int(data.tokens.size)),
    )


def _ids(
    module: str, unit: UnitId, record: ActivationRecord, vocabulary: Mapping[str, int] | None
) -> tuple[int, ...]:
    if record.token_ids is not None:
        return record.token_ids
    if vocabulary is None:
        raise InvalidInputError(
            f"{unit}: an excerpt has no token ids, which delphi's cache needs (module "
            f"{module!r}); give vocabulary= (token string to id) or record with a tokenizer"
        )
    missing = [t for t in record.tokens if t not in vocabulary]
    if missing:
        raise InvalidInputError(f"{unit}: token {missing[0]!r} is not in the vocabulary given")
    return tuple(vocabulary[t] for t in record.tokens)


def module_arrays(
    module: str, held: Mapping[int, NeuronRecord], vocabulary: Mapping[str, int] | None
) -> tuple[dict[str, Any], int]:
    """delphi's ``locations``, ``activations`` and ``tokens`` for the records of one module
    (``held``: latent to record) in one split starting at latent 0, and the latents it spans.

    Raises:
        InvalidInputError: an excerpt without token ids (and no ``vocabulary``), or excerpts
            of several lengths.
    """
    rows: dict[tuple[Any, ...], int] = {}
    table: list[tuple[int, ...]] = []
    entries: list[tuple[int, int, int, float]] = []
    for latent, record in sorted(held.items()):
        excerpts = [
            *record.top_records,
            *record.random_sample,
            *(r for sample in record.quantile_samples for r in sample),
        ]
        done: set[int] = set()
        for excerpt in excerpts:
            ids = _ids(module, record.unit, excerpt, vocabulary)
            if table and len(ids) != len(table[0]):
                raise InvalidInputError(
                    f"{record.unit}: excerpts of {len(table[0])} and {len(ids)} tokens in "
                    f"module {module!r}; delphi's rows all have one length: give records whose "
                    "excerpts all have the same length"
                )
            row = rows.setdefault((excerpt.window_id, ids), len(rows))
            if row == len(table):
                table.append(ids)
            if row in done:
                continue
            done.add(row)
            entries += [
                (row, pos, latent, value)
                for pos, value in enumerate(excerpt.activations)
                if abs(value) > THRESHOLD
            ]
    locations = np.array([e[:3] for e in entries], dtype=np.int64).reshape(-1, 3)
    n_latents = max(held) + 1
    small = max(len(table), len(table[0]), n_latents) < 2**16
    return {
        "locations": locations.astype(np.uint16 if small else np.uint32),
        "activations": np.array([e[3] for e in entries], dtype=np.float32),
        "tokens": np.array(table, dtype=np.int64),
    }, n_latents
