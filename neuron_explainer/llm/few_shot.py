"""Made-up example neurons shown to LLMs before the real one (few-shot prompting).

The examples are our own, written for this library: short excerpts already on the 0-10 prompt
scale, each with the one-sentence explanation a good answer would give. The LLM explainer shows
`FEW_SHOT_EXAMPLES` as earlier chat turns. The all-at-once (prompt-logprob) simulator shows
`CONTRASTING_EXAMPLES` by default (or `FEW_SHOT_EXAMPLES`, ``examples="paper"``), with their
numbers, before the excerpt it predicts.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CONTRASTING_EXAMPLES", "FEW_SHOT_EXAMPLES", "FewShotExample"]


@dataclass(frozen=True)
class FewShotExample:
    """One made-up neuron.

    Attributes:
        explanation: what it finds, worded to follow "the main thing this neuron does is find".
        records: excerpts as ``(token, level)`` pairs, levels on the 0-10 scale.
    """

    explanation: str
    records: tuple[tuple[tuple[str, int], ...], ...]


FEW_SHOT_EXAMPLES: tuple[FewShotExample, ...] = (
    # Sparse (3 of 23 tokens non-zero), so the explainer's prompt shows the zero-filtered repeat.
    FewShotExample(
        explanation="four-digit years, mostly in dates",
        records=(
            (
                ("The", 0),
                (" treaty", 0),
                (" was", 0),
                (" signed", 0),
                (" in", 0),
                (" 1648", 10),
                (" after", 0),
                (" thirty", 0),
                (" years", 0),
                (" of", 0),
                (" war", 0),
                (".", 0),
            ),
            (
                (" Sales", 0),
                (" rose", 0),
                (" sharply", 0),
                (" between", 0),
                (" 2019", 9),
                (" and", 0),
                (" 2021", 8),
                (",", 0),
                (" the", 0),
                (" report", 0),
                (" said", 0),
            ),
        ),
    ),
    FewShotExample(
        explanation="words about rain and getting wet",
        records=(
            (
                (" We", 0),
                (" got", 0),
                (" caught", 0),
                (" in", 0),
                (" a", 0),
                (" heavy", 2),
                (" downpour", 10),
                (" and", 0),
                (" were", 0),
                (" soaked", 6),
            ),
            (
                (" The", 0),
                (" forecast", 1),
                (" says", 0),
                (" showers", 9),
                (" and", 0),
                (" drizzle", 8),
                (" tomorrow", 0),
            ),
        ),
    ),
    FewShotExample(
        explanation="closing parentheses in code, especially ones that end a function call",
        records=(
            (
                ("print", 0),
                ("(", 1),
                ("len", 0),
                ("(", 1),
                ("items", 0),
                ("))", 10),
                ("\n", 0),
                ("x", 0),
                (" =", 0),
                (" f", 0),
                ("(", 0),
                ("y", 0),
                (")", 9),
            ),
        ),
    ),
)
"""The built-in examples, in the order they are shown."""


def _sentence(text: str, firing: dict[int, int]) -> tuple[tuple[str, int], ...]:
    """``text`` split at its spaces (each token but the first keeps its leading space), each
    token with its level from ``firing`` (by 1-based position) or 0."""
    words = text.split(" ")
    tokens = [words[0], *(f" {w}" for w in words[1:])]
    return tuple((t, firing.get(i, 0)) for i, t in enumerate(tokens, start=1))


CONTRASTING_EXAMPLES: tuple[FewShotExample, ...] = (
    # Each word that fires in one excerpt also appears, silent, in another: what fires is
    # what the explanation says (a sense, a grammatical role), not the word, so a simulator
    # that copies the examples' firing words does not profit. Chosen on the dev half of the
    # puzzle benchmark (issue 16); the concepts share nothing with any of its puzzles.
    FewShotExample(
        explanation='the word "light" when it means not heavy, not brightness',
        records=(
            _sentence("The box was light enough to carry upstairs .", {4: 10}),
            _sentence("Turn on the light in the hall , please .", {}),
            _sentence("She packed a light bag for the weekend .", {4: 9}),
            _sentence("The light from the window woke him .", {}),
        ),
    ),
    FewShotExample(
        explanation="the food that someone eats, the object of eat or ate",
        records=(
            _sentence("She ate an apple on the way home .", {4: 9}),
            _sentence("The apple fell from the tree .", {}),
            _sentence("We eat rice with almost every meal .", {3: 8}),
            _sentence("Rice grows in flooded fields .", {}),
        ),
    ),
    FewShotExample(
        explanation="animals named as food on a plate, not living animals",
        records=(
            _sentence("He ordered chicken with roasted potatoes .", {3: 10}),
            _sentence("The chicken ran across the yard .", {}),
            _sentence("Grilled salmon was on the menu tonight .", {2: 9}),
        ),
    ),
)
"""The all-at-once simulator's default examples: explanations that contradict the token
surface. On the dev half of the puzzle benchmark (Qwen2.5-Coder-0.5B, in-process) they raised
the true explanation to first place in 71 % of puzzles (59 % with `FEW_SHOT_EXAMPLES`) and cut
the decoy's wins from 24 % to 6 %; see docs/scoring.md."""
