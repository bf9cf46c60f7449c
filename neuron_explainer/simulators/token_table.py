"""The offline ``token-table`` simulator: predicts from the table the explainer built."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.interfaces import Simulator
from neuron_explainer.records.lookup import TokenTable
from neuron_explainer.results import NEUTRAL_EXPLAINER, Explanation, SequenceSimulation

__all__ = ["TokenTableSimulator"]


class TokenTableSimulator(Simulator):
    """Predicts each token's activation from the token table in the explanation.

    It reads ``Explanation.data["token_table"]``, which the ``token-table`` explainer writes from
    the train split only, so held-out scoring stays uncontaminated. Predictions are in the unit's
    own activation scale.
    """

    name = "token-table"
    version = "1"

    def table(self, explanation: Explanation) -> TokenTable:
        """The `TokenTable` carried by ``explanation``.

        Raises:
            InvalidInputError: the explanation carries no (valid) token table.
        """
        raw = explanation.data.get("token_table")
        if raw is None:
            raise InvalidInputError(
                "the token-table simulator needs the table the token-table explainer stores in "
                f"Explanation.data['token_table']; this explanation came from "
                f"{explanation.explainer.name!r}. Use the token-table explainer, or another "
                "simulator for text-only explanations"
            )
        try:
            return TokenTable.model_validate(raw)
        except ValidationError as exc:
            raise InvalidInputError(f"Explanation.data['token_table'] is invalid: {exc}") from exc

    async def asimulate(
        self, explanation: Explanation, tokens: Sequence[str]
    ) -> SequenceSimulation:
        """Predict every token of ``tokens`` from the explanation's table (0 on every token
        for the neutral explanation, which has none: told nothing, it predicts nothing)."""
        if explanation.explainer.name == NEUTRAL_EXPLAINER:
            return SequenceSimulation(
                tokens=tuple(tokens),
                expected_activations=(0.0,) * len(tokens),
                scale="neuron_activations",
            )
        return self._simulate(self.table(explanation), tokens)

    async def asimulate_many(
        self, explanation: Explanation, sequences: Sequence[Sequence[str]]
    ) -> list[SequenceSimulation]:
        """Like `asimulate` for many excerpts, parsing the table once."""
        if explanation.explainer.name == NEUTRAL_EXPLAINER:
            return [await self.asimulate(explanation, tokens) for tokens in sequences]
        table = self.table(explanation)
        return [self._simulate(table, tokens) for tokens in sequences]

    @staticmethod
    def _simulate(table: TokenTable, tokens: Sequence[str]) -> SequenceSimulation:
        return SequenceSimulation(
            tokens=tuple(tokens),
            expected_activations=tuple(table.predict(tokens)),
            scale="neuron_activations",
        )
