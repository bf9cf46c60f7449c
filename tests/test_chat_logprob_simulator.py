"""The chat-logprob simulator: expected values from the top logprobs of the digits the model
writes, alignment of the echoed tokens, retries, capability checks and batching."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable, Mapping, Sequence

import pytest

from neuron_explainer import (
    CapabilityError,
    ComponentInfo,
    Explanation,
    InvalidInputError,
    NeuronRecord,
    SimulationError,
    explain_neuron,
)
from neuron_explainer.llm import ChatRequest, ChatResponse
from neuron_explainer.llm.prompts import escape_token
from neuron_explainer.plugins import Registry
from neuron_explainer.simulators.chat_logprob import ChatLogprobSimulator
from neuron_explainer.testing import FakeProvider, ScriptedLLM, make_response, number_neuron_record

EXPLANATION = Explanation(text="numbers", explainer=ComponentInfo(name="test"))
LISTING = re.compile(r"(?:Tokens \((\d+)\)|Excerpt \d+ \((\d+) tokens\)), one per line:\n<start>\n")
ln = math.log

Alternatives = Mapping[str, float]


def listed(request: ChatRequest) -> list[list[str]]:
    """The escaped tokens of every excerpt a request lists (read by count, so a token shown as
    ``<end>`` cannot end a listing early)."""
    user = request.messages[1].content
    return [user[m.end() :].split("\n")[: int(m[1] or m[2])] for m in LISTING.finditer(user)]


def lines_response(
    excerpts: Sequence[Sequence[tuple[str, Alternatives]]],
    *,
    headers: bool,
    header: str = "Excerpt {i}",
) -> ChatResponse:
    """An answer of ``echo<TAB>number`` lines whose number token has the given alternatives
    (the most likely is the one written); every other token is certain."""
    tokens: list[str] = []
    logprobs: list[Alternatives] = []

    def certain(token: str) -> None:
        tokens.append(token)
        logprobs.append({token: 0.0})

    for i, rows in enumerate(excerpts, start=1):
        if headers:
            certain(header.format(i=i, n=len(rows)))
            certain("\n")
        for echo, alternatives in rows:
            if echo:
                certain(echo)
            certain("\t")
            tokens.append(max(alternatives, key=lambda t: alternatives[t]))
            logprobs.append(alternatives)
            certain("\n")
    return make_response(logprobs=logprobs, tokens=tokens)


def levels(shown: str) -> Alternatives:
    """A neuron that fires on numbers."""
    if shown.strip().isdigit():
        return {"10": ln(0.8), "9": ln(0.2)}
    return {"0": ln(0.9), "1": ln(0.1)}


def responder(
    level: Callable[[str], Alternatives] = levels,
    *,
    headers: bool = True,
    header: str = "Excerpt {i}",
    corrupt: Callable[[int, int, list[tuple[str, Alternatives]]], None] | None = None,
) -> Callable[[ChatRequest], ChatResponse]:
    """Answers any chat-logprob request correctly from ``level``; ``corrupt(excerpt index,
    number of excerpts, rows)`` may spoil an excerpt's rows first."""

    def answer(request: ChatRequest) -> ChatResponse:
        excerpts = []
        everything = listed(request)
        for i, shown in enumerate(everything):
            rows = [(t, level(t)) for t in shown]
            if corrupt is not None:
                corrupt(i, len(everything), rows)
            excerpts.append(rows)
        return lines_response(excerpts, headers=headers and len(excerpts) > 1, header=header)

    return answer


def simulate(llm: ScriptedLLM, tokens: Sequence[str], **options: int):  # type: ignore[no-untyped-def]
    return ChatLogprobSimulator(llm, **options).simulate(EXPLANATION, tokens)


# -- reading the digits ----------------------------------------------------------------------------


def test_expected_values_from_top_logprobs() -> None:
    table = {
        " a": {"0": ln(0.6), "1": ln(0.2), "\n": ln(0.2)},  # renormalised over 0 and 1
        " 7": {"8": ln(0.6), "10": ln(0.3), " 5": ln(0.1)},
        " b": {"0": ln(0.9)},
    }
    llm = ScriptedLLM(default=responder(lambda t: table[t]))
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
    assert "Tokens (3), one per line:\n<start>\n a\n 7\n b\n<end>" in user


def test_ten_written_as_two_tokens_splits_the_mass_of_one() -> None:
    response = make_response(
        logprobs=[
            {" x": 0.0},
            {"\t": 0.0},
            {"1": ln(0.6), "0": ln(0.3), "2": ln(0.1)},
            {"0": ln(0.75), "\n": ln(0.25)},
            {"\n": 0.0},
            {" y": 0.0},
            {"\t": 0.0},
            {"1": ln(0.5), "10": ln(0.5)},
            {"\n": 0.0},
        ],
        tokens=[" x", "\t", "1", "0", "\n", " y", "\t", "1", "\n"],
    )
    simulation = simulate(ScriptedLLM(script=[response]), [" x", " y"])
    # x: P(10) = 0.6 * 0.75, P(1) = 0.6 * 0.25, P(0) = 0.3, P(2) = 0.1.
    # y: the model wrote 1: "1" counts as 1 and "10" as 10.
    assert simulation.expected_activations == pytest.approx((4.85, 5.5))
    assert simulation.distribution_values == ((0.0, 1.0, 2.0, 10.0), (1.0, 10.0))
    assert simulation.distribution_probabilities is not None
    assert simulation.distribution_probabilities[0] == pytest.approx((0.3, 0.15, 0.1, 0.45))


def test_digits_with_a_leading_space_or_a_merged_tab() -> None:
    response = make_response(
        logprobs=[
            {" x": 0.0},
            {"\t": 0.0},
            {" 7": ln(0.5), " 3": ln(0.5)},
            {"\n": 0.0},
            {" y": 0.0},
            {"\t7": ln(0.8), "\t0": ln(0.2)},
            {"\n": 0.0},
        ],
        tokens=[" x", "\t", " 7", "\n", " y", "\t7", "\n"],
    )
    assert response.choices[0].text == " x\t 7\n y\t7\n"
    simulation = simulate(ScriptedLLM(script=[response]), [" x", " y"])
    assert simulation.expected_activations == pytest.approx((5.0, 5.6))


# -- alignment and retries -------------------------------------------------------------------------


def test_a_misaligned_answer_is_retried_with_the_problem_shown() -> None:
    def wrong_echo(i: int, n: int, rows: list[tuple[str, Alternatives]]) -> None:
        rows[1] = (" dog", rows[1][1])

    llm = ScriptedLLM(script=[responder(corrupt=wrong_echo)], default=responder())
    simulation = simulate(llm, [" a", " cat", " 5"])
    assert simulation.expected_activations == pytest.approx((0.1, 0.1, 9.8))
    first, retry = llm.requests
    assert retry.messages[:2] == first.messages and len(retry.messages) == 4
    assert retry.messages[2].role == "assistant"
    assert retry.messages[2].content.startswith(" a\t0\n dog\t0\n")
    assert "line 2 shows the token 'dog' but token 2 is 'cat'" in retry.messages[3].content
    assert "exactly 3 lines" in retry.messages[3].content


@pytest.mark.parametrize(
    ("corrupt", "problem"),
    [
        (lambda i, n, rows: rows.pop(), "2 token lines for 3 tokens"),
        (lambda i, n, rows: rows.append((" extra", {"0": 0.0})), "4 token lines for 3 tokens"),
        (lambda i, n, rows: rows.__setitem__(0, (" a", {"12": 0.0})), "does not end in a number"),
        (lambda i, n, rows: rows.reverse(), "line 1 shows the token '5' but token 1 is 'a'"),
    ],
)
def test_unusable_answers_fail_after_the_retries_never_as_zeros(
    corrupt: Callable[[int, int, list[tuple[str, Alternatives]]], None], problem: str
) -> None:
    llm = ScriptedLLM(default=responder(corrupt=corrupt))
    with pytest.raises(SimulationError, match="no usable logprob simulation in 2 attempts") as info:
        simulate(llm, [" a", " cat", " 5"], retries=1)
    assert problem in str(info.value)
    assert len(llm.requests) == 2


def test_a_number_sharing_a_token_with_the_echo_is_unusable() -> None:
    merged = make_response(logprobs=[{" x\t7": 0.0}, {"\n": 0.0}])
    llm = ScriptedLLM(default=merged)
    with pytest.raises(SimulationError, match=r"shares the token ' x\\t7'"):
        simulate(llm, [" x"], retries=0)


def test_no_logprobs_in_the_answer_is_an_error_at_once() -> None:
    llm = ScriptedLLM(default=" a\t0\n")
    with pytest.raises(SimulationError, match="returned no logprobs"):
        simulate(llm, [" a"])
    assert len(llm.requests) == 1


NASTY = ["\t", "\n", "\\", "\x00", "\ufffd", " ", "<end>", "a<end>b", "\\t", " 7"]


def test_nasty_tokens_are_echoed_escaped_and_align() -> None:
    llm = ScriptedLLM(default=responder())
    simulation = simulate(llm, NASTY)
    assert simulation.tokens == tuple(NASTY)
    assert simulation.expected_activations[-1] == pytest.approx(9.8)
    assert listed(llm.requests[0]) == [[escape_token(t) for t in NASTY]]


def test_an_unprintable_token_matches_any_echo() -> None:
    def mangle(i: int, n: int, rows: list[tuple[str, Alternatives]]) -> None:
        rows[0] = ("?", rows[0][1])

    llm = ScriptedLLM(default=responder(corrupt=mangle))
    assert simulate(llm, ["\ufffd", " b"]).tokens == ("\ufffd", " b")
    with pytest.raises(SimulationError, match="shows the token '\\?'"):
        simulate(llm, [" a", " b"], retries=0)


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
    assert simulator.info.settings == {
        "llm": "fake:m",
        "retries": 2,
        "top_logprobs": 5,
        "excerpts_per_request": 1,
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


def simulate_many(llm: ScriptedLLM, per_request: int) -> list[object]:
    simulator = ChatLogprobSimulator(llm, excerpts_per_request=per_request)
    return list(asyncio.run(simulator.asimulate_many(EXPLANATION, EXCERPTS)))


@pytest.mark.parametrize("header", ["Excerpt {i}", "**Excerpt {i} ({n} tokens):**", "excerpt #{i}"])
def test_several_excerpts_per_request_give_identical_results(header: str) -> None:
    alone = ScriptedLLM(default=responder())
    batched = ScriptedLLM(default=responder(header=header))
    assert simulate_many(alone, 1) == simulate_many(batched, 3)
    assert len(alone.requests) == 6, "one request per non-empty excerpt"
    assert len(batched.requests) == 2, "six non-empty excerpts, three per request"
    assert [len(listed(r)) for r in batched.requests] == [3, 3]
    user = batched.requests[0].messages[1].content
    assert "Excerpt 1 (3 tokens)" in user and "Excerpt 3 (10 tokens)" in user


def test_a_failed_excerpt_in_a_batch_is_retried_alone() -> None:
    def spoil_second(i: int, n: int, rows: list[tuple[str, Alternatives]]) -> None:
        if n > 1 and i == 1:
            rows.pop()

    reference = simulate_many(ScriptedLLM(default=responder()), 1)
    llm = ScriptedLLM(default=responder(corrupt=spoil_second))
    assert simulate_many(llm, 3) == reference
    assert [len(listed(r)) for r in llm.requests] == [3, 3, 1, 1]
    assert {tuple(listed(r)[0]) for r in llm.requests[2:]} == {
        (" 22",),
        (" 4", " 5"),
    }, "the second excerpt of each batch, alone"


def test_a_batched_answer_without_headers_is_split_by_count() -> None:
    reference = simulate_many(ScriptedLLM(default=responder()), 1)
    llm = ScriptedLLM(default=responder(headers=False))
    assert simulate_many(llm, 10) == reference
    assert len(llm.requests) == 1

    # Without headers and with a line missing, no excerpt can be placed: each is asked alone.
    def drop_one(i: int, n: int, rows: list[tuple[str, Alternatives]]) -> None:
        if n > 1 and i == 0:
            rows.pop()

    short = ScriptedLLM(default=responder(headers=False, corrupt=drop_one))
    simulator = ChatLogprobSimulator(short, excerpts_per_request=2)
    simulations = asyncio.run(simulator.asimulate_many(EXPLANATION, [[" a", " b"], [" c"]]))
    assert [s.tokens for s in simulations] == [(" a", " b"), (" c",)]
    assert [len(listed(r)) for r in short.requests] == [2, 1, 1]
    answer = lines_response([[(" a", {"0": 0.0}), (" c", {"0": 0.0})]], headers=False)
    assert (
        simulator.read(answer.choices[0], [[" a", " b"], [" c"]])
        == ["the answer has no 'Excerpt i' headers and 2 token lines for 3 tokens"] * 2
    )


# -- end to end ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def number_record() -> NeuronRecord:
    return number_neuron_record()


def test_explain_neuron_with_the_chat_logprob_simulator(number_record: NeuronRecord) -> None:
    simulate_answer = responder()

    def answer(request: ChatRequest) -> str | ChatResponse:
        if "Explanation of neuron behavior" in request.messages[-1].content:
            return "numbers."
        return simulate_answer(request)

    llm = ScriptedLLM(default=answer)
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
