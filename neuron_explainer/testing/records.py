"""Small synthetic neuron records with a known rule, for smoke tests."""

from __future__ import annotations

import random

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.records import ActivationRecord, NeuronRecord, Provenance, UnitId
from neuron_explainer.records.building import build_neuron_record

__all__ = ["NUMBER_UNIT", "number_neuron_record"]

NUMBER_UNIT = UnitId(model="synthetic-numbers", layer=0, index=0)
"""The unit of `number_neuron_record`."""

_WORDS = (
    " the", " a", " of", " and", " to", " in", " is", " was", " for", " on", " cat", " dog",
    " house", " river", " green", " blue", " red", " Paris", " London", ",", ".", "!", "?",
)  # fmt: skip
_NUMBERS = (" 7", " 42", " 1999", " 3", " 12", " 100")


def number_neuron_record(
    *, n_excerpts: int = 200, length: int = 16, seed: int = 0, silent_fraction: float = 0.0
) -> NeuronRecord:
    """A record of a synthetic unit that fires on numbers.

    Excerpts are random words and numbers (one token in five is a number); a share
    ``silent_fraction`` of them has words only, so the unit stays silent on them (what a
    classification scorer's negatives need: with the default 0 nearly every excerpt holds a
    number). The unit's
    activation is about 5 on a number token (``5 + N(0, 0.2)``) and about 0 elsewhere
    (``N(0, 0.1)``). The record holds up to 40 top and 30 random excerpts (see
    `neuron_explainer.build_neuron_record`); the same arguments always give the same record.

    Raises:
        InvalidInputError: ``n_excerpts`` below 80 (too few to fill the splits), ``length``
            below 2, or ``silent_fraction`` outside [0, 1).
    """
    if n_excerpts < 80 or length < 2:
        raise InvalidInputError(
            f"need n_excerpts >= 80 and length >= 2, got {n_excerpts} and {length}"
        )
    if not 0 <= silent_fraction < 1:
        raise InvalidInputError(f"silent_fraction must be in [0, 1), got {silent_fraction}")
    rng = random.Random(seed)
    excerpts = []
    for _ in range(n_excerpts):
        silent = silent_fraction > 0 and rng.random() < silent_fraction
        tokens = [
            rng.choice(_NUMBERS if not silent and rng.random() < 0.2 else _WORDS)
            for _ in range(length)
        ]
        activations = [
            5.0 + rng.gauss(0, 0.2) if t.strip().isdigit() else rng.gauss(0, 0.1) for t in tokens
        ]
        excerpts.append(ActivationRecord(tokens=tokens, activations=activations))
    provenance = Provenance(
        model=NUMBER_UNIT.model,
        dataset="synthetic: random words and numbers",
        window_length=length,
        extra={"rule": "fires on number tokens", "seed": seed, "silent_fraction": silent_fraction},
    )
    return build_neuron_record(
        NUMBER_UNIT, excerpts, provenance=provenance, top_k=40, n_random=30, seed=seed
    )
