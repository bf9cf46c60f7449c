from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import ValidationError

from neuron_explainer import (
    ActivationRecord,
    CapabilityError,
    ComponentInfo,
    Explanation,
    ExplanationError,
    PromptScale,
    SimulationError,
)
from neuron_explainer.explainers.llm import LLMExplainer, clean_explanation
from neuron_explainer.llm import LLM, ChatRequest, ChatResponse, Choice, Message
from neuron_explainer.llm.prompts import escape_token, extract_json_object, render_records
from neuron_explainer.simulators.json_output import JSONSimulator, parse_activations


class Canned(LLM):
    """Answers from a list, one per call, and keeps the requests."""

    provider = "canned"

    def __init__(self, answers: list[str], capabilities: frozenset[str] | None = None) -> None:
        super().__init__("m")
        self.answers, self.requests = list(answers), []  # type: list[str], list[ChatRequest]
        if capabilities is not None:
            self.capabilities = capabilities  # type: ignore[assignment]

    async def achat(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        return ChatResponse(choices=(Choice(text=self.answers.pop(0)),))


@pytest.mark.parametrize(
    ("token", "shown"),
    [
        ("\t", "\\t"),
        ("a\nb", "a\\nb"),
        ("\\", "\\\\"),
        ("\r", "\\r"),
        ("\x00\x1b", "\\x00\\x1b"),
        (" caf\u00e9", " caf\u00e9"),
        ("\u00e2\u0080", "\u00e2\u0080"),
    ],
)
def test_tokens_are_escaped_onto_one_line(token: str, shown: str) -> None:
    assert escape_token(token) == shown
    assert "\t" not in escape_token(token) and "\n" not in escape_token(token)


def test_records_render_as_token_tab_level_lines() -> None:
    record = ActivationRecord(tokens=["a\tb", " c", "\n"], activations=[-1.0, 2.0, 4.0])
    text = render_records([record], PromptScale(max_activation=4.0))
    assert text == "<start>\na\\tb\t0\n c\t5\n\\n\t10\n<end>"


def test_explanations_are_cleaned_and_raw_output_kept() -> None:
    assert clean_explanation(" The main thing this neuron does is find  numbers in dates. ") == (
        "numbers in dates"
    )
    assert clean_explanation('"years"') == "years"
    llm = Canned([" mentions of cats.\n"])
    records = [ActivationRecord(tokens=[" cat", " dog"], activations=[3.0, 0.0])]
    explanation = LLMExplainer(llm).explain(records)
    assert explanation.text == "mentions of cats"
    assert explanation.raw_output == " mentions of cats.\n"
    assert explanation.scale == PromptScale(max_activation=3.0)
    assert explanation.explainer.prompt_version == "llm-explainer/1"
    user = llm.requests[0].messages[-1].content
    assert " cat\t10\n dog\t0" in user
    assert user.endswith("the main thing this neuron does is find")


def test_explainer_refuses_empty_answers_and_dead_records() -> None:
    records = [ActivationRecord(tokens=["a"], activations=[1.0])]
    with pytest.raises(ExplanationError, match="returned no explanation"):
        LLMExplainer(Canned(["  .  "])).explain(records)
    with pytest.raises(ExplanationError, match="no train record has a positive activation"):
        LLMExplainer(Canned([])).explain([ActivationRecord(tokens=["a"], activations=[0.0])])


def test_parse_activations_checks_everything() -> None:
    assert parse_activations('```json\n{"activations": [0, 10, 2.5]}\n```', 3) == [0.0, 10.0, 2.5]
    for text, problem in [
        ("no json here", "no JSON object"),
        ('{"values": [1]}', 'no "activations" list'),
        ('{"activations": [1, 2]}', "2 activations for 3 tokens"),
        ('{"activations": [1, "x", 2]}', "activation 1 is 'x'"),
        ('{"activations": [1, true, 2]}', "activation 1 is True"),
        ('{"activations": [1, 11, 2]}', "outside 0..10"),
    ]:
        with pytest.raises(ValueError, match=problem):
            parse_activations(text, 3)


EXPLANATION = Explanation(text="cats", explainer=ComponentInfo(name="x"))


def test_json_simulator_retries_then_fails_never_zeros() -> None:
    llm = Canned(["oops", '{"activations": [1, 2, 3]}', '{"activations": [0, 9]}'])
    sim = JSONSimulator(llm, retries=2).simulate(EXPLANATION, [" a", " cat"])
    assert sim.expected_activations == (0.0, 9.0) and sim.scale == "simulated_0_10"
    assert len(llm.requests) == 3
    prompt = llm.requests[0].messages[-1].content
    assert json.dumps([" a", " cat"]) in prompt and "exactly 2 integers" in prompt
    assert llm.requests[0].response_format is None  # Canned offers no json_schema

    with pytest.raises(SimulationError, match="no usable JSON simulation in 2 attempts") as info:
        JSONSimulator(Canned(["nope", "still nope"]), retries=1).simulate(EXPLANATION, ["a"])
    assert "no JSON object" in str(info.value)


def test_json_simulator_uses_json_schema_when_offered() -> None:
    llm = Canned(['{"activations": [3]}'], frozenset({"chat", "json_schema"}))
    JSONSimulator(llm).simulate(EXPLANATION, ["a"])
    schema = llm.requests[0].response_format
    assert schema is not None and schema["type"] == "json_schema"
    items = schema["json_schema"]["schema"]["properties"]["activations"]  # type: ignore[index,call-overload]
    assert items["minItems"] == items["maxItems"] == 1


def test_require_names_the_missing_capability() -> None:
    with pytest.raises(
        CapabilityError, match=r"the logprob simulator needs 'chat_logprobs'.*canned:m"
    ):
        Canned([]).require("chat_logprobs", by="the logprob simulator")


def test_chat_request_validates() -> None:
    with pytest.raises(ValidationError):
        ChatRequest(messages=())
    with pytest.raises(ValidationError):
        ChatRequest(messages=(Message(role="user", content="x"),), top_logprobs=21)
    assert asyncio.run(Canned(["hi"]).acomplete([Message(role="user", content="x")], n=1))


def test_extract_json_object_tolerates_prose() -> None:
    assert extract_json_object('Sure! {"a": {"b": 1}} Hope this helps.') == {"a": {"b": 1}}


def test_json_simulator_retry_shows_the_model_what_was_wrong() -> None:
    llm = Canned(['{"activations": [1]}', '{"activations": [1, 2]}'])
    JSONSimulator(llm, retries=1).simulate(EXPLANATION, ["a", "b"])
    first, second = llm.requests
    assert len(second.messages) == len(first.messages) + 2
    assert second.messages[-2] == Message(role="assistant", content='{"activations": [1]}')
    assert "1 activations for 2 tokens" in second.messages[-1].content
