"""Shared test helpers: small synthetic units with known rules."""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import pytest
from hypothesis import settings

from neuron_explainer import ActivationRecord, NeuronRecord, Provenance, UnitId

# Never reach for the Hugging Face hub from tests (there is no network here or in CI).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def _model_cache_in_a_temporary_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never write dequantised models into the user's cache (~/.cache/neuron_explainer):
    `load_model`'s cache (and every subprocess a test starts) uses a folder of this session."""
    if "NEURON_EXPLAINER_MODEL_CACHE" not in os.environ:
        os.environ["NEURON_EXPLAINER_MODEL_CACHE"] = str(tmp_path_factory.mktemp("model-cache"))


# Property tests explore new examples locally; in CI (CI=true) they replay a fixed sequence so a
# red run can be reproduced.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")

VOCAB = [
    "",
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "cat",
    "dog",
    "house",
    "river",
    "green",
    "blue",
    "red",
    "7",
    "42",
    "1999",
    "3",
    "Paris",
    "London",
    ",",
    ".",
    "!",
    "?",
]


def synthetic_excerpts(
    rule: Callable[[str, random.Random], float],
    *,
    n: int = 200,
    length: int = 16,
    seed: int = 0,
) -> list[ActivationRecord]:
    """``n`` excerpts of random vocabulary tokens with activations from ``rule``."""
    rng = random.Random(seed)
    vocab = [" " + w if w and w not in ",.!?" else w for w in VOCAB if w]
    out = []
    for _ in range(n):
        tokens = [rng.choice(vocab) for _ in range(length)]
        out.append(ActivationRecord(tokens=tokens, activations=[rule(t, rng) for t in tokens]))
    return out


def number_rule(token: str, rng: random.Random) -> float:
    return 5.0 + rng.gauss(0, 0.2) if token.strip().isdigit() else rng.gauss(0, 0.1)


def make_record(
    n_top: int = 16, n_random: int = 9, *, length: int = 8, unit: UnitId | None = None
) -> NeuronRecord:
    """A record with exactly ``n_top`` top and ``n_random`` random excerpts (distinct values)."""
    unit = unit or UnitId(model="test-model", layer=1, index=2)

    def excerpt(k: int, scale: float) -> ActivationRecord:
        return ActivationRecord(
            tokens=[f" t{k}_{i}" for i in range(length)],
            activations=[scale * ((k * 7 + i * 3) % 11) / 10 for i in range(length)],
        )

    return NeuronRecord(
        unit=unit,
        top_records=tuple(excerpt(k, 10.0 - k / 100) for k in range(n_top)),
        random_sample=tuple(excerpt(1000 + k, 1.0) for k in range(n_random)),
        provenance=Provenance(model=unit.model),
    )


@pytest.fixture
def number_excerpts() -> list[ActivationRecord]:
    return synthetic_excerpts(number_rule, n=300, seed=1)
