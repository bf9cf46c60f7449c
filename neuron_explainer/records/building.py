"""Build a `NeuronRecord` from excerpts held in memory.

`build_neuron_record` is for data that fits in memory (synthetic rules, small corpora,
tests). It selects, exactly as the streaming collector does for large corpora:

* duplicates dropped first: an excerpt whose tokens repeat an earlier one's counts once, so
  one text can never land in both the train split and a scored split;
* the ``top_k`` excerpts with the highest max activation (ties keep corpus order);
* ``n_random`` excerpts drawn uniformly, without replacement, from the *other* excerpts, so no
  excerpt is both a top record and a random record;
* ``n_per_quantile`` excerpts from each bin of the per-excerpt max activation cut at
  ``quantile_levels``;
* the mean, variance, skewness and excess kurtosis of every token's activation (duplicates
  included: the moments describe the corpus as given).

The excerpts are kept as given, ``window_id`` included (a subject's excerpts name their
corpus windows).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.records import ActivationRecord, NeuronRecord, Provenance, UnitId

__all__ = ["build_neuron_record", "moments"]

# What a record holds unless told otherwise; the subjects and the collector use the same.
DEFAULT_TOP_K = 40
DEFAULT_N_RANDOM = 30
DEFAULT_QUANTILE_LEVELS = (0.5, 0.9, 0.99, 0.999)
DEFAULT_N_PER_QUANTILE = 5


def checked_quantile_levels(quantile_levels: Sequence[float]) -> tuple[float, ...]:
    """``quantile_levels`` as a tuple of floats, once checked.

    Raises:
        InvalidInputError: a level outside (0, 1), or levels that do not ascend strictly.
    """
    levels = tuple(float(q) for q in quantile_levels)
    if any(not 0.0 < q < 1.0 for q in levels) or list(levels) != sorted(set(levels)):
        raise InvalidInputError(f"quantile_levels must ascend strictly within (0, 1): {levels}")
    return levels


def moments(values: Sequence[float] | np.ndarray) -> dict[str, float | None]:
    """Mean, population variance, skewness and excess kurtosis (``None`` where undefined)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return {"mean": None, "variance": None, "skewness": None, "kurtosis": None}
    mean = float(x.mean())
    centred = x - mean
    m2 = float(np.mean(centred**2))
    if m2 == 0.0:
        return {"mean": mean, "variance": 0.0, "skewness": None, "kurtosis": None}
    return {
        "mean": mean,
        "variance": m2,
        "skewness": float(np.mean(centred**3)) / m2**1.5,
        "kurtosis": float(np.mean(centred**4)) / m2**2 - 3.0,
    }


def build_neuron_record(
    unit: UnitId,
    excerpts: Iterable[ActivationRecord],
    *,
    provenance: Provenance | None = None,
    top_k: int = DEFAULT_TOP_K,
    n_random: int = DEFAULT_N_RANDOM,
    quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
    n_per_quantile: int = DEFAULT_N_PER_QUANTILE,
    seed: int = 0,
) -> NeuronRecord:
    """Select top, random and quantile samples from in-memory ``excerpts``.

    Excerpts with identical tokens are kept once (the first). When there are fewer excerpts
    than asked for, every available one is taken. The random
    choices depend only on ``seed`` and the excerpts' order.

    Raises:
        InvalidInputError: no excerpts, negative counts, or quantile levels outside (0, 1).
    """
    unique: dict[tuple[str, ...], ActivationRecord] = {}
    every_activation: list[float] = []
    for excerpt in excerpts:
        unique.setdefault(excerpt.tokens, excerpt)
        every_activation.extend(excerpt.activations)
    pool = list(unique.values())
    if not pool:
        raise InvalidInputError(f"{unit}: no excerpts to build a record from")
    if top_k < 1 or n_random < 0 or n_per_quantile < 0:
        raise InvalidInputError(
            f"need top_k >= 1, n_random >= 0, n_per_quantile >= 0; got {top_k}, {n_random}, "
            f"{n_per_quantile}"
        )
    levels = checked_quantile_levels(quantile_levels)
    rng = np.random.default_rng(seed)
    maxes = np.array([r.max_activation for r in pool])
    order = np.argsort(-maxes, kind="stable")
    top_idx = order[:top_k]
    rest = np.sort(order[top_k:])
    random_idx = rng.choice(rest, size=min(n_random, rest.size), replace=False)

    boundaries: tuple[float, ...] = ()
    samples: tuple[tuple[ActivationRecord, ...], ...] = ()
    if levels:
        boundaries = tuple(float(b) for b in np.quantile(maxes, levels))
        bins = np.searchsorted(np.asarray(boundaries), maxes, side="right")
        chosen = []
        for b in range(len(levels) + 1):
            members = np.flatnonzero(bins == b)
            picked = rng.choice(members, size=min(n_per_quantile, members.size), replace=False)
            chosen.append(tuple(pool[i] for i in np.sort(picked)))
        samples = tuple(chosen)

    stats = moments(every_activation)
    return NeuronRecord(
        unit=unit,
        top_records=tuple(pool[i] for i in top_idx),
        random_sample=tuple(pool[i] for i in random_idx),
        quantile_boundaries=boundaries,
        quantile_levels=levels if levels else None,
        quantile_samples=samples,
        provenance=provenance or Provenance(model=unit.model),
        **stats,
    )
