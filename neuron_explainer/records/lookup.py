"""The token lookup table behind the offline ``token-table`` explainer and simulator.

The table is built from train records only. It holds, with shrinkage toward a background level:

* per token string: the mean activation and how often it was seen;
* per short context (previous token, token): the same, where the context matters;
* per token *shape* (number, capitalised word, word, punctuation, whitespace, other): the same,
  so that tokens never seen in train still get a sensible prediction.

A prediction backs off context → token → shape → background, each estimate shrunk toward the
next by ``prior_weight`` pseudo-counts.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat

from neuron_explainer.records import ActivationRecord

__all__ = ["TokenTable", "build_token_table", "token_shape"]

_NUMBER = re.compile(r"^[+-]?[\d.,:/%]*\d[\d.,:/%]*$")


def token_shape(token: str) -> str:
    """Classify a token string: number, capitalized, word, punctuation, whitespace or other."""
    core = token.strip()
    if not core:
        return "whitespace"
    if _NUMBER.match(core):
        return "number"
    if core.isalpha():
        return "capitalized" if core[0].isupper() else "word"
    if all(not c.isalnum() for c in core):
        return "punctuation"
    return "other"


class Entry(BaseModel):
    """Mean activation of one key and how many tokens it is averaged over."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: FiniteFloat
    count: int = Field(ge=1)


class TokenTable(BaseModel):
    """Shrunk mean activations by token, context and shape; see the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    background: FiniteFloat
    prior_weight: FiniteFloat = Field(ge=0)
    tokens: dict[str, Entry]
    contexts: dict[str, dict[str, Entry]] = Field(
        description="previous token -> token -> entry, only where the context changes the mean"
    )
    shapes: dict[str, Entry]

    def shrink(self, entry: Entry | None, prior: float) -> float:
        """``entry``'s mean pulled toward ``prior`` by ``prior_weight`` pseudo-counts."""
        if entry is None:
            return prior
        k = self.prior_weight
        return (entry.count * entry.mean + k * prior) / (entry.count + k)

    def token_estimate(self, token: str) -> float:
        """Prediction for ``token`` without context."""
        shape = self.shrink(self.shapes.get(token_shape(token)), self.background)
        return self.shrink(self.tokens.get(token), shape)

    def predict(self, tokens: Sequence[str]) -> list[float]:
        """Predicted activation for every token of an excerpt."""
        out: list[float] = []
        previous: str | None = None
        for token in tokens:
            estimate = self.token_estimate(token)
            if previous is not None:
                estimate = self.shrink(self.contexts.get(previous, {}).get(token), estimate)
            out.append(estimate)
            previous = token
        return out


def _entries(groups: dict[str, list[float]]) -> dict[str, Entry]:
    return {k: Entry(mean=float(np.mean(v)), count=len(v)) for k, v in groups.items()}


def build_token_table(
    records: Iterable[ActivationRecord],
    *,
    prior_weight: float = 1.0,
    max_tokens: int = 256,
    max_contexts: int = 128,
) -> TokenTable:
    """Build a `TokenTable` from (train) records.

    Only the ``max_tokens`` tokens and ``max_contexts`` contexts whose estimates differ most from
    what the next back-off level would predict are kept, so tables stay small; the rest fall back
    to their shape estimate.
    """
    by_token: dict[str, list[float]] = defaultdict(list)
    by_shape: dict[str, list[float]] = defaultdict(list)
    by_context: dict[tuple[str, str], list[float]] = defaultdict(list)
    everything: list[float] = []
    for record in records:
        previous: str | None = None
        for token, activation in zip(record.tokens, record.activations, strict=True):
            by_token[token].append(activation)
            by_shape[token_shape(token)].append(activation)
            if previous is not None:
                by_context[(previous, token)].append(activation)
            everything.append(activation)
            previous = token
    background = float(np.median(everything)) if everything else 0.0
    shapes = _entries(by_shape)
    draft = TokenTable(
        background=background,
        prior_weight=prior_weight,
        tokens=_entries(by_token),
        contexts={},
        shapes=shapes,
    )

    def token_gain(item: tuple[str, Entry]) -> float:
        token, _ = item
        shape = draft.shrink(shapes.get(token_shape(token)), background)
        return abs(draft.token_estimate(token) - shape)

    kept_tokens = dict(sorted(draft.tokens.items(), key=token_gain, reverse=True)[:max_tokens])
    table = draft.model_copy(update={"tokens": kept_tokens})

    gains: list[tuple[float, str, str, Entry]] = []
    for (previous, token), values in by_context.items():
        entry = Entry(mean=float(np.mean(values)), count=len(values))
        base = table.token_estimate(token)
        gain = abs(table.shrink(entry, base) - base)
        if gain > 0:
            gains.append((gain, previous, token, entry))
    gains.sort(key=lambda g: g[0], reverse=True)
    contexts: dict[str, dict[str, Entry]] = defaultdict(dict)
    for _, previous, token, entry in gains[:max_contexts]:
        contexts[previous][token] = entry
    return table.model_copy(update={"contexts": dict(contexts)})
