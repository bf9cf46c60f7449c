"""Which held-out excerpts a classification scorer judges, and how it labels them.

**Firing.** A unit *fires* on a token whose activation is at least ``threshold`` = ``fraction``
x the unit's largest recorded activation (`FiringRule`; ``fraction`` 0.2 by default). An
excerpt is *activating* when some token fires, and *non-activating* when every token's
**absolute** activation is below the threshold. Measured against the unit's own maximum, this
works for sparse ReLU units, dense GELU neurons (which are rarely exactly 0) and signed gated
neurons alike; an excerpt that is neither (its strongest activations are negative, below
``-threshold``) is *ambiguous* and never judged, only counted.

**Positives** are activating excerpts of the held-out split, spread across activation levels:
the split's top excerpts, its quantile samples (when the record has them) and any of its
random excerpts that fire, ordered by their largest activation and taken at evenly spaced
ranks, so weak activations are judged as well as the strongest.

**Negatives** are non-activating excerpts of the same split. ``"random"``: as they come.
``"hard"``: those containing one of the unit's top tokens (the tokens that fire in the train
excerpts the explainer saw: not judged, only used to pick hard negatives) first, the rest
after. Every choice is recorded with the score.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.records import ActivationRecord, UnitId

__all__ = [
    "Candidate",
    "FiringRule",
    "NegativeKind",
    "pick_negatives",
    "pick_positives",
    "rng_for",
    "seeded",
    "top_tokens",
    "wrong_highlight",
]

NegativeKind = Literal["random", "hard"]
Source = Literal["top", "quantile", "random"]
DEFAULT_FIRING_FRACTION = 0.2


@dataclass(frozen=True)
class FiringRule:
    """When the unit fires: activation >= ``threshold`` (= ``fraction`` x ``max_activation``)."""

    fraction: float
    max_activation: float

    def __post_init__(self) -> None:
        if not 0 < self.fraction < 1:
            raise InvalidInputError(f"the firing fraction must be in (0, 1), got {self.fraction}")
        if not self.max_activation > 0:
            raise InvalidInputError(
                "the unit never activates above 0 in its top records, so no excerpt can be "
                f"called activating (largest activation {self.max_activation})"
            )

    @property
    def threshold(self) -> float:
        """The activation at and above which a token fires."""
        return self.fraction * self.max_activation

    def fires(self, record: ActivationRecord) -> bool:
        """Whether some token of ``record`` fires."""
        return max(record.activations) >= self.threshold

    def silent(self, record: ActivationRecord) -> bool:
        """Whether every token's absolute activation is below the threshold."""
        return max(abs(a) for a in record.activations) < self.threshold

    def firing_positions(self, record: ActivationRecord) -> list[int]:
        """The positions of the tokens that fire."""
        return [i for i, a in enumerate(record.activations) if a >= self.threshold]


@dataclass(frozen=True)
class Candidate:
    """An excerpt to judge: its record, where it came from, and whether it is activating."""

    record: ActivationRecord
    source: Source
    label: bool


def _spread(items: Sequence[Candidate], n: int) -> list[Candidate]:
    """``n`` of ``items`` at evenly spaced ranks of their largest activation (all of them
    when there are no more than ``n``), strongest first."""
    ranked = sorted(items, key=lambda c: -c.record.max_activation)
    if len(ranked) <= n:
        return ranked
    picks = np.unique(np.round(np.linspace(0, len(ranked) - 1, n)).astype(int))
    return [ranked[i] for i in picks]


def pick_positives(
    rule: FiringRule,
    top: Sequence[ActivationRecord],
    quantiles: Sequence[ActivationRecord],
    random: Sequence[ActivationRecord],
    n: int,
) -> list[Candidate]:
    """Up to ``n`` activating excerpts of one held-out split, spread across activation levels
    (see the module docstring)."""
    pool = [
        *(Candidate(r, "top", True) for r in top if rule.fires(r)),
        *(Candidate(r, "quantile", True) for r in quantiles if rule.fires(r)),
        *(Candidate(r, "random", True) for r in random if rule.fires(r)),
    ]
    return _spread(_unique(pool), n)


def _unique(items: Iterable[Candidate]) -> list[Candidate]:
    """``items`` without repeated excerpts (the same tokens and activations)."""
    seen: set[tuple[tuple[str, ...], tuple[float, ...]]] = set()
    out = []
    for c in items:
        key = (c.record.tokens, c.record.activations)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def top_tokens(rule: FiringRule, train: Sequence[ActivationRecord]) -> set[str]:
    """The tokens (stripped, lower case) that fire in the train excerpts."""
    return {
        r.tokens[i].strip().lower()
        for r in train
        for i in rule.firing_positions(r)
        if r.tokens[i].strip()
    }


def pick_negatives(
    rule: FiringRule,
    pool: Sequence[ActivationRecord],
    n: int,
    kind: NegativeKind,
    hard_tokens: set[str],
) -> tuple[list[Candidate], int]:
    """Up to ``n`` non-activating excerpts of ``pool`` (``"hard"``: those containing a token
    of ``hard_tokens`` first), and how many of those chosen contain one."""
    silent = [r for r in pool if rule.silent(r)]

    def hard(r: ActivationRecord) -> bool:
        return any(t.strip().lower() in hard_tokens for t in r.tokens)

    if kind == "hard":
        silent = sorted(silent, key=lambda r: not hard(r))  # stable: hard ones first
    chosen = [Candidate(r, "random", False) for r in silent[:n]]
    return _unique(chosen), sum(hard(c.record) for c in chosen)


def seeded(*parts: object) -> np.random.Generator:
    """A generator seeded by ``parts`` (their text): the same run to run, different for any
    other parts."""
    key = "\x1f".join(str(p) for p in parts).encode()
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:16], "little"))


def rng_for(unit: UnitId, record: ActivationRecord, seed: int) -> np.random.Generator:
    """A generator of its own for ``record`` of ``unit``: the same run to run, different for
    every excerpt, unit and ``seed``."""
    return seeded(unit, seed, *record.tokens)


def wrong_highlight(
    rule: FiringRule, record: ActivationRecord, rng: np.random.Generator
) -> list[int] | None:
    """As many positions as fire in ``record``, drawn by ``rng`` among those that do not
    fire and whose token differs from every firing one (a wrong highlight on another copy of
    a firing word would be right), sorted; ``None`` when too few such tokens are left."""
    firing = set(rule.firing_positions(record))
    words = {record.tokens[i].strip().lower() for i in firing}
    quiet = [
        i
        for i, token in enumerate(record.tokens)
        if i not in firing and token.strip().lower() not in words
    ]
    if len(quiet) < len(firing) or not firing:
        return None
    return sorted(int(i) for i in rng.choice(quiet, size=len(firing), replace=False))
