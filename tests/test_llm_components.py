from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from neuron_explainer import (
    ActivationRecord,
    CapabilityError,
    ComponentInfo,
    Explanation,
    ExplanationError,
    PromptScale,
    SequenceSimulation,
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
    assert explanation.explainer.prompt_version == "llm-explainer/2"
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


EXCERPT_LIST = re.compile(r"(?:Excerpt \d+ \(\d+ tokens\)|Tokens \(\d+\)), as a JSON list:\n(.*)\n")


def json_answers(spoil: int | None = None) -> Callable[[ChatRequest], str]:
    """Answers JSON-simulator requests (one or several excerpts): digits get 10; the excerpt at
    index ``spoil`` of a multi-excerpt request gets a list one too short."""

    def answer(request: ChatRequest) -> str:
        lists = [json.loads(m) for m in EXCERPT_LIST.findall(request.messages[1].content)]
        values = [[10 if t.strip().isdigit() else 0 for t in tokens] for tokens in lists]
        if len(values) == 1:
            return json.dumps({"activations": values[0]})
        if spoil is not None:
            values[spoil] = values[spoil][:-1]
        return json.dumps({f"excerpt_{i}": v for i, v in enumerate(values, start=1)})

    return answer


JSON_EXCERPTS = [[" a", " 1"], [" 2"], [], [" b", " c", " 3"], [" d"]]


def test_json_simulator_batches_excerpts_with_identical_results() -> None:
    from neuron_explainer.testing import ScriptedLLM

    def run(llm: ScriptedLLM, per_request: int) -> list[SequenceSimulation]:
        simulator = JSONSimulator(llm, excerpts_per_request=per_request)
        return asyncio.run(simulator.asimulate_many(EXPLANATION, JSON_EXCERPTS))

    alone, batched = ScriptedLLM(default=json_answers()), ScriptedLLM(default=json_answers())
    reference = run(alone, 1)
    assert [s.expected_activations for s in reference] == [
        (0.0, 10.0),
        (10.0,),
        (),
        (0.0, 0.0, 10.0),
        (0.0,),
    ]
    assert run(batched, 3) == reference
    assert (len(alone.requests), len(batched.requests)) == (4, 2), "none for the empty one"
    schema = batched.requests[0].response_format
    assert schema is not None
    properties = schema["json_schema"]["schema"]["properties"]  # type: ignore[index,call-overload]
    assert list(properties) == ["excerpt_1", "excerpt_2", "excerpt_3"]
    assert properties["excerpt_3"]["minItems"] == 3

    spoiled = ScriptedLLM(default=json_answers(spoil=1))
    assert run(spoiled, 3) == reference
    assert len(spoiled.requests) == 3, "the second excerpt of the first batch, alone"
    assert "Tokens (1), as a JSON list:" in spoiled.requests[-1].messages[1].content
