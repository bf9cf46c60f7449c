"""The all-at-once (prompt-logprob) simulator: the prompt and its placeholder offsets, expected
values from scored prompts, alignment failures; reading one generation per placeholder
(llama.cpp's prefix logprobs, on the test server); and ScriptedLLM's prompt-logprob script."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Mapping, Sequence

import pytest

from neuron_explainer import (
    CapabilityError,
    ComponentInfo,
    Explanation,
    InvalidInputError,
    SimulationError,
    explain_neuron,
    split_records,
)
from neuron_explainer.llm import PromptLogprobsRequest, PromptLogprobsResponse
from neuron_explainer.llm.few_shot import CONTRASTING_EXAMPLES, FEW_SHOT_EXAMPLES
from neuron_explainer.llm.llamacpp import LlamaCppLLM
from neuron_explainer.llm.openai import OpenAILLM
from neuron_explainer.llm.prompts import escape_token
from neuron_explainer.llm.usage import track_usage
from neuron_explainer.plugins import Registry
from neuron_explainer.simulators.prompt_logprob import (
    PLACEHOLDER,
    PromptLogprobSimulator,
    build_all_at_once_prompt,
)
from neuron_explainer.testing import (
    FakeProvider,
    MockExplainer,
    OpenAITestServer,
    Reply,
    ScriptedLLM,
    ScriptExhaustedError,
    make_prompt_response,
    number_neuron_record,
    split_text,
)
from neuron_explainer.testing.server import ReceivedRequest

EXPLANATION = Explanation(text="numbers", explainer=ComponentInfo(name="test"))
NASTY = ["\t", "\n", "\\", "\x00", "\ufffd", " ", "<end>", "unknown", " 7"]
ln = math.log


def test_the_prompt_and_its_placeholder_offsets() -> None:
    prompt, offsets = build_all_at_once_prompt(EXPLANATION, NASTY)
    assert len(offsets) == len(NASTY) and offsets == sorted(offsets)
    for token, offset in zip(NASTY, offsets, strict=True):
        assert prompt[offset : offset + len(PLACEHOLDER)] == PLACEHOLDER
        line_start = prompt.rindex("\n", 0, offset) + 1
        assert prompt[line_start:offset] == f"{escape_token(token)}\t"
        assert prompt[offset + len(PLACEHOLDER)] == "\n"
    header = f"Neuron {len(CONTRASTING_EXAMPLES) + 1}\n"
    target = prompt.split(header, 1)[1]
    assert target.startswith(
        f"Explanation of neuron {len(CONTRASTING_EXAMPLES) + 1} behavior: the main thing this "
        "neuron does is find numbers\nActivations:\n<start>\n"
    )
    assert target.endswith("\tunknown\n<end>")
    assert target.count("\tunknown\n") == len(NASTY)
    # The examples come first (the contrasting ones by default), with their real numbers.
    for example in CONTRASTING_EXAMPLES:
        assert f"does is find {example.explanation}\n" in prompt
        for token, level in example.records[0]:
            assert f"\n{escape_token(token)}\t{level}\n" in prompt
    paper, _ = build_all_at_once_prompt(EXPLANATION, NASTY, FEW_SHOT_EXAMPLES)
    assert all(f"does is find {e.explanation}\n" in paper for e in FEW_SHOT_EXAMPLES)
    assert not any(f"does is find {e.explanation}\n" in paper for e in CONTRASTING_EXAMPLES)
    assert "\x00" not in prompt
    assert build_all_at_once_prompt("numbers", NASTY) == (prompt, offsets)
    bare, bare_offsets = build_all_at_once_prompt("numbers", [" a"], examples=())
    assert "Neuron 1\n" in bare and bare[bare_offsets[0] :] == "unknown\n<end>"


def digits_at(
    offsets: list[int], tables: Sequence[Mapping[str, float]]
) -> dict[int, Mapping[str, float]]:
    return dict(zip(offsets, tables, strict=True))


def test_expected_values_from_scored_placeholders() -> None:
    tokens = [" a", " 7", " b"]
    prompt, offsets = build_all_at_once_prompt(EXPLANATION, tokens)
    tables = [
        {"0": ln(0.5), "unknown": ln(0.3), "1": ln(0.2)},  # renormalised: 0 -> 5/7, 1 -> 2/7
        {"8": ln(0.4), " 10": ln(0.4), "unknown": ln(0.1), "0": ln(0.1)},
        {"0": ln(0.9)},
    ]
    llm = ScriptedLLM(
        prompt_script=[make_prompt_response(prompt, top_logprobs=digits_at(offsets, tables))]
    )
    assert "prompt_logprobs" in llm.capabilities
    simulation = PromptLogprobSimulator(llm).simulate(EXPLANATION, tokens)
    assert simulation.expected_activations == pytest.approx((2 / 7, (3.2 + 4.0) / 0.9, 0.0))
    assert simulation.distribution_values == ((0.0, 1.0), (0.0, 8.0, 10.0), (0.0,))
    assert simulation.distribution_probabilities is not None
    assert simulation.distribution_probabilities[1] == pytest.approx((1 / 9, 4 / 9, 4 / 9))
    (request,) = llm.prompt_requests
    assert request == PromptLogprobsRequest(prompt=prompt, top_logprobs=15)
    assert llm.requests == [], "no chat request: nothing is generated"


def scored_by_rule(request: PromptLogprobsRequest) -> PromptLogprobsResponse:
    """A responder: every placeholder after a digit token predicts 10, others 0."""

    def top(offset: int, token: str) -> Mapping[str, float] | None:
        if token != PLACEHOLDER:
            return None
        line = request.prompt[request.prompt.rindex("\n", 0, offset) + 1 : offset]
        if line.strip().isdigit():
            return {"10": ln(0.9), "9": ln(0.1)}
        return {"0": ln(0.95), "1": ln(0.05)}

    return make_prompt_response(request.prompt, top_logprobs=top)


def test_explain_neuron_with_the_all_at_once_simulator() -> None:
    llm = ScriptedLLM(prompt_default=scored_by_rule)
    registry = Registry(entry_points=False, plugins=[FakeProvider(llm)])
    simulator = registry.simulator("all-at-once", llm=registry.llm("fake:m"))
    assert isinstance(simulator, PromptLogprobSimulator)
    assert simulator.info.settings == {
        "llm": "fake:m",
        "top_logprobs": 15,
        "examples": "contrasting",
    }
    record = number_neuron_record()
    result = explain_neuron(record, explainer=MockExplainer("numbers"), simulator=simulator)
    assert result.score is not None and result.score > 0.95
    assert result.simulator.name == "llm-prompt-logprob"
    calibration = split_records(record).calibration.records
    assert len(llm.prompt_requests) == len(calibration) + len(result.scored.sequences)


def merge_tab_and_placeholder(text: str) -> list[str]:
    """A tokenizer that glues a tab to the word after it (as some BPEs do)."""
    pieces = split_text(text)
    merged: list[str] = []
    for piece in pieces:
        if merged and merged[-1] == "\t" and piece[:1].isalpha():
            merged[-1] += piece
        else:
            merged.append(piece)
    return merged


def test_a_tokenizer_that_shifts_the_placeholder_is_an_alignment_failure() -> None:
    def shifted(request: PromptLogprobsRequest) -> PromptLogprobsResponse:
        return make_prompt_response(
            request.prompt,
            split=merge_tab_and_placeholder,
            top_logprobs=lambda offset, token: {"\t0": ln(0.9), "\t1": ln(0.1)},
        )

    llm = ScriptedLLM(prompt_default=shifted)
    with pytest.raises(
        SimulationError,
        match=r"fake:scripted: alignment failure at token 1 \(' a'\): no prompt token starts at "
        r"the placeholder's character offset \d+",
    ) as info:
        PromptLogprobSimulator(llm).simulate(EXPLANATION, [" a", " b"])
    assert "'\\tunknown'" in str(info.value), "the tokens nearby are named"


def test_a_placeholder_without_digits_is_a_failure_not_a_zero() -> None:
    tokens = [" a", " b"]
    prompt, offsets = build_all_at_once_prompt(EXPLANATION, tokens)
    tables = [{"0": 0.0}, {"unknown": ln(0.9), "none": ln(0.1)}]
    llm = ScriptedLLM(
        prompt_default=make_prompt_response(prompt, top_logprobs=digits_at(offsets, tables))
    )
    with pytest.raises(SimulationError, match=r"no activation number .* at token 2 \(' b'\)"):
        PromptLogprobSimulator(llm).simulate(EXPLANATION, tokens)


def test_a_backend_without_prompt_logprobs_is_refused_up_front() -> None:
    llm = ScriptedLLM()
    with pytest.raises(
        CapabilityError,
        match=r"the 'llm-prompt-logprob' \(all-at-once\) simulator .* needs 'prompt_logprobs'",
    ):
        PromptLogprobSimulator(llm)
    with pytest.raises(InvalidInputError, match="needs an LLM"):
        PromptLogprobSimulator()
    with pytest.raises(InvalidInputError, match="top_logprobs"):
        PromptLogprobSimulator(ScriptedLLM(prompt_default=scored_by_rule), top_logprobs=0)
    assert (
        PromptLogprobSimulator(ScriptedLLM(prompt_default=scored_by_rule))
        .simulate(EXPLANATION, [])
        .tokens
        == ()
    )


# -- ScriptedLLM's prompt-logprob script -----------------------------------------------------------


def test_scripted_prompt_logprobs() -> None:
    request = PromptLogprobsRequest(prompt="a\tunknown")
    canned = make_prompt_response("a\tunknown", top_logprobs={2: {"unknown": -0.5, "7": -1.0}})
    assert [(t.token, t.offset) for t in canned.tokens] == [("a", 0), ("\t", 1), ("unknown", 2)]
    assert canned.tokens[2].logprob == -0.5 and canned.tokens[0].top_logprobs == ()
    assert [t.token for t in canned.tokens[2].top_logprobs] == ["unknown", "7"]
    assert canned.usage.prompt_tokens == 3
    assert ScriptedLLM.prompt_response is make_prompt_response

    async def later(r: PromptLogprobsRequest) -> PromptLogprobsResponse:
        return canned

    llm = ScriptedLLM(prompt_script=[canned, ValueError("boom"), later])
    assert llm.prompt_default is None
    assert asyncio.run(llm.aprompt_logprobs(request)) == canned
    with pytest.raises(ValueError, match="boom"):
        asyncio.run(llm.aprompt_logprobs(request))
    assert asyncio.run(llm.aprompt_logprobs(request)) == canned
    with pytest.raises(ScriptExhaustedError, match="no prompt_default"):
        asyncio.run(llm.aprompt_logprobs(request))
    llm.add_prompt(canned)
    llm.prompt_default = canned
    assert asyncio.run(llm.aprompt_logprobs(request)) == canned
    assert asyncio.run(llm.with_model("other").aprompt_logprobs(request)) == canned
    assert len(llm.prompt_requests) == 6

    refusing = ScriptedLLM(prompt_default=canned, capabilities={"chat"})
    with pytest.raises(CapabilityError, match="does not offer 'prompt_logprobs'"):
        asyncio.run(refusing.aprompt_logprobs(request))
    assert ScriptedLLM().capabilities == {"chat", "chat_logprobs", "json_schema"}

    with pytest.raises(InvalidInputError, match="concatenate"):
        make_prompt_response("abc", split=lambda text: ["a", "c"])
    with pytest.raises(InvalidInputError, match="finite and <= 0"):
        make_prompt_response("abc", top_logprobs={0: {"abc": 0.5}})
    bad = ScriptedLLM(prompt_default=lambda r: "not a response")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="must be a PromptLogprobsResponse"):
        asyncio.run(bad.aprompt_logprobs(request))
    assert "".join(split_text("Hi there,\t7 unknown\n__x")) == "Hi there,\t7 unknown\n__x"
    assert re.fullmatch(r"\d", split_text("12")[1])


# -- reading one generation per placeholder (llama.cpp's prefix logprobs) ------------------------


def generated_by_rule(request: ReceivedRequest) -> Reply | None:
    """llama.cpp's /completion on the test server: after a digit token's tab it would write
    9 (or 'unknown'), after any other token 0."""
    if request.endpoint != "completion":
        return None
    prompt = request.body["prompt"]
    line = prompt[prompt.rindex("\n") + 1 :]
    assert line.endswith("\t"), "every prompt ends where a placeholder would start"
    if line.strip().isdigit():
        return Reply(content="9", top_logprobs=[{"9": ln(0.6), "unknown": ln(0.3), "1": ln(0.2)}])
    return Reply(content="0", top_logprobs=[{"0": ln(0.9), "unknown": ln(0.1)}])


def test_the_prefix_reading_generates_one_token_at_each_placeholder() -> None:
    tokens = [" a", " 7", " b"]
    prompt, offsets = build_all_at_once_prompt(EXPLANATION, tokens)
    with OpenAITestServer(slots=1, responder=generated_by_rule) as server:
        llm = LlamaCppLLM("qwen", base_url=server.base_url, cache=False)
        simulator = PromptLogprobSimulator(llm)
        assert simulator.digits == "prefix_logprobs"
        assert simulator.info.settings["digits"] == "prefix_logprobs"
        with track_usage() as meter:
            simulation = simulator.simulate(EXPLANATION, tokens)
        bodies = [r.body for r in server.requests]
    assert [b["prompt"] for b in bodies] == [prompt[:o] for o in offsets]
    assert all(b["n_probs"] == 15 and b["n_predict"] == 1 for b in bodies)
    # The values among the alternatives, renormalised (9 and 1 for the digit; 0 elsewhere).
    assert simulation.expected_activations == pytest.approx((0.0, (9 * 0.6 + 0.2) / 0.8, 0.0))
    assert simulation.distribution_values == ((0.0,), (1.0, 9.0), (0.0,))
    assert meter.summary.calls == 3 and meter.summary.cached_tokens > 0
    estimate = simulator.estimate(EXPLANATION, [tokens, [], [" c"]])
    assert estimate.requests == 4 and estimate.completion_tokens == 4
    assert estimate.prompt_tokens > 4 * len(prompt[: offsets[0]]) // 5


def test_auto_reads_prompt_logprobs_first_then_prefixes() -> None:
    both = OpenAILLM(
        "m",
        base_url="http://127.0.0.1:9/v1",
        capabilities={"chat", "prompt_logprobs", "prefix_logprobs"},
    )
    assert PromptLogprobSimulator(both).digits == "top_logprobs"
    assert PromptLogprobSimulator(both, digits="prefix_logprobs").digits == "prefix_logprobs"
    llamacpp = LlamaCppLLM("m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(CapabilityError, match="needs 'prompt_logprobs'"):
        PromptLogprobSimulator(llamacpp, digits="top_logprobs")
    with pytest.raises(CapabilityError, match="needs 'prefix_logprobs'"):
        PromptLogprobSimulator(ScriptedLLM(prompt_default=scored_by_rule), digits="prefix_logprobs")


def test_a_server_offering_neither_reading_gets_an_error_saying_what_to_change() -> None:
    llm = OpenAILLM("qwen", base_url="http://127.0.0.1:8080/v1")
    with pytest.raises(CapabilityError) as info:
        PromptLogprobSimulator(llm)
    message = str(info.value)
    assert "the 'llm-prompt-logprob' (all-at-once) simulator" in message
    assert "openai:qwen at http://127.0.0.1:8080/v1 offers neither" in message
    assert "'llamacpp:qwen'" in message and "'prompt_logprobs'" in message
    assert "'llm-json'" in message


def test_a_generated_reading_without_digits_is_a_failure_not_a_zero() -> None:
    def no_digits(request: ReceivedRequest) -> Reply | None:
        return Reply(content="unknown", top_logprobs=[{"unknown": ln(0.9), "none": ln(0.1)}])

    with OpenAITestServer(slots=1, responder=no_digits) as server:
        simulator = PromptLogprobSimulator(LlamaCppLLM("q", base_url=server.base_url, cache=False))
        with pytest.raises(
            SimulationError, match=r"llamacpp:q: no activation number .* at token 1 \(' a'\)"
        ):
            simulator.simulate(EXPLANATION, [" a", " b"])


def test_contrasting_examples_fire_on_words_that_are_silent_elsewhere() -> None:
    for example in CONTRASTING_EXAMPLES:
        firing = {t.strip().lower() for record in example.records for t, v in record if v}
        silent = {t.strip().lower() for record in example.records for t, v in record if not v}
        assert firing, example.explanation
        # every firing word but at most one also appears silent in another excerpt
        assert len(firing - silent) <= 1, (example.explanation, firing - silent)
        for record in example.records:
            assert all(0 <= v <= 10 for _, v in record)
            assert record[0][0] == record[0][0].lstrip() and all(
                t.startswith(" ") for t, _ in record[1:]
            )


def test_the_simulator_shows_the_examples_it_was_built_with() -> None:
    llm = ScriptedLLM(prompt_default=make_prompt_response("x"))
    contrasting = PromptLogprobSimulator(llm)
    paper = PromptLogprobSimulator(llm, examples="paper")
    assert contrasting.prompt("x", [" a"])[0] == build_all_at_once_prompt("x", [" a"])[0]
    assert (
        paper.prompt("x", [" a"])[0] == build_all_at_once_prompt("x", [" a"], FEW_SHOT_EXAMPLES)[0]
    )
    assert contrasting.info.settings["examples"] == "contrasting"
    assert paper.info.settings["examples"] == "paper"
    assert contrasting.info.prompt_version == "prompt-logprob-simulator/2"
    with pytest.raises(InvalidInputError, match="examples must be 'contrasting' or 'paper'"):
        PromptLogprobSimulator(llm, examples="gpt")  # type: ignore[arg-type]
