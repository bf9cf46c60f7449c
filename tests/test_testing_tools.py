"""neuron_explainer.testing: mock components, the scripted LLM and its fake provider."""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from neuron_explainer import (
    ActivationRecord,
    CapabilityError,
    ComponentInfo,
    Explanation,
    ExplanationError,
    InvalidInputError,
    NeuronExplainerError,
    NeuronRecord,
    SimulationError,
    explain_neuron,
    split_records,
)
from neuron_explainer.explainers.llm import LLMExplainer
from neuron_explainer.llm import ChatRequest, ChatResponse, Message
from neuron_explainer.plugins import Registry
from neuron_explainer.simulators.json_output import JSONSimulator
from neuron_explainer.testing import (
    NUMBER_UNIT,
    FakeProvider,
    MockExplainer,
    MockSimulator,
    ScriptedLLM,
    ScriptExhaustedError,
    make_response,
    number_neuron_record,
)

EXPLANATION = Explanation(text="numbers", explainer=ComponentInfo(name="test"))
TOKENS = (" a", " 7", " B", " cat")


@pytest.fixture(scope="module")
def record() -> NeuronRecord:
    return number_neuron_record()


def request(text: str = "hi", **options: object) -> ChatRequest:
    return ChatRequest(messages=(Message(role="user", content=text),), **options)


def registry_for(llm: ScriptedLLM) -> Registry:
    return Registry(entry_points=False, plugins=[FakeProvider(llm)])


# -- MockSimulator -----------------------------------------------------------------------------


def test_from_function_accepts_any_iterable_of_numbers() -> None:
    sim = MockSimulator.from_function(lambda tokens: (i for i, _ in enumerate(tokens)))
    assert sim.simulate(EXPLANATION, TOKENS).expected_activations == (0.0, 1.0, 2.0, 3.0)


def test_from_function_predicts_and_records_calls() -> None:
    sim = MockSimulator.from_function(lambda tokens: [float(len(t)) for t in tokens])
    result = sim.simulate(EXPLANATION, TOKENS)
    assert result.tokens == TOKENS
    assert result.expected_activations == (2.0, 2.0, 2.0, 4.0)
    assert result.scale == "simulated_0_10"
    assert sim.calls == [("numbers", TOKENS)]
    assert sim.info.name == "mock"
    assert sim.info.settings["mode"] == "function"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([1.0, 2.0, 3.0], "3 values for 4 tokens"),
        ([1.0] * 5, "5 values for 4 tokens"),
        ([0.0, math.nan, 0.0, 0.0], "non-finite values at tokens [1]"),
        ([0.0, 0.0, math.inf, -math.inf], "non-finite values at tokens [2, 3]"),
        ([0.0, "x", 0.0, 0.0], "not a list of numbers"),
        ([0.0, "1", 0.0, 0.0], "not a list of numbers"),
        ("1234", "not a list of numbers"),
        (None, "not a list of numbers"),
    ],
)
def test_from_function_never_pads_or_zeroes(values: object, message: str) -> None:
    sim = MockSimulator.from_function(lambda tokens: values)  # type: ignore[arg-type,return-value]
    with pytest.raises(SimulationError, match=re.escape(message)):
        sim.simulate(EXPLANATION, TOKENS)
    assert sim.calls == [("numbers", TOKENS)], "a failed call is recorded too"


def test_from_keywords_matches_stripped_tokens_case_insensitively() -> None:
    sim = MockSimulator.from_keywords(["a", " cat "], hit=3.0, miss=-1.0)
    assert sim.simulate(EXPLANATION, (" A", "a ", " cats", "CAT")).expected_activations == (
        3.0,
        3.0,
        -1.0,
        3.0,
    )
    assert sim.info.settings == {
        "mode": "keywords",
        "keywords": ["a", "cat"],
        "hit": 3.0,
        "miss": -1.0,
        "case_sensitive": False,
    }
    strict = MockSimulator.from_keywords("B", case_sensitive=True)
    assert strict.simulate(EXPLANATION, (" b", " B")).expected_activations == (0.0, 10.0)


def test_from_keywords_without_keywords_reads_the_explanation() -> None:
    sim = MockSimulator.from_keywords()
    words = Explanation(text='the tokens: "7", cat and Dog.', explainer=ComponentInfo(name="t"))
    predicted = sim.simulate(words, (" 7", " cat", " dog", " bird", " the", " and"))
    assert predicted.expected_activations == (10.0, 10.0, 10.0, 0.0, 10.0, 10.0)
    assert sim.info.settings["keywords"] == "from explanation"


@pytest.mark.parametrize(
    "build",
    [
        lambda: MockSimulator.from_keywords([]),
        lambda: MockSimulator.from_keywords(["  "]),
        lambda: MockSimulator.from_keywords(["a"], hit=math.nan),
        lambda: MockSimulator.from_keywords(["a"], miss=math.inf),
    ],
)
def test_from_keywords_rejects_bad_arguments(build: Callable[[], object]) -> None:
    with pytest.raises(InvalidInputError):
        build()


def test_from_truth_returns_the_exact_truth_and_scores_one(record: NeuronRecord) -> None:
    sim = MockSimulator.from_truth(record)
    excerpt = record.random_sample[0]
    predicted = sim.simulate(EXPLANATION, excerpt.tokens)
    assert predicted.expected_activations == excerpt.activations
    assert predicted.scale == "neuron_activations"
    result = explain_neuron(record, explainer=MockExplainer("numbers"), simulator=sim)
    assert result.score == 1.0
    excerpts = (*record.top_records, *record.random_sample, *sum(record.quantile_samples, ()))
    assert result.simulator.settings == {
        "mode": "truth",
        "noise": 0.0,
        "seed": 0,
        "n_excerpts": len({r.tokens for r in excerpts}),
    }


def test_from_truth_accepts_activation_records() -> None:
    first = ActivationRecord(tokens=["a", "b"], activations=[1.0, 2.0])
    second = ActivationRecord(tokens=["c"], activations=[3.0])
    sim = MockSimulator.from_truth([first, second])
    assert sim.simulate(EXPLANATION, ["c"]).expected_activations == (3.0,)
    assert MockSimulator.from_truth(first).simulate(EXPLANATION, ["a", "b"]).tokens == ("a", "b")


def test_from_truth_names_an_unknown_excerpt(record: NeuronRecord) -> None:
    sim = MockSimulator.from_truth(record)
    with pytest.raises(SimulationError, match=r"does not know the excerpt \[' never', ' seen'\]"):
        sim.simulate(EXPLANATION, [" never", " seen"])


def test_from_truth_noise_is_deterministic_and_independent_of_call_order(
    record: NeuronRecord,
) -> None:
    a, b = record.top_records[0].tokens, record.random_sample[0].tokens
    first = MockSimulator.from_truth(record, noise=1.0, seed=3)
    second = MockSimulator.from_truth(record, noise=1.0, seed=3)
    a1, b1 = first.simulate(EXPLANATION, a), first.simulate(EXPLANATION, b)
    b2, a2 = second.simulate(EXPLANATION, b), second.simulate(EXPLANATION, a)
    assert (a1, b1) == (a2, b2)
    assert first.simulate(EXPLANATION, a) == a1, "the same call gives the same output"
    truth = record.top_records[0].activations
    assert a1.expected_activations != truth
    other_seed = MockSimulator.from_truth(record, noise=1.0, seed=4).simulate(EXPLANATION, a)
    assert other_seed.expected_activations != a1.expected_activations


def test_from_truth_noise_does_not_depend_on_the_process_hash_seed(record: NeuronRecord) -> None:
    code = (
        "from neuron_explainer.testing import MockSimulator, number_neuron_record\n"
        "from neuron_explainer import Explanation, ComponentInfo\n"
        "r = number_neuron_record()\n"
        "e = Explanation(text='x', explainer=ComponentInfo(name='t'))\n"
        "s = MockSimulator.from_truth(r, noise=1.0, seed=3)\n"
        "print(repr(s.simulate(e, r.top_records[0].tokens).expected_activations))\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    here = MockSimulator.from_truth(record, noise=1.0, seed=3)
    expected = here.simulate(EXPLANATION, record.top_records[0].tokens).expected_activations
    assert outputs == {repr(expected) + "\n"}


def test_more_noise_scores_lower(record: NeuronRecord) -> None:
    scores = []
    for noise in (0.0, 0.5, 2.0, 8.0):
        sim = MockSimulator.from_truth(record, noise=noise, seed=0)
        score = explain_neuron(record, explainer=MockExplainer("numbers"), simulator=sim).score
        assert score is not None
        scores.append(score)
    assert scores[0] == 1.0
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)
    assert scores[-1] < 0.5


@pytest.mark.parametrize(
    ("records", "options", "message"),
    [
        ([], {}, "at least one excerpt"),
        (None, {"noise": -1.0}, "standard deviation"),
        (None, {"noise": math.nan}, "finite"),
        (None, {"seed": -1}, "seed"),
        (None, {"seed": 1.5}, "seed"),
        (["not a record"], {}, "NeuronRecords or ActivationRecords"),
        (
            [
                ActivationRecord(tokens=["a"], activations=[1.0]),
                ActivationRecord(tokens=["a"], activations=[2.0]),
            ],
            {},
            "different activations",
        ),
    ],
)
def test_from_truth_rejects_bad_arguments(
    record: NeuronRecord, records: object, options: dict[str, float], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        MockSimulator.from_truth(record if records is None else records, **options)  # type: ignore[arg-type]


# -- MockExplainer -----------------------------------------------------------------------------


def test_mock_explainer_returns_its_text_and_sees_only_train(record: NeuronRecord) -> None:
    explainer = MockExplainer("digits", data={"k": [1, 2]})
    sim = MockSimulator.from_truth(record)
    result = explain_neuron(record, explainer=explainer, simulator=sim)
    assert result.explanation.text == "digits"
    assert result.explanation.data == {"k": [1, 2]}
    assert result.explainer == explainer.info
    assert explainer.info.settings == {"mode": "fixed", "text": "digits"}
    assert explainer.seen == list(split_records(record).train)
    assert len(explainer.calls) == 1
    assert {text for text, _ in sim.calls} == {"digits"}


def test_mock_explainer_from_function() -> None:
    def describe(records: Sequence[ActivationRecord]) -> str:
        return f"{len(records)} records"

    explainer = MockExplainer.from_function(describe)
    one = ActivationRecord(tokens=["a"], activations=[1.0])
    assert explainer.explain([one, one]).text == "2 records"
    assert explainer.info.settings["mode"] == "function"
    assert "describe" in str(explainer.info.settings["function"])
    with pytest.raises(ExplanationError, match="not a non-blank text"):
        MockExplainer.from_function(lambda records: "  ").explain([one])
    with pytest.raises(InvalidInputError):
        MockExplainer(" ")


def test_number_neuron_record_is_deterministic_and_fires_on_numbers() -> None:
    record = number_neuron_record()
    assert record == number_neuron_record()
    assert record.unit == NUMBER_UNIT
    assert len(record.top_records) == 40 and len(record.random_sample) == 30
    for excerpt in record.top_records[:5]:
        for token, value in zip(excerpt.tokens, excerpt.activations, strict=True):
            assert (value > 4) == token.strip().isdigit()
    assert number_neuron_record(seed=1) != record
    with pytest.raises(InvalidInputError):
        number_neuron_record(n_excerpts=10)


# -- ScriptedLLM -------------------------------------------------------------------------------


def test_script_is_consumed_in_order_and_requests_recorded() -> None:
    async def later(req: ChatRequest) -> str:
        return "async " + req.messages[-1].content

    canned = make_response("canned", prompt_tokens=12, completion_tokens=3)
    llm = ScriptedLLM("m", ["first", canned, lambda req: req.messages[-1].content.upper(), later])
    assert llm.name == "fake:m" and llm.remaining == 4
    first = llm.chat(request("one"))
    assert first.choices[0].text == "first" and first.choices[0].logprobs is None
    assert first.usage.prompt_tokens == 0 and first.model == "m"
    assert llm.chat(request("two")) is canned
    assert llm.chat(request("three")).choices[0].text == "THREE"
    assert llm.chat(request("four")).choices[0].text == "async four"
    assert [r.messages[-1].content for r in llm.requests] == ["one", "two", "three", "four"]
    assert llm.remaining == 0


def test_a_text_answer_fills_every_choice_asked_for() -> None:
    llm = ScriptedLLM(script=["x"])
    assert [c.text for c in llm.chat(request(n=3)).choices] == ["x", "x", "x"]


def test_scripted_exceptions_are_raised_in_turn() -> None:
    llm = ScriptedLLM(script=[TimeoutError("slow"), KeyError, "after"])
    with pytest.raises(TimeoutError, match="slow"):
        llm.chat(request())
    with pytest.raises(KeyError):
        llm.chat(request())
    assert llm.chat(request()).choices[0].text == "after"
    assert len(llm.requests) == 3


def test_chat_and_prompt_scripts_play_their_items_alike() -> None:
    from neuron_explainer.llm import PromptLogprobsRequest
    from neuron_explainer.testing import make_prompt_response

    scored = make_prompt_response("a b")

    async def later(req: PromptLogprobsRequest) -> object:
        return make_prompt_response(req.prompt)

    llm = ScriptedLLM(
        "m",
        [int, KeyError],
        prompt_script=[dict, LookupError, later, lambda req: scored, "not scored"],
    )
    with pytest.raises(InvalidInputError, match="fake:m: script item int is a class"):
        llm.chat(request())
    with pytest.raises(KeyError):
        llm.chat(request())

    def score(prompt: str = "a b") -> object:
        return asyncio.run(llm.aprompt_logprobs(PromptLogprobsRequest(prompt=prompt)))

    with pytest.raises(InvalidInputError, match="fake:m: prompt script item dict is a class"):
        score()
    with pytest.raises(LookupError):
        score()
    assert score("c d") == make_prompt_response("c d")  # an async callable, awaited
    assert score() is scored
    with pytest.raises(InvalidInputError, match=r"must be a PromptLogprobsResponse.*got str"):
        score()


def test_running_out_raises_script_exhausted() -> None:
    llm = ScriptedLLM("m", ["only"])
    llm.chat(request())
    with pytest.raises(ScriptExhaustedError, match=r"fake:m got request 2 .*1 scripted answers"):
        llm.chat(request("what now?"))
    assert issubclass(ScriptExhaustedError, NeuronExplainerError)
    assert len(llm.requests) == 2
    llm.add("more", "and more")
    assert llm.remaining == 2
    assert llm.chat(request()).choices[0].text == "more"


def test_default_answers_once_the_script_is_used_up() -> None:
    llm = ScriptedLLM(script=["scripted"], default="fallback")
    texts = [llm.chat(request()).choices[0].text for _ in range(3)]
    assert texts == ["scripted", "fallback", "fallback"]
    llm.default = lambda req: f"echo {req.messages[-1].content}"
    assert llm.chat(request("x")).choices[0].text == "echo x"


def test_an_answer_of_the_wrong_type_is_reported() -> None:
    llm = ScriptedLLM(script=[lambda req: 42])  # type: ignore[list-item,return-value]
    with pytest.raises(InvalidInputError, match="got int"):
        llm.chat(request())


def test_concurrent_requests_take_answers_in_call_order() -> None:
    llm = ScriptedLLM(script=[f"answer {i}" for i in range(20)])

    async def ask_all() -> list[ChatResponse]:
        return list(await asyncio.gather(*(llm.achat(request(f"q{i}")) for i in range(20))))

    responses = asyncio.run(ask_all())
    assert [r.choices[0].text for r in responses] == [f"answer {i}" for i in range(20)]
    assert [r.messages[-1].content for r in llm.requests] == [f"q{i}" for i in range(20)]


def test_threads_share_one_script_without_losing_answers() -> None:
    script = [f"a{i}" for i in range(400)]
    llm = ScriptedLLM(script=script)

    def ask(_: int) -> str:
        return llm.chat(request()).choices[0].text

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, range(400)))
    assert sorted(answers) == sorted(script)
    assert len(llm.requests) == 400 and llm.remaining == 0


def test_require_raises_capability_error_for_missing_capabilities() -> None:
    llm = ScriptedLLM(capabilities={"chat"})
    llm.require("chat", by="the test")
    with pytest.raises(CapabilityError, match=r"the test needs 'chat_logprobs'.*offers: chat"):
        llm.require("chat_logprobs", by="the test")
    assert llm.info.settings == {"capabilities": ["chat"]}
    llm.capabilities = frozenset({"chat", "prompt_logprobs"})
    llm.require("prompt_logprobs", by="the test")
    with pytest.raises(InvalidInputError, match="unknown capabilities"):
        ScriptedLLM(capabilities={"chat", "telepathy"})  # type: ignore[arg-type]


def test_requests_needing_a_missing_capability_are_refused() -> None:
    llm = ScriptedLLM(script=["kept"], capabilities={"chat"})
    with pytest.raises(CapabilityError, match=r"logprobs.*'chat_logprobs'"):
        llm.chat(request(logprobs=True, top_logprobs=5))
    with pytest.raises(CapabilityError, match=r"response_format.*'json_schema'"):
        llm.chat(request(response_format={"type": "json_object"}))
    assert llm.remaining == 1, "a refused request consumes no answer"
    assert len(llm.requests) == 2, "refused requests are still recorded"
    assert llm.chat(request()).choices[0].text == "kept"
    with pytest.raises(CapabilityError, match="'chat'"):
        ScriptedLLM(default="x", capabilities=set()).chat(request())


@pytest.mark.parametrize("structured", [True, False])
def test_json_simulator_uses_json_schema_only_when_offered(structured: bool) -> None:
    capabilities = {"chat", "json_schema"} if structured else {"chat"}
    llm = ScriptedLLM(script=['{"activations": [0, 10]}'], capabilities=capabilities)  # type: ignore[arg-type]
    simulation = JSONSimulator(llm, answer="all").simulate(EXPLANATION, ["a", " 7"])
    assert simulation.expected_activations == (0.0, 10.0)
    (sent,) = llm.requests
    assert (sent.response_format is not None) == structured


def test_make_response_builds_token_logprobs() -> None:
    response = ScriptedLLM.response(
        logprobs=[{"7": -0.1, "8": -2.3}, {"\t": -0.01}],
        prompt_tokens=50,
        completion_tokens=2,
        cached_tokens=10,
    )
    assert ScriptedLLM.response is make_response
    (choice,) = response.choices
    assert choice.text == "7\t"
    assert choice.logprobs is not None and len(choice.logprobs) == 2
    first = choice.logprobs[0]
    assert (first.token, first.logprob) == ("7", -0.1)
    assert [(t.token, t.logprob) for t in first.top_logprobs] == [("7", -0.1), ("8", -2.3)]
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (50, 2)
    assert response.usage.cached_tokens == 10
    chosen = make_response("8", logprobs=[{"7": -0.1, "8": -2.3}], tokens=["8"])
    assert chosen.choices[0].text == "8"
    assert chosen.choices[0].logprobs is not None and chosen.choices[0].logprobs[0].logprob == -2.3
    assert make_response().choices[0].text == ""


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"logprobs": [{}]}, "empty"),
        ({"logprobs": [{"a": 0.5}]}, "finite and <= 0"),
        ({"logprobs": [{"a": math.nan}]}, "finite and <= 0"),
        ({"logprobs": [{"a": -1.0}], "tokens": ["b"]}, "has no logprob"),
        ({"logprobs": [{"a": -1.0}], "tokens": ["a", "b"]}, "2 tokens but 1"),
        ({"tokens": ["a"]}, "needs logprobs"),
    ],
)
def test_make_response_rejects_inconsistent_logprobs(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        make_response(**options)  # type: ignore[arg-type]


def test_fake_provider_serves_named_views_of_one_script() -> None:
    llm = ScriptedLLM(script=["a", "b"])
    provider = FakeProvider(llm)
    registry = Registry(entry_points=False, plugins=[provider])
    small, large = registry.llm("fake:small"), registry.llm("fake:large")
    assert (small.name, large.name) == ("fake:small", "fake:large")
    assert provider.llms == {"small": small, "large": large} and provider.last is large
    assert large.chat(request("1")).choices[0].text == "a"
    assert small.chat(request("2")).choices[0].text == "b"
    assert [r.messages[-1].content for r in llm.requests] == ["1", "2"]
    assert isinstance(small, ScriptedLLM) and small.requests is llm.requests
    small.default, large.prompt_default = "after", "7"  # assignable, and shared by every view
    assert (llm.default, llm.prompt_default) == ("after", "7")
    assert large.chat(request("3")).choices[0].text == "after"
    with pytest.raises(AttributeError, match="requests cannot be assigned"):
        small.requests = []
    other = Registry(entry_points=False, plugins=[FakeProvider(name="other")])
    assert other.llm("other:x").name == "other:x"


# -- end to end through explain_neuron -----------------------------------------------------------

TOKEN_LIST = re.compile(r"Tokens \((\d+)\), numbered:\n")
FIRING_LIST = re.compile(r"^Tokens: (.*)$", re.MULTILINE)


def answer_by_prompt(malformed_simulations: int = 0) -> Callable[[ChatRequest], str]:
    """A script callable: an explanation for the explainer's prompt, a JSON simulation (digits
    get 10) for the simulator's, the first ``malformed_simulations`` of which are garbage."""
    bad_left = [malformed_simulations]

    def answer(req: ChatRequest) -> str:
        user = req.messages[1].content  # the task; a retry appends the bad answer and a note
        if "Explanation of neuron behavior" in user:
            return "The main thing this neuron does is find numbers and digits."
        match = TOKEN_LIST.search(user)
        firing = FIRING_LIST.search(user)
        assert match or firing, user
        if bad_left[0] > 0:
            bad_left[0] -= 1
            return "Sure! The activations are: lots"
        if firing:  # the firing answer: only the tokens that fire, by their text
            return json.dumps({t: 10 for t in firing[1].split(" | ") if t.isdigit()})
        assert match
        lines = user[match.end() :].split("\n")[: int(match[1])]
        tokens = [line.partition("\t")[2] for line in lines]
        return json.dumps(
            {f"{i} {t}": 10 if t.strip().isdigit() else 0 for i, t in enumerate(tokens, 1)}
        )

    return answer


def test_explain_neuron_runs_on_the_scripted_llm(record: NeuronRecord) -> None:
    # No chat_logprobs: "fake:m" as a simulator is the JSON simulator.
    llm = ScriptedLLM(
        default=answer_by_prompt(malformed_simulations=1), capabilities={"chat", "json_schema"}
    )
    result = explain_neuron(
        record, explainer="fake:m", simulator="fake:m", registry=registry_for(llm)
    )

    assert result.score is not None and result.score > 0.95
    assert result.explanation.text == "numbers and digits"
    assert result.explanation.raw_output == (
        "The main thing this neuron does is find numbers and digits."
    )
    assert result.explainer.name == "llm" and result.explainer.settings["llm"] == "fake:m"
    assert result.simulator.name == "llm-json" and result.simulator.settings["llm"] == "fake:m"

    splits = split_records(record)
    assert result.explanation.scale is not None
    shown = LLMExplainer(llm).messages(splits.train, result.explanation.scale)
    assert llm.requests[0].messages == tuple(shown), "the explainer saw the train split only"
    simulated = len(splits.calibration.records) + len(splits.valid.records)
    assert len(llm.requests) == 1 + simulated + 1, "one simulation was asked twice"
    contents = [r.messages[1].content for r in llm.requests[1:]]
    assert len(set(contents)) == simulated
    first, retry = llm.requests[1], llm.requests[2]
    assert first.response_format is not None, "json_schema is offered, so it is used"
    assert retry.messages[:2] == first.messages and len(retry.messages) == 4
    assert retry.messages[2].content == "Sure! The activations are: lots"
    assert "could not be used: the output contains no JSON object" in retry.messages[3].content


@pytest.mark.parametrize("retries", [0, 2])
def test_json_simulator_gives_up_after_retries_plus_one_bad_answers(retries: int) -> None:
    llm = ScriptedLLM(default="not JSON at all")
    with pytest.raises(SimulationError, match=f"in {retries + 1} attempts?:"):
        JSONSimulator(llm, retries=retries).simulate(EXPLANATION, TOKENS)
    assert len(llm.requests) == retries + 1


def test_explain_neuron_fails_rather_than_scoring_zeros(record: NeuronRecord) -> None:
    llm = ScriptedLLM(
        default=answer_by_prompt(malformed_simulations=10**6), capabilities={"chat", "json_schema"}
    )
    with pytest.raises(SimulationError, match="'llm-json' simulator got no usable answer"):
        explain_neuron(record, explainer="fake:m", simulator="fake:m", registry=registry_for(llm))


def test_explainer_errors_come_through(record: NeuronRecord) -> None:
    llm = ScriptedLLM(script=[ConnectionError("down")])
    explainer = LLMExplainer(llm)
    with pytest.raises(ConnectionError, match="down"):
        explain_neuron(record, explainer=explainer, simulator=MockSimulator.from_truth(record))
    with pytest.raises(ScriptExhaustedError):
        explain_neuron(record, explainer=explainer, simulator=MockSimulator.from_truth(record))


def test_the_oracle_answers_the_json_simulators_firing_prompt_over_http() -> None:
    """A server without logprobs gets the JSON simulator's firing prompt: the oracle names the
    tokens its rule fires on, by their text, alone and several excerpts per request."""
    from neuron_explainer.llm.openai import OpenAILLM
    from neuron_explainer.testing import OpenAITestServer, OracleResponder

    with OpenAITestServer(api_key="k", responder=OracleResponder()) as server:
        llm = OpenAILLM(
            "m", base_url=server.base_url, api_key="k", capabilities={"chat", "json_schema"}
        )
        alone = JSONSimulator(llm)
        assert alone.answer == "firing"
        assert alone.simulate(EXPLANATION, TOKENS).expected_activations == (0, 10, 0, 0)
        batched = JSONSimulator(llm, excerpts_per_request=2)
        excerpts = [[" 3", " x", " 3"], [" y"]]
        results = asyncio.run(batched.asimulate_many(EXPLANATION, excerpts))
        assert [r.expected_activations for r in results] == [(10, 0, 10), (0,)]
        assert len(server.requests) == 2, "each answer was usable at once"
