"""Prototype all-at-once prompts for issue 16's prompt work (dev half only), used through the
puzzle benchmark as ``prototypes.all_at_once_prompts:Contrasting`` etc. with
``PYTHONPATH=benchmarks``.

* `Contrasting`: few-shot examples whose explanations contradict the token surface: the same
  word fires in one excerpt and not in the next (a word sense, a grammatical role, food versus
  animal), so copying tokens from the examples does not pay. Adopted as the library's
  `CONTRASTING_EXAMPLES` (all-at-once prompt version 2).
* `OneExample`: only the first of the built-in examples.

Each patches the module's prompt builder once when built (one simulator per benchmark run).
"""

from __future__ import annotations

from typing import Any

import neuron_explainer.simulators.prompt_logprob as module
from neuron_explainer.llm.few_shot import FEW_SHOT_EXAMPLES, FewShotExample
from neuron_explainer.simulators.prompt_logprob import PromptLogprobSimulator


def _record(text: str, firing: dict[str, int]) -> tuple[tuple[str, int], ...]:
    """Tokens of ``text`` split on spaces (a leading space on all but the first), each with
    its level from ``firing`` (by its 1-based position ``"#3"`` or 0)."""
    words = text.split(" ")
    tokens = [words[0], *(f" {w}" for w in words[1:])]
    return tuple((t, firing.get(f"#{i}", 0)) for i, t in enumerate(tokens, start=1))


CONTRASTING: tuple[FewShotExample, ...] = (
    # Concepts chosen to share nothing with any puzzle of the benchmark (both halves).
    FewShotExample(
        explanation='the word "light" when it means not heavy, not brightness',
        records=(
            _record("The box was light enough to carry upstairs .", {"#4": 10}),
            _record("Turn on the light in the hall , please .", {}),
            _record("She packed a light bag for the weekend .", {"#4": 9}),
            _record("The light from the window woke him .", {}),
        ),
    ),
    FewShotExample(
        explanation="the food that someone eats, the object of eat or ate",
        records=(
            _record("She ate an apple on the way home .", {"#4": 9}),
            _record("The apple fell from the tree .", {}),
            _record("We eat rice with almost every meal .", {"#3": 8}),
            _record("Rice grows in flooded fields .", {}),
        ),
    ),
    FewShotExample(
        explanation="animals named as food on a plate, not living animals",
        records=(
            _record("He ordered chicken with roasted potatoes .", {"#3": 10}),
            _record("The chicken ran across the yard .", {}),
            _record("Grilled salmon was on the menu tonight .", {"#2": 9}),
        ),
    ),
)


class _Patched(PromptLogprobSimulator):
    EXAMPLES: tuple[FewShotExample, ...] = FEW_SHOT_EXAMPLES

    def __init__(self, llm: Any = None, **kwargs: Any) -> None:
        super().__init__(llm, **kwargs)
        original = (
            module.build_all_at_once_prompt.__wrapped__
            if hasattr(module.build_all_at_once_prompt, "__wrapped__")
            else module.build_all_at_once_prompt
        )
        examples = self.EXAMPLES

        def build(explanation: Any, tokens: Any, examples_: Any = None) -> Any:
            return original(explanation, tokens, examples)

        build.__wrapped__ = original  # type: ignore[attr-defined]
        module.build_all_at_once_prompt = build  # type: ignore[assignment]


class Contrasting(_Patched):
    EXAMPLES = CONTRASTING


class OneExample(_Patched):
    EXAMPLES = FEW_SHOT_EXAMPLES[:1]
