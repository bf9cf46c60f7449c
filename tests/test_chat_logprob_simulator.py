"""The chat-logprob simulator: expected values from the top logprobs of the digits the model
writes, in both answer formats (the numbered JSON object under a schema, numbered lines);
alignment by number, retries with the problem shown, reason classes, capability checks, bad
input (no logprobs, nothing answered, a context too small) and batching."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from neuron_explainer import (
    BadRequestError,
    CapabilityError,
    ComponentInfo,
    Explanation,
    InvalidInputError,
    NeuronRecord,
    SimulationError,
    explain_neuron,
)
from neuron_explainer.interfaces import track_simulations
from neuron_explainer.llm import ChatRequest, ChatResponse
from neuron_explainer.llm.prompts import escape_token, unescape_token
from neuron_explainer.plugins import Registry
from neuron_explainer.results import SequenceSimulation, SimulationFailure
from neuron_explainer.simulators.chat_logprob import ChatLogprobSimulator
from neuron_explainer.testing import FakeProvider, ScriptedLLM, make_response, number_neuron_record

EXPLANATION = Explanation(text="numbers", explainer=ComponentInfo(name="test"))
LISTING = re.compile(r"(?:Tokens \((\d+)\)|Excerpt \d+ \((\d+) tokens\)), numbered:\n")
LINES_ONLY = {"chat", "chat_logprobs"}
ln = math.log

Alternatives = Mapping[str, float]
Row = tuple[int, str, Alternatives]  # (number, escaped token, alternatives of its value)
Corrupt = Callable[[int, int, list[Row]], None]


def listed(request: ChatRequest) -> list[list[str]]:
    """The escaped tokens of every excerpt a request lists, checking their numbers."""
    user = request.messages[1].content
    excerpts = []
    for match in LISTING.finditer(user):
        lines = user[match.end() :].split("\n")[: int(match[1] or match[2])]
        numbers, _, tokens = zip(*(line.partition("\t") for line in lines), strict=True)
        assert list(numbers) == [str(i) for i in range(1, len(lines) + 1)]
        excerpts.append(list(tokens))
    return excerpts


def answer(
    excerpts: Sequence[Sequence[Row]],
    *,
    as_json: bool,
    header: str | None = "Excerpt {i}",
    finish_reason: str = "stop",
) -> ChatResponse:
    """An answer whose value tokens have the given alternatives (the most likely written);
    every other token is certain. JSON: ``{"1 tok": v, ...}`` (nested under ``excerpt_i`` when
    several); lines: ``number<TAB>value`` (after a header line when several)."""
    tokens: list[str] = []
    logprobs: list[Alternatives] = []

    def certain(token: str) -> None:
        tokens.append(token)
        logprobs.append({token: 0.0})

    def value(alternatives: Alternatives) -> None:
        tokens.append(max(alternatives, key=lambda t: alternatives[t]))
        logprobs.append(alternatives)

    several = len(excerpts) > 1
    if as_json and several:
        certain("{")
    for i, rows in enumerate(excerpts, start=1):
        if as_json:
            certain(f'"excerpt_{i}": {{' if several else "{")
            for j, (number, shown, alternatives) in enumerate(rows):
                certain(json.dumps(f"{number} {shown.strip() or shown}") + ": ")
                value(alternatives)
                certain(", " if j + 1 < len(rows) else "}")
            if several and i < len(excerpts):
                certain(", ")
        else:
            if several and header is not None:
                certain(header.format(i=i, n=len(rows)) + "\n")
            for number, _, alternatives in rows:
                certain(f"{number}\t")
                value(alternatives)
                certain("\n")
    if as_json and several:
        certain("}")
    return make_response(logprobs=logprobs, tokens=tokens, finish_reason=finish_reason)


def levels(shown: str) -> Alternatives:
    """A neuron that fires on numbers."""
    if unescape_token(shown).strip().isdigit():
        return {"10": ln(0.8), "9": ln(0.2)}
    return {"0": ln(0.9), "1": ln(0.1)}


def responder(
    level: Callable[[str], Alternatives] = levels,
    *,
    header: str | None = "Excerpt {i}",
    corrupt: Corrupt | None = None,
) -> Callable[[ChatRequest], ChatResponse]:
    """Answers any chat-logprob request correctly from ``level``, in the format it asks for
    (JSON when it sends a schema); ``corrupt(excerpt index, number of excerpts, rows)`` may
    spoil an excerpt's rows first."""

    def reply(request: ChatRequest) -> ChatResponse:
        excerpts = []
        everything = listed(request)
        for i, shown in enumerate(everything):
            rows: list[Row] = [(j, t, level(t)) for j, t in enumerate(shown, start=1)]
            if corrupt is not None:
                corrupt(i, len(everything), rows)
            excerpts.append(rows)
        return answer(excerpts, as_json=request.response_format is not None, header=header)

    return reply


def simulate(llm: ScriptedLLM, tokens: Sequence[str], **options: Any) -> SequenceSimulation:
    return ChatLogprobSimulator(llm, **options).simulate(EXPLANATION, tokens)


def lines_llm(**options: Any) -> ScriptedLLM:
    return ScriptedLLM(capabilities=LINES_ONLY, **options)


# -- the two formats and reading the digits --------------------------------------------------------


@pytest.mark.parametrize("capabilities", [None, LINES_ONLY], ids=["json", "lines"])
def test_expected_values_from_top_logprobs(capabilities: set[str] | None) -> None:
    table = {
        " a": {"0": ln(0.6), "1": ln(0.2), '"': ln(0.2)},  # renormalised over 0 and 1
        " 7": {"8": ln(0.6), "10": ln(0.3), " 5": ln(0.1)},
        " b": {"0": ln(0.9)},
    }
    llm = ScriptedLLM(default=responder(lambda t: table[t]), capabilities=capabilities)
    simulation = simulate(llm, [" a", " 7", " b"])
    assert simulation.expected_activations == pytest.approx((0.25, 8.3, 0.0))
    assert simulation.distribution_values == ((0.0, 1.0), (5.0, 8.0, 10.0), (0.0,))
    assert simulation.distribution_probabilities is not None
    assert simulation.distribution_probabilities[0] == pytest.approx((0.75, 0.25))
    assert simulation.distribution_probabilities[1] == pytest.approx((0.1, 0.6, 0.3))
    assert simulation.scale == "simulated_0_10"
    (request,) = llm.requests
    assert (request.logprobs, request.top_logprobs, request.temperature) == (True, 20, 0.0)
    user = request.messages[1].content
    assert "Explanation: the neuron finds numbers" in user
    assert "Tokens (3), numbered:\n1\t a\n2\t 7\n3\t b\n" in user


def test_format_auto_takes_json_when_the_llm_offers_a_schema() -> None:
    assert ChatLogprobSimulator(ScriptedLLM()).format == "json"
    assert ChatLogprobSimulator(lines_llm()).format == "lines"
    assert ChatLogprobSimulator(ScriptedLLM(), format="lines").format == "lines"
    with pytest.raises(CapabilityError, match="format='json' needs 'json_schema'"):
        ChatLogprobSimulator(lines_llm(), format="json")
    with pytest.raises(InvalidInputError, match="format must be one of"):
        ChatLogprobSimulator(ScriptedLLM(), format="yaml")  # type: ignore[arg-type]


def test_the_json_format_fixes_every_property_name_in_the_schema() -> None:
    llm = ScriptedLLM(default=responder())
    tokens = [" a", '"q"', "\\", "\t", " "]
    simulate(llm, tokens)
    (request,) = llm.requests
    assert request.response_format is not None
    spec: Any = request.response_format["json_schema"]
    assert spec["strict"] is True
    schema = spec["schema"]
    assert list(schema["properties"]) == ["1 a", '2 "q"', "3 \\\\", "4 \\t", "5  "]
    assert schema["required"] == list(schema["properties"])
    assert schema["additionalProperties"] is False
    assert schema["properties"]["1 a"] == {"type": "integer", "minimum": 0, "maximum": 10}
    assert "JSON object" in request.messages[0].content
    assert lines_llm(default=responder()).requests == []


def test_ten_written_as_two_tokens_splits_the_mass_of_one() -> None:
    response = make_response(
        logprobs=[
            {"1\t": 0.0},
            {"1": ln(0.6), "0": ln(0.3), "2": ln(0.1)},
            {"0": ln(0.75), "\n": ln(0.25)},
            {"\n": 0.0},
            {"2\t": 0.0},
            {"1": ln(0.5), "10": ln(0.5)},
            {"\n": 0.0},
        ],
        tokens=["1\t", "1", "0", "\n", "2\t", "1", "\n"],
    )
    simulation = simulate(lines_llm(script=[response]), [" x", " y"])
    # x: P(10) = 0.6 * 0.75, P(1) = 0.6 * 0.25, P(0) = 0.3, P(2) = 0.1.
    # y: the model wrote 1: "1" counts as 1 and "10" as 10.
    assert simulation.expected_activations == pytest.approx((4.85, 5.5))
    assert simulation.distribution_values == ((0.0, 1.0, 2.0, 10.0), (1.0, 10.0))
    assert simulation.distribution_probabilities is not None
    assert simulation.distribution_probabilities[0] == pytest.approx((0.3, 0.15, 0.1, 0.45))


def test_digits_with_a_leading_space_or_a_merged_tab() -> None:
    response = make_response(
        logprobs=[
            {"1": 0.0},
            {"\t": 0.0},
            {" 7": ln(0.5), " 3": ln(0.5)},
            {"\n": 0.0},
            {"2": 0.0},
            {"\t7": ln(0.8), "\t0": ln(0.2)},
            {"\n": 0.0},
        ],
        tokens=["1", "\t", " 7", "\n", "2", "\t7", "\n"],
    )
    assert response.choices[0].text == "1\t 7\n2\t7\n"
    simulation = simulate(lines_llm(script=[response]), [" x", " y"])
    assert simulation.expected_activations == pytest.approx((5.0, 5.6))


# -- alignment by number ---------------------------------------------------------------------------


def test_lines_are_matched_by_number_not_position() -> None:
    def shuffle(i: int, n: int, rows: list[Row]) -> None:
        rows.reverse()  # 3, 2, 1
        rows.insert(2, (2, "x", {"10": 0.0}))  # a second line for token 2: the first counts
        rows.append((7, "x", {"10": 0.0}))  # a number outside the excerpt: ignored

    llm = lines_llm(default=responder(corrupt=shuffle))
    simulation = simulate(llm, [" a", " cat", " 5"], retries=0)
    assert simulation.expected_activations == pytest.approx((0.1, 0.1, 9.8))


def test_an_echoed_token_between_number_and_value_is_accepted() -> None:
    response = make_response(
        logprobs=[{"1\t a\t": 0.0}, {"0": 0.0}, {"\n": 0.0}, {"2\twrong\t": 0.0}, {"10": 0.0}],
        tokens=["1\t a\t", "0", "\n", "2\twrong\t", "10"],
    )
    simulation = simulate(lines_llm(script=[response]), [" a", " 5"])
    assert simulation.expected_activations == (0.0, 10.0)


def test_json_values_are_matched_by_the_number_that_starts_each_name() -> None:
    text = '{"2 whatever": 7, "1": 3, "3 5": 9, "12 x": 1}'
    tokens = re.findall(r"\d+(?=,|})|[^\d]+|\d+", text)
    logprobs: list[dict[str, float]] = [{t: 0.0} for t in tokens]
    response = make_response(logprobs=logprobs, tokens=tokens)
    assert response.choices[0].text == text
    simulation = simulate(ScriptedLLM(script=[response]), [" a", " cat", " 5"], retries=0)
    assert simulation.expected_activations == (3.0, 7.0, 9.0)


def test_a_missing_line_is_retried_with_the_problem_shown() -> None:
    def drop_second(i: int, n: int, rows: list[Row]) -> None:
        del rows[1]

    llm = lines_llm(script=[responder(corrupt=drop_second)], default=responder())
    with track_simulations() as meter:
        simulation = simulate(llm, [" a", " cat", " 5"])
    assert simulation.expected_activations == pytest.approx((0.1, 0.1, 9.8))
    first, retry = llm.requests
    assert retry.messages[:2] == first.messages and len(retry.messages) == 4
    assert retry.messages[2].role == "assistant"
    assert retry.messages[2].content == "1\t0\n3\t10\n"
    assert "no line for token 2 of 3" in retry.messages[3].content
    assert "exactly 3 lines" in retry.messages[3].content
    assert meter.stats.retried == 1 and meter.stats.retry_reasons == {"misaligned": 1}


@pytest.mark.parametrize(
    ("corrupt", "problem", "reason"),
    [
        (lambda i, n, rows: rows.pop(), "no line for token 3 of 3", "misaligned"),
        (lambda i, n, rows: rows.clear(), "the answer was empty", "empty"),
        (
            lambda i, n, rows: rows.__delitem__(slice(1, None)),
            "no line for tokens 2, 3 of 3",
            "misaligned",
        ),
        (
            lambda i, n, rows: rows.__setitem__(0, (1, "a", {"12": 0.0})),
            "no line for token 1 of 3",
            "misaligned",
        ),
        (
            lambda i, n, rows: rows.__setitem__(0, (1, "a", {"\n": 0.0})),
            "no line for token 1 of 3",
            "misaligned",
        ),
    ],
)
def test_unusable_answers_fail_after_the_retries_never_as_zeros(
    corrupt: Corrupt, problem: str, reason: str
) -> None:
    llm = lines_llm(default=responder(corrupt=corrupt))
    with pytest.raises(SimulationError, match="no usable answer from fake:scripted in 2") as info:
        simulate(llm, [" a", " cat", " 5"], retries=1)
    assert problem in str(info.value)
    assert info.value.reason == reason
    assert "'llm-chat-logprob'" in str(info.value)
    assert len(llm.requests) == 2


def test_a_json_answer_that_ignores_the_schema_is_retried_then_fails() -> None:
    prose = make_response(logprobs=[{"Sure": 0.0}, {"!": 0.0}])
    llm = ScriptedLLM(default=prose)
    with pytest.raises(SimulationError, match="no value for tokens 1, 2 of 2") as info:
        simulate(llm, [" a", " b"], retries=2)
    assert info.value.reason == "misaligned" and len(llm.requests) == 3
    retry = llm.requests[1].messages[-1].content
    assert 'one property per token, "1 ..." to "2 ..."' in retry


def test_a_number_sharing_a_token_with_the_text_before_it_is_unusable() -> None:
    merged = make_response(logprobs=[{"1\tx\t7": 0.0}, {"\n": 0.0}])
    assert merged.choices[0].text == "1\tx\t7\n"
    with pytest.raises(SimulationError, match=r"shares the token '1\\tx\\t7'") as info:
        simulate(lines_llm(default=merged), [" x"], retries=0)
    assert info.value.reason == "unparseable"


# -- bad input: one clear error --------------------------------------------------------------------


def test_no_logprobs_in_the_answer_is_an_error_at_once() -> None:
    llm = lines_llm(default="1\t0\n")
    with pytest.raises(SimulationError, match="without logprobs from fake:scripted") as info:
        simulate(llm, [" a"])
    assert info.value.reason == "no_logprobs"
    message = str(info.value)
    assert "'llm-chat-logprob'" in message and "make the server return logprobs" in message
    assert "'llm-json'" in message
    assert len(llm.requests) == 1


def test_a_model_that_answers_nothing_fails_with_what_to_change() -> None:
    llm = ScriptedLLM(default="")
    with pytest.raises(SimulationError, match="answered nothing") as info:
        simulate(llm, [" a"], retries=1)
    assert info.value.reason == "empty" and len(llm.requests) == 2
    assert "'llm-chat-logprob'" in str(info.value) and "chat template" in str(info.value)


def test_an_answer_cut_off_names_the_context() -> None:
    def cut(request: ChatRequest) -> ChatResponse:
        rows = [(1, "a", {"0": 0.0})]
        return answer([rows], as_json=False, finish_reason="length")

    with pytest.raises(SimulationError, match="larger context") as info:
        simulate(lines_llm(default=cut), [" a", " b"], retries=0)
    assert info.value.reason == "truncated"
    assert "cut off" in str(info.value)


def test_a_prompt_too_long_for_the_context_is_one_clear_error() -> None:
    refusal = BadRequestError(
        "HTTP 400: the request exceeds the available context size, try increasing it",
        status_code=400,
    )
    llm = ScriptedLLM(default=refusal)
    with pytest.raises(BadRequestError) as info:
        simulate(llm, [" a"])
    message = str(info.value)
    assert "'llm-chat-logprob' simulator's prompt does not fit the context of fake:scripted" in (
        message
    )
    assert "larger context" in message and "exceeds the available context size" in message
    assert info.value.status_code == 400 and len(llm.requests) == 1
    other = ScriptedLLM(default=BadRequestError("HTTP 404: unknown model", status_code=404))
    with pytest.raises(BadRequestError, match=r"^HTTP 404: unknown model$"):
        simulate(other, [" a"])


NASTY = ["\t", "\n", "\\", "\x00", "\ufffd", " ", "<end>", '"', "\\t", " 7"]


@pytest.mark.parametrize("capabilities", [None, LINES_ONLY], ids=["json", "lines"])
def test_nasty_tokens_are_listed_escaped_and_align(capabilities: set[str] | None) -> None:
    llm = ScriptedLLM(default=responder(), capabilities=capabilities)
    simulation = simulate(llm, NASTY)
    assert simulation.tokens == tuple(NASTY)
    assert simulation.expected_activations[-1] == pytest.approx(9.8)
    assert max(simulation.expected_activations[:-1]) == pytest.approx(0.1)
    assert listed(llm.requests[0]) == [[escape_token(t) for t in NASTY]]


# -- capabilities and construction -----------------------------------------------------------------


def test_a_backend_without_chat_logprobs_is_refused_up_front() -> None:
    llm = ScriptedLLM(capabilities={"chat", "json_schema"})
    with pytest.raises(
        CapabilityError,
        match=r"the 'llm-chat-logprob' simulator .* needs 'chat_logprobs', which fake:scripted",
    ):
        ChatLogprobSimulator(llm)
    registry = Registry(entry_points=False, plugins=[FakeProvider(llm)])
    with pytest.raises(CapabilityError, match="chat_logprobs"):
        registry.simulator("chat-logprob", llm=registry.llm("fake:m"))
    assert llm.requests == []


def test_construction_errors_and_settings() -> None:
    with pytest.raises(InvalidInputError, match="needs an LLM"):
        ChatLogprobSimulator()
    with pytest.raises(InvalidInputError, match="top_logprobs"):
        ChatLogprobSimulator(ScriptedLLM(), top_logprobs=21)
    with pytest.raises(InvalidInputError, match="excerpts_per_request"):
        ChatLogprobSimulator(ScriptedLLM(), excerpts_per_request=0)
    registry = Registry(entry_points=False, plugins=[FakeProvider()])
    simulator = registry.simulator("chat-logprob", llm=registry.llm("fake:m"), top_logprobs=5)
    assert isinstance(simulator, ChatLogprobSimulator)
    assert simulator.info.name == "llm-chat-logprob"
    assert simulator.info.prompt_version == "chat-logprob-simulator/2"
    assert simulator.info.settings == {
        "llm": "fake:m",
        "retries": 2,
        "top_logprobs": 5,
        "excerpts_per_request": 1,
        "format": "json",
    }
    assert simulator.simulate(EXPLANATION, []).tokens == ()


# -- batching --------------------------------------------------------------------------------------

EXCERPTS = [
    [" a", " 1", " b"],
    [" 22"],
    [],
    NASTY,
    [" c", " d", " 3", " e"],
    [" 4", " 5"],
    [" f"],
]


def simulate_many(llm: ScriptedLLM, per_request: int) -> list[SequenceSimulation]:
    simulator = ChatLogprobSimulator(llm, excerpts_per_request=per_request)
    return list(asyncio.run(simulator.asimulate_many(EXPLANATION, EXCERPTS)))


@pytest.mark.parametrize(
    ("capabilities", "header"),
    [
        (None, None),
        (LINES_ONLY, "Excerpt {i}"),
        (LINES_ONLY, "**Excerpt {i} ({n} tokens):**"),
        (LINES_ONLY, "excerpt #{i}"),
        (LINES_ONLY, None),  # no headers: a number that does not increase starts an excerpt
    ],
)
def test_several_excerpts_per_request_give_identical_results(
    capabilities: set[str] | None, header: str | None
) -> None:
    alone = ScriptedLLM(default=responder(), capabilities=capabilities)
    batched = ScriptedLLM(default=responder(header=header), capabilities=capabilities)
    assert simulate_many(alone, 1) == simulate_many(batched, 3)
    assert len(alone.requests) == 6, "one request per non-empty excerpt"
    assert len(batched.requests) == 2, "six non-empty excerpts, three per request"
    assert [len(listed(r)) for r in batched.requests] == [3, 3]
    user = batched.requests[0].messages[1].content
    assert "Excerpt 1 (3 tokens)" in user and "Excerpt 3 (10 tokens)" in user
    if capabilities is None:
        spec: Any = batched.requests[0].response_format
        properties = spec["json_schema"]["schema"]["properties"]
        assert list(properties) == ["excerpt_1", "excerpt_2", "excerpt_3"]
        assert list(properties["excerpt_2"]["properties"]) == ["1 22"]


@pytest.mark.parametrize("capabilities", [None, LINES_ONLY], ids=["json", "lines"])
def test_a_failed_excerpt_in_a_batch_is_retried_alone(capabilities: set[str] | None) -> None:
    def spoil_second(i: int, n: int, rows: list[Row]) -> None:
        if n > 1 and i == 1:
            rows.pop()

    reference = simulate_many(ScriptedLLM(default=responder(), capabilities=capabilities), 1)
    llm = ScriptedLLM(default=responder(corrupt=spoil_second), capabilities=capabilities)
    with track_simulations() as meter:
        assert simulate_many(llm, 3) == reference
    assert [len(listed(r)) for r in llm.requests] == [3, 3, 1, 1]
    assert {tuple(listed(r)[0]) for r in llm.requests[2:]} == {
        (" 22",),
        (" 4", " 5"),
    }, "the second excerpt of each batch, alone"
    assert meter.stats.retry_reasons == {"batch_failed": 2}


def test_each_excerpt_keeps_its_own_outcome() -> None:
    def fail_on_b(request: ChatRequest) -> ChatResponse:
        if " b" in listed(request)[0]:
            return make_response(logprobs=[{"nothing": 0.0}])
        return responder()(request)

    simulator = ChatLogprobSimulator(lines_llm(default=fail_on_b), retries=0)
    outcomes = asyncio.run(simulator.asimulate_each(EXPLANATION, [[" a"], [" b"], [" 7"]]))
    assert isinstance(outcomes[0], SequenceSimulation)
    assert isinstance(outcomes[2], SequenceSimulation)
    assert outcomes[2].expected_activations == pytest.approx((9.8,))
    failure = outcomes[1]
    assert isinstance(failure, SimulationFailure) and failure.reason == "misaligned"
    assert "no line for token 1 of 1" in failure.message
    with pytest.raises(SimulationError, match="no line for token 1 of 1"):
        asyncio.run(simulator.asimulate_many(EXPLANATION, [[" a"], [" b"]]))


def test_read_reports_each_excerpts_problem() -> None:
    simulator = ChatLogprobSimulator(lines_llm(), excerpts_per_request=2)
    rows: list[Row] = [(1, "a", {"0": 0.0}), (1, "c", {"0": 0.0})]
    reply = answer([rows], as_json=False)
    outcomes = simulator.read(reply.choices[0], [[" a", " b"], [" c"]])
    assert outcomes[0] == "no line for token 2 of 2"
    assert isinstance(outcomes[1], SequenceSimulation)


# -- end to end ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def number_record() -> NeuronRecord:
    return number_neuron_record()


@pytest.mark.parametrize("capabilities", [None, LINES_ONLY], ids=["json", "lines"])
def test_explain_neuron_with_the_chat_logprob_simulator(
    number_record: NeuronRecord, capabilities: set[str] | None
) -> None:
    simulate_answer = responder()

    def reply(request: ChatRequest) -> str | ChatResponse:
        if "Explanation of neuron behavior" in request.messages[-1].content:
            return "numbers."
        return simulate_answer(request)

    llm = ScriptedLLM(default=reply, capabilities=capabilities)
    registry = Registry(entry_points=False, plugins=[FakeProvider(llm)])
    simulator = registry.simulator(
        "llm-chat-logprob", llm=registry.llm("fake:m"), excerpts_per_request=5
    )
    result = explain_neuron(
        number_record, explainer="fake:m", simulator=simulator, registry=registry
    )
    assert result.score is not None and result.score > 0.95
    assert result.simulator.name == "llm-chat-logprob"
    sequence = result.scored.sequences[0].simulation
    assert sequence.distribution_values is not None
