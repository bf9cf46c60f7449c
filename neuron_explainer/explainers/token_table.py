"""The offline ``token-table`` explainer: explains a unit by the tokens it fires on most."""

from __future__ import annotations

import json
from collections.abc import Sequence

from neuron_explainer.errors import ExplanationError
from neuron_explainer.interfaces import Explainer
from neuron_explainer.records import ActivationRecord
from neuron_explainer.records.lookup import TokenTable, build_token_table
from neuron_explainer.results import Explanation

__all__ = ["TokenTableExplainer", "describe_table"]

_SHAPE_PHRASES = {
    "number": "numbers in general",
    "capitalized": "capitalised words in general",
    "word": "lowercase words in general",
    "punctuation": "punctuation in general",
    "whitespace": "whitespace in general",
    "other": "mixed symbol tokens in general",
}


def _quote(token: str) -> str:
    return json.dumps(token, ensure_ascii=False)


def describe_table(table: TokenTable, *, max_listed: int = 8, threshold: float = 0.5) -> str:
    """One readable line naming the tokens, shapes and contexts with the highest estimates.

    Something is named when its estimate rises above the background by at least ``threshold``
    of the strongest token's rise.

    Raises:
        ExplanationError: nothing rises above the background (the unit looks dead or constant).
    """
    background = table.background
    rises = {t: table.token_estimate(t) - background for t in table.tokens}
    peak = max(rises.values(), default=0.0)
    if peak <= 0:
        raise ExplanationError(
            "no token activates the unit above its typical level in the train records; "
            "there is nothing for a token table to explain"
        )
    cutoff = threshold * peak
    listed = sorted((t for t, r in rises.items() if r >= cutoff), key=lambda t: -rises[t])
    shown = listed[:max_listed]
    tokens = ", ".join(_quote(t) for t in shown)
    if len(listed) > len(shown):
        tokens += f" (and {len(listed) - len(shown)} similar tokens)"
    strong_shapes = sorted(
        shape
        for shape, entry in table.shapes.items()
        if entry.count >= 3 and table.shrink(entry, background) - background >= cutoff
    )
    if strong_shapes:
        phrases = " and ".join(_SHAPE_PHRASES[s] for s in strong_shapes)
        text = f"fires on {phrases}, most on the tokens {tokens}"
    else:
        text = f"fires most on the tokens {tokens}"
    context_rises = sorted(
        (
            (
                table.shrink(entry, table.token_estimate(token)) - table.token_estimate(token),
                p,
                token,
            )
            for p, following in table.contexts.items()
            for token, entry in following.items()
        ),
        reverse=True,
    )
    contexts = [(p, t) for rise, p, t in context_rises if rise >= cutoff][:3]
    if contexts:
        text += "; especially " + ", ".join(
            f"{_quote(t)} right after {_quote(p)}" for p, t in contexts
        )
    return text


class TokenTableExplainer(Explainer):
    """Explains a unit by the tokens (and short contexts) with the highest mean activation.

    Deterministic and offline. The explanation text lists the strongest tokens; the full table
    goes into ``Explanation.data["token_table"]`` for the ``token-table`` simulator. OpenAI's
    paper found this baseline strong in early layers.

    Args:
        prior_weight: pseudo-counts shrinking rare tokens toward their shape's mean.
        max_tokens: how many token entries the table keeps.
        max_contexts: how many context entries the table keeps.
        max_listed: how many tokens the text names at most.
    """

    name = "token-table"
    version = "1"
    recorded_settings = ("prior_weight", "max_tokens", "max_contexts", "max_listed")

    def __init__(
        self,
        *,
        prior_weight: float = 1.0,
        max_tokens: int = 256,
        max_contexts: int = 128,
        max_listed: int = 8,
    ) -> None:
        self.prior_weight = prior_weight
        self.max_tokens = max_tokens
        self.max_contexts = max_contexts
        self.max_listed = max_listed

    async def aexplain(self, records: Sequence[ActivationRecord]) -> Explanation:
        """Build the table from ``records`` and describe it.

        Raises:
            ExplanationError: no records, or no token stands out from the background.
        """
        if not records:
            raise ExplanationError("the token-table explainer needs at least one train record")
        table = build_token_table(
            records,
            prior_weight=self.prior_weight,
            max_tokens=self.max_tokens,
            max_contexts=self.max_contexts,
        )
        text = describe_table(table, max_listed=self.max_listed)
        return Explanation(
            text=text,
            data={"token_table": table.model_dump(mode="json")},
            explainer=self.info,
        )
