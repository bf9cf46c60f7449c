"""Write every simulator and revision prompt of an MLP neuron, as the library wrote them before
the prompts named other unit kinds, into ``prompts.json`` in this folder.

Run once, with the library at commit 5579ed9 (the last commit before the simulators' and the
revision's prompts named the unit's kind), from the repository root:
``python tests/data/neuron_prompts/make_fixture.py``. The file it writes is committed;
tests/test_unit_prompts.py builds the same prompts with the current library, for a neuron and
outside any unit, and asserts they are byte-identical. Do not rerun it with a newer library.

Each entry is a name and the prompt: chat messages as ``[[role, content], ...]``, a completion
prompt as its text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
EXPLANATION = "animals, especially dogs and\tcats"
EXCERPTS = (
    ("The", " dog", " barked", "\n", " at", " a", " neuron", "."),
    ("A", "\\", " cat", " sat", " quietly"),
    (" 42", " blue", " stars"),
)


def chat(messages: Any) -> list[list[str]]:
    return [[m.role, m.content] for m in messages]


def simulator_prompts() -> dict[str, Any]:
    from neuron_explainer.results import ComponentInfo, Explanation
    from neuron_explainer.simulators._common import Problem
    from neuron_explainer.simulators.chat_logprob import ChatLogprobSimulator
    from neuron_explainer.simulators.json_output import JSONSimulator
    from neuron_explainer.simulators.prompt_logprob import PromptLogprobSimulator
    from neuron_explainer.testing.llm import ScriptedLLM

    explanation = Explanation(text=EXPLANATION, explainer=ComponentInfo(name="test"))
    problem = Problem("token 3 has no value")
    out: dict[str, Any] = {}
    for fmt, capabilities in (
        ("json", {"chat", "chat_logprobs", "json_schema"}),
        ("lines", {"chat", "chat_logprobs"}),
    ):
        sim = ChatLogprobSimulator(ScriptedLLM(capabilities=capabilities), format=fmt)
        out[f"chat-logprob/{fmt}/one"] = chat(sim.messages(explanation, EXCERPTS[:1]))
        out[f"chat-logprob/{fmt}/many"] = chat(sim.messages(explanation, EXCERPTS))
        out[f"chat-logprob/{fmt}/retry"] = sim._retry(problem, EXCERPTS[0])
    for answer, logprobs in (("all", True), ("firing", False)):
        sim = JSONSimulator(ScriptedLLM(), answer=answer, logprobs=logprobs)
        out[f"json/{answer}/one"] = chat(sim.messages(explanation, EXCERPTS[0]))
        out[f"json/{answer}/many"] = chat(sim.batch_messages(explanation, EXCERPTS))
        out[f"json/{answer}/retry"] = sim._retry(problem, EXCERPTS[0])
    for examples in ("contrasting", "paper"):
        llm = ScriptedLLM(capabilities={"chat", "prompt_logprobs"})
        sim = PromptLogprobSimulator(llm, examples=examples, digits="top_logprobs")
        prompt, offsets = sim.prompt(explanation, EXCERPTS[0])
        out[f"prompt-logprob/{examples}"] = prompt
        out[f"prompt-logprob/{examples}/offsets"] = offsets
    return out


def revision_prompts() -> dict[str, Any]:
    from neuron_explainer.explainers.llm import LLMExplainer
    from neuron_explainer.explainers.revising import Disagreement
    from neuron_explainer.records import ActivationRecord
    from neuron_explainer.results import ComponentInfo, Explanation, PromptScale
    from neuron_explainer.testing.llm import ScriptedLLM

    records = [
        ActivationRecord(tokens=EXCERPTS[0], activations=(0, 4, 0.5, 0, 0, 0, 2, 0)),
        ActivationRecord(tokens=EXCERPTS[1], activations=(0, 0, 3, 0, 0)),
    ]
    explanation = Explanation(
        text=EXPLANATION,
        scale=PromptScale(max_activation=4.0),
        explainer=ComponentInfo(name="test"),
    )
    found = [
        Disagreement("miss", 0, 1, 10, 1.0, ("The",), " dog", (" barked",)),
        Disagreement("false_positive", 1, 2, 0, 7.0, ("A", "\\"), " cat", (" sat",)),
        Disagreement("miss", 0, 1, 6, 0.0, (), "Cows", (" moo",), source="test"),
        Disagreement("false_positive", 1, 0, 0, 5.0, ("A",), " horse", (), source="test"),
    ]
    explainer = LLMExplainer(ScriptedLLM())
    return {
        "revision": chat(explainer.revision_messages(records, explanation, found)),
        "tests": chat(explainer.test_messages(records, explanation, 4)),
    }


def main() -> None:
    import neuron_explainer

    print("library:", neuron_explainer.__file__)
    prompts = {**simulator_prompts(), **revision_prompts()}
    text = json.dumps(prompts, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
    (HERE / "prompts.json").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
