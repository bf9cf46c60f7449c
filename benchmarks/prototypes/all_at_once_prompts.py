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
from neuron_explainer.llm.few_shot import (
    CONTRASTING_EXAMPLES,
    FEW_SHOT_EXAMPLES,
    FewShotExample,
)
from neuron_explainer.simulators.prompt_logprob import PromptLogprobSimulator

CONTRASTING = CONTRASTING_EXAMPLES
"""The examples `Contrasting` ran with, moved into the library unchanged."""


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
