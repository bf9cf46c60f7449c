from __future__ import annotations

import asyncio
import json
import math
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
    InvalidInputError,
    PromptScale,
    SequenceSimulation,
    SimulationError,
)
from neuron_explainer.explainers.llm import LLMExplainer, clean_explanation
from neuron_explainer.interfaces import track_simulations
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
    llm = Canned(["oops", '{"1 a": 1, "3 x": 3}', '{"2 cat": 9, "1 a": 0}'])
    sim = JSONSimulator(llm, retries=2, answer="all").simulate(EXPLANATION, [" a", " cat"])
    assert sim.expected_activations == (0.0, 9.0) and sim.scale == "simulated_0_10"
    assert len(llm.requests) == 3, "the second answer has no value for token 2"
    prompt = llm.requests[0].messages[-1].content
    assert "Tokens (2), numbered:\n1\t a\n2\t cat\n" in prompt
    assert llm.requests[0].response_format is None  # Canned offers no json_schema
    assert llm.requests[0].logprobs is False  # nor chat_logprobs

    simulator = JSONSimulator(Canned(["nope", "still nope"]), retries=1, answer="all")
    with pytest.raises(
        SimulationError, match="no usable answer from canned:m in 2 attempts"
    ) as info:
        simulator.simulate(EXPLANATION, ["a"])
    assert "no JSON object" in str(info.value) and info.value.reason == "unparseable"
    assert "'llm-json'" in str(info.value)


def test_json_values_are_matched_by_number_and_checked() -> None:
    tokens = [" a", " b", " c"]
    ok = '{"3 c": 2, "1 whatever": 10, "2": 0, "1 again": 5, "9 extra": 7}'
    simulation = JSONSimulator(Canned([ok]), retries=0, answer="all").simulate(EXPLANATION, tokens)
    assert simulation.expected_activations == (10.0, 0.0, 2.0), "by number; the first counts"
    legacy = '{"activations": [1, 2, 3]}'
    legacy_simulator = JSONSimulator(Canned([legacy]), answer="all")
    assert legacy_simulator.simulate(EXPLANATION, tokens).expected_activations == (
        1.0,
        2.0,
        3.0,
    )
    for text, problem, reason in [
        ('{"1 a": 1, "3 c": 2}', "no value for token 2 of 3", "misaligned"),
        ('{"1 a": 1, "2 b": "x", "3 c": 2}', "the value of token 2 is 'x'", "unparseable"),
        ('{"1 a": 1, "2 b": true, "3 c": 2}', "the value of token 2 is True", "unparseable"),
        ('{"1 a": 1, "2 b": 11, "3 c": 2}', "outside 0..10", "unparseable"),
        ('{"activations": [1, 2]}', "2 activations for 3 tokens", "misaligned"),
        ('{"1 a": 1, "2 b": 2', "no JSON object", "unparseable"),
        ("   ", "the answer was empty", "empty"),
    ]:
        with pytest.raises(SimulationError, match=re.escape(problem)) as info:
            JSONSimulator(Canned([text]), retries=0, answer="all").simulate(EXPLANATION, tokens)
        assert info.value.reason == reason, text


def test_json_simulator_uses_json_schema_when_offered() -> None:
    llm = Canned(['{"1 a": 3}'], frozenset({"chat", "json_schema"}))
    assert JSONSimulator(llm, answer="all").simulate(EXPLANATION, ["a"]).expected_activations == (
        3.0,
    )
    schema = llm.requests[0].response_format
    assert schema is not None and schema["type"] == "json_schema"
    body = schema["json_schema"]["schema"]  # type: ignore[index,call-overload]
    assert body["properties"] == {"1 a": {"type": "integer", "minimum": 0, "maximum": 10}}
    assert body["required"] == ["1 a"] and body["additionalProperties"] is False


def test_json_simulator_reads_the_digits_logprobs_where_offered() -> None:
    from neuron_explainer.testing import ScriptedLLM, make_response

    ln = math.log
    tokens = ['{"1 a": ', "0", ', "2 7": ', "10", "}"]
    alternatives = [{tokens[0]: 0.0}, {"0": ln(0.6), "1": ln(0.2), "5": ln(0.2)}]
    alternatives += [{tokens[2]: 0.0}, {"10": ln(0.5), "9": ln(0.5)}, {"}": 0.0}]
    llm = ScriptedLLM(default=make_response(logprobs=alternatives, tokens=tokens))
    simulator = JSONSimulator(llm)
    assert simulator.logprobs is True and simulator.info.settings["logprobs"] is True
    simulation = simulator.simulate(EXPLANATION, [" a", " 7"])
    assert simulation.expected_activations == pytest.approx((1.2, 9.5))
    assert simulation.distribution_values == ((0.0, 1.0, 5.0), (9.0, 10.0))
    (request,) = llm.requests
    assert (request.logprobs, request.top_logprobs) == (True, 20)
    assert request.response_format is not None

    # An answer that comes back without logprobs is read from its integers.
    plain = ScriptedLLM(default='{"1 a": 0, "2 7": 10}')
    assert JSONSimulator(plain).simulate(EXPLANATION, [" a", " 7"]).expected_activations == (
        0.0,
        10.0,
    )
    # logprobs=False never asks for them; logprobs=True needs them.
    never = ScriptedLLM(default='{"1 a": 0, "2 7": 10}')
    assert JSONSimulator(never, logprobs=False, answer="all").simulate(EXPLANATION, [" a", " 7"])
    assert never.requests[0].logprobs is False
    with pytest.raises(CapabilityError, match="logprobs=True needs 'chat_logprobs'"):
        JSONSimulator(Canned([]), logprobs=True)


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
    llm = Canned(['{"1 a": 1}', '{"1 a": 1, "2 b": 2}'])
    with track_simulations() as meter:
        JSONSimulator(llm, retries=1, answer="all").simulate(EXPLANATION, ["a", "b"])
    first, second = llm.requests
    assert len(second.messages) == len(first.messages) + 2
    assert second.messages[-2] == Message(role="assistant", content='{"1 a": 1}')
    assert "no value for token 2 of 2" in second.messages[-1].content
    assert meter.stats.retried == 1 and meter.stats.retry_reasons == {"misaligned": 1}


def test_json_simulator_asks_for_the_firing_tokens_where_it_reads_no_logprobs() -> None:
    """Without logprobs the default answer names only the tokens that fire: the rest are 0 by
    the question, every token with a named text fires, and an answer that cannot be placed is
    still a failure, never zeros."""
    from neuron_explainer.testing import ScriptedLLM

    plain = ScriptedLLM(script=['{"cat": 8}', "{}"], capabilities={"chat", "json_schema"})
    simulator = JSONSimulator(plain)
    assert (simulator.answer, simulator.logprobs) == ("firing", False)
    assert simulator.info.settings["answer"] == "firing"
    tokens = [" a", " cat", " sat", " cat"]
    assert simulator.simulate(EXPLANATION, tokens).expected_activations == (0.0, 8.0, 0.0, 8.0)
    assert simulator.simulate(EXPLANATION, tokens).expected_activations == (0.0,) * 4
    first = plain.requests[0]
    assert "names only the tokens the neuron activates on" in first.messages[0].content
    assert '{"dog": 10, "cat": 10}' in first.messages[0].content
    assert "Tokens: a | cat | sat | cat" in first.messages[1].content
    assert "{} if none" in first.messages[1].content
    assert first.logprobs is False and first.response_format is not None
    body = first.response_format["json_schema"]["schema"]  # type: ignore[index,call-overload]
    assert list(body["properties"]) == ["a", "cat", "sat"], "distinct texts, in order"
    assert "required" not in body and body["additionalProperties"] is False
    assert body["properties"]["cat"]["minimum"] == 1

    # A name in another case still places; where logprobs are read every token's value is
    # asked for; asking for both is refused.
    shouting = ScriptedLLM(default='{"CAT": 5}', capabilities={"chat"})
    assert JSONSimulator(shouting).simulate(EXPLANATION, tokens).expected_activations[1] == 5.0
    rich = ScriptedLLM(default="{}", capabilities={"chat", "chat_logprobs"})
    assert JSONSimulator(rich).answer == "all"
    assert JSONSimulator(rich, answer="firing").logprobs is False
    with pytest.raises(InvalidInputError, match="answer='firing' reads the integers"):
        JSONSimulator(rich, answer="firing", logprobs=True)
    with pytest.raises(InvalidInputError, match="answer must be 'all' or 'firing'"):
        JSONSimulator(rich, answer="some")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ('{"dog": 8}', "which is not one of its tokens"),
        ('{"cat": 11}', "not a number 0..10"),
        ('{"cat": "high"}', "not a number 0..10"),
        ("The neuron fires on cat.", "no JSON object"),
    ],
)
def test_a_firing_answer_that_cannot_be_placed_is_retried_then_fails(
    answer: str, problem: str
) -> None:
    llm = Canned([answer, answer])
    with pytest.raises(SimulationError, match="in 2 attempts") as info:
        JSONSimulator(llm, retries=1, answer="firing").simulate(EXPLANATION, [" a", " cat"])
    assert problem in str(info.value)
    retry = llm.requests[1].messages[-1].content
    assert problem in retry and "the tokens the neuron activates on" in retry


def test_firing_answers_batch_several_excerpts() -> None:
    llm = Canned(['{"excerpt_1": {"a": 5}, "excerpt_3": {}}', '{"c": 2}'])
    simulator = JSONSimulator(llm, answer="firing", excerpts_per_request=3)
    results = asyncio.run(simulator.asimulate_many(EXPLANATION, [[" a", " b"], [" c"], [" d"]]))
    assert [r.expected_activations for r in results] == [(5.0, 0.0), (2.0,), (0.0,)]
    assert len(llm.requests) == 2, "excerpt_2 was missing, so it was asked for alone"
    assert "Excerpt 2: c" in llm.requests[0].messages[1].content
    assert "Tokens: c\n" in llm.requests[1].messages[1].content


EXCERPT_LIST = re.compile(r"(?:Excerpt \d+ \((\d+) tokens\)|Tokens \((\d+)\)), numbered:\n")


def json_answers(spoil: int | None = None) -> Callable[[ChatRequest], str]:
    """Answers JSON-simulator requests (one or several excerpts): digits get 10; the excerpt at
    index ``spoil`` of a multi-excerpt request loses its last value."""

    def answer(request: ChatRequest) -> str:
        user = request.messages[1].content
        objects = []
        for match in EXCERPT_LIST.finditer(user):
            lines = user[match.end() :].split("\n")[: int(match[1] or match[2])]
            shown = [line.partition("\t")[2] for line in lines]
            objects.append(
                {
                    f"{i} {t.strip()}": 10 if t.strip().isdigit() else 0
                    for i, t in enumerate(shown, 1)
                }
            )
        if len(objects) == 1:
            return json.dumps(objects[0])
        if spoil is not None:
            objects[spoil].popitem()
        return json.dumps({f"excerpt_{i}": v for i, v in enumerate(objects, start=1)})

    return answer


JSON_EXCERPTS = [[" a", " 1"], [" 2"], [], [" b", " c", " 3"], [" d"]]


def test_json_simulator_batches_excerpts_with_identical_results() -> None:
    from neuron_explainer.testing import ScriptedLLM

    def run(llm: ScriptedLLM, per_request: int) -> list[SequenceSimulation]:
        simulator = JSONSimulator(
            llm, excerpts_per_request=per_request, logprobs=False, answer="all"
        )
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
    assert list(properties["excerpt_3"]["properties"]) == ["1 b", "2 c", "3 3"]

    spoiled = ScriptedLLM(default=json_answers(spoil=1))
    with track_simulations() as meter:
        assert run(spoiled, 3) == reference
    assert len(spoiled.requests) == 3, "the second excerpt of the first batch, alone"
    assert "Tokens (1), numbered:" in spoiled.requests[-1].messages[1].content
    assert meter.stats.retry_reasons == {"batch_failed": 1}
