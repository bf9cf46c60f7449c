"""Prototype all-at-once prompts for issue 16's prompt work (dev half only), used through the
puzzle benchmark as ``prototypes.all_at_once_prompts:Contrasting`` etc. with
``PYTHONPATH=benchmarks``.

* `Contrasting`: few-shot examples whose explanations contradict the token surface: the same
  word fires in one excerpt and not in the next (a word sense, a negation, a position), so
  copying tokens from the examples does not pay.
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
    FewShotExample(
        explanation='the word "bank" when it means the side of a river, not a money bank',
        records=(
            _record("We sat on the bank of the river and fished .", {"#5": 10}),
            _record("She put her savings in the bank before noon .", {}),
            _record("The muddy bank gave way under the cows .", {"#3": 9}),
            _record("The bank raised its interest rates again .", {}),
        ),
    ),
    FewShotExample(
        explanation='verbs that are negated, right after "not" or "never"',
        records=(
            _record("He did not agree with the plan at all .", {"#4": 9}),
            _record("They agree with the plan and sign it .", {}),
            _record("She never smiles at strangers in the street .", {"#3": 8}),
            _record("She smiles at everyone she meets .", {}),
        ),
    ),
    FewShotExample(
        explanation="the last word of a question, just before the question mark",
        records=(
            _record("Where did you park the car ?", {"#6": 10}),
            _record("I parked the car outside the station .", {}),
            _record("Is this seat taken ?", {"#4": 9}),
        ),
    ),
)


class _Patched(PromptLogprobSimulator):
    EXAMPLES: tuple[FewShotExample, ...] = FEW_SHOT_EXAMPLES

    def __init__(self, llm: Any = None, **kwargs: Any) -> None:
        super().__init__(llm, **kwargs)
        original = module.build_all_at_once_prompt.__wrapped__ if hasattr(
            module.build_all_at_once_prompt, "__wrapped__"
        ) else module.build_all_at_once_prompt
        examples = self.EXAMPLES

        def build(explanation: Any, tokens: Any, examples_: Any = None) -> Any:
            return original(explanation, tokens, examples)

        build.__wrapped__ = original  # type: ignore[attr-defined]
        module.build_all_at_once_prompt = build  # type: ignore[assignment]


class Contrasting(_Patched):
    EXAMPLES = CONTRASTING


class OneExample(_Patched):
    EXAMPLES = FEW_SHOT_EXAMPLES[:1]
