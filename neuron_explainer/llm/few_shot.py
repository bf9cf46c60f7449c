"""Made-up example neurons shown to LLMs before the real one (few-shot prompting).

The examples are our own, written for this library: short excerpts already on the 0-10 prompt
scale, each with the one-sentence explanation a good answer would give. The LLM explainer shows
them as earlier chat turns; the all-at-once (prompt-logprob) simulator shows them, with their
numbers, before the excerpt it predicts.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FEW_SHOT_EXAMPLES", "FewShotExample"]


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
