"""An example neuron_explainer plugin adding the ``acme`` LLM provider and the ``acme-rules``
subject.

Installed, it is found through the entry point ``acme = "neuron_explainer_acme"`` in the
``neuron_explainer`` group; the registry then calls `register_llm_providers` and
`register_subjects` below.
"""

from __future__ import annotations

# --8<-- [start:header]
import json
import re
from collections import Counter
from collections.abc import Sequence

from neuron_explainer import (
    ActivationRecord,
    InvalidInputError,
    NeuronRecord,
    Provenance,
    Subject,
    UnitId,
    build_neuron_record,
)
from neuron_explainer.llm import LLM, ChatRequest, ChatResponse, Choice, Usage
from neuron_explainer.plugins import Register, hookimpl

__all__ = ["AcmeLLM", "AcmeSubject", "register_llm_providers", "register_subjects"]

_LINE = re.compile(r"^(.*)\t(\d+)$")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
# --8<-- [end:header]


# --8<-- [start:llm]
class AcmeLLM(LLM):
    """Acme's rule-based chat model (stands in for an HTTP API)."""

    provider = "acme"
    capabilities = frozenset({"chat", "json_schema"})

    async def achat(self, request: ChatRequest) -> ChatResponse:
        prompt = request.messages[-1].content
        # The explainer's prompt shows an activation table; the simulator's asks for JSON.
        text = self._explain(prompt) if "Activations:" in prompt else self._simulate(prompt)
        return ChatResponse(
            choices=(Choice(text=text, finish_reason="stop"),),
            usage=Usage(prompt_tokens=len(prompt.split()), completion_tokens=len(text.split())),
            model=self.model,
        )

    # --8<-- [end:llm]
    # --8<-- [start:rules]
    @staticmethod
    def _explain(prompt: str) -> str:
        strong: Counter[str] = Counter()
        for line in prompt.splitlines():
            match = _LINE.match(line)
            if match and int(match.group(2)) >= 5:
                strong[match.group(1).strip()] += 1
        if not strong:
            return "nothing in particular."
        token, _ = strong.most_common(1)[0]
        return f" the token {json.dumps(token)} wherever it appears."

    @staticmethod
    def _simulate(prompt: str) -> str:
        explanation, _, rest = prompt.partition("\n\n")
        wanted = {json.loads(f'"{q}"') for q in _QUOTED.findall(explanation)}
        # Without logprobs the JSON simulator asks only for the tokens that fire: they follow
        # "Tokens: ", separated by " | " ("The | cat | 7"), and the answer names the firing
        # ones by their text: {"7": 10}, or {} when none fires.
        listing = rest.splitlines()[0].removeprefix("Tokens: ")
        return json.dumps({t: 10 for t in listing.split(" | ") if t in wanted})

    # --8<-- [end:rules]


# --8<-- [start:subject]
class AcmeSubject(Subject):
    """Acme's rule-based "model", recorded from text without running anything (stands in for
    a model behind an API): in every layer, neuron 0 fires on numbers, neuron 1 on capitalised
    words and neuron ``n`` on words of ``n`` characters, more strongly in later layers."""

    def __init__(self, model: str, corpus: Sequence[str] | None, *, window: int = 8) -> None:
        if not corpus or isinstance(corpus, str):
            raise InvalidInputError("the acme-rules subject needs corpus=[...], a list of texts")
        self.model, self.window = model, window
        self.words = [word for text in corpus for word in text.split()]

    @property
    def model_name(self) -> str:
        return self.model

    async def aneuron_record(self, unit: UnitId) -> NeuronRecord:
        rules = {0: str.isdigit, 1: str.istitle}
        fires = rules.get(unit.index, lambda word: len(word) == unit.index)
        excerpts = [
            ActivationRecord(
                tokens=[" " + word for word in chunk],
                activations=[(1.0 + unit.layer) * fires(word) for word in chunk],
            )
            for chunk in (
                self.words[start : start + self.window]
                for start in range(0, len(self.words) - self.window + 1, self.window)
            )
        ]
        provenance = Provenance(model=self.model, dataset="acme texts", window_length=self.window)
        return build_neuron_record(unit, excerpts, provenance=provenance)


# --8<-- [end:subject]


# --8<-- [start:hook]
@hookimpl
def register_llm_providers(register: Register) -> None:
    register(AcmeLLM, name="acme", description="Acme's rule-based chat models (example plugin)")
    # --8<-- [end:hook]


# --8<-- [start:subject-hook]
@hookimpl
def register_subjects(register: Register) -> None:
    # Built as AcmeSubject(model=..., corpus=..., **subject_options) by explain_neuron.
    register(AcmeSubject, name="acme-rules", description="Acme's rule-based units (example)")
    # --8<-- [end:subject-hook]
