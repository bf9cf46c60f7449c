"""llama.cpp's server through the ``openai`` backend and the ``llamacpp`` provider, against the
test server on 127.0.0.1 taught llama.cpp's ways: prefix logprobs from its native
``/completion`` (``n_probs``, ``cache_prompt``), and prefills (a final assistant message that
the server continues), refused toward OpenAI's own API."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from neuron_explainer import (
    BadRequestError,
    CapabilityError,
    InvalidInputError,
    InvalidResponseError,
)
from neuron_explainer.llm import ChatRequest, Message
from neuron_explainer.llm.base import PrefixLogprobsRequest
from neuron_explainer.llm.llamacpp import (
    DEFAULT_LLAMACPP_BASE_URL,
    LLAMACPP_CAPABILITIES,
    LlamaCppLLM,
)
from neuron_explainer.llm.openai import OpenAILLM
from neuron_explainer.llm.usage import track_usage
from neuron_explainer.plugins import Registry
from neuron_explainer.testing import OpenAITestServer, Reply
from neuron_explainer.testing.server import ReceivedRequest

PROMPT = "Count\none\t1\ntwo\t2\nthree\t3\nfour\t"
OFFSETS = tuple(i + 1 for i, c in enumerate(PROMPT) if c == "\t")  # after each tab


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "NEURON_EXPLAINER_CACHE"):
        monkeypatch.delenv(name, raising=False)


def digit_after(request: ReceivedRequest) -> Reply | None:
    """llama.cpp as a counter: after ``word<TAB>`` at the end of the prompt it generates the
    line's number, with alternatives one lower and one higher."""
    if request.endpoint != "completion":
        return None
    lines = request.body["prompt"].split("\n")
    value = len(lines) - 1
    top = {str(value): math.log(0.7), str(value + 1): math.log(0.2), "x": math.log(0.1)}
    return Reply(content=str(value), top_logprobs=[top])


@pytest.fixture
def server() -> Iterator[OpenAITestServer]:
    with OpenAITestServer(slots=1, responder=digit_after) as running:
        yield running


def llm_for(server: OpenAITestServer, **options: Any) -> LlamaCppLLM:
    return LlamaCppLLM("qwen", base_url=server.base_url, **{"cache": False, **options})


def test_the_llamacpp_provider_declares_prefix_logprobs_and_prefill() -> None:
    registry = Registry(entry_points=False)
    llm = registry.llm("llamacpp:qwen")
    assert isinstance(llm, LlamaCppLLM) and isinstance(llm, OpenAILLM)
    assert llm.name == "llamacpp:qwen" and llm.capabilities == LLAMACPP_CAPABILITIES
    assert {"prefix_logprobs", "prefill", "chat_logprobs"} <= llm.capabilities
    assert llm.base_url == DEFAULT_LLAMACPP_BASE_URL
    assert repr(llm) == "LlamaCppLLM('qwen')"
    with pytest.raises(InvalidInputError, match="does not accept"):
        registry.llm("llamacpp:qwen", no_such_option=1)
    assert "prefix_logprobs" not in OpenAILLM("gpt-4o-mini").capabilities


def test_prefix_logprobs_send_one_cached_generation_per_prefix(server: OpenAITestServer) -> None:
    llm = llm_for(server)
    with track_usage() as meter:
        answer = llm.prefix_logprobs(PrefixLogprobsRequest(prompt=PROMPT, offsets=OFFSETS))
    bodies = [r.body for r in server.requests]
    assert [r.path for r in server.requests] == ["/completion"] * 4  # at the root, not /v1
    assert [b["prompt"] for b in bodies] == [PROMPT[:o] for o in OFFSETS]
    for body in bodies:
        assert body["n_predict"] == 1 and body["n_probs"] == 15 and body["cache_prompt"] is True
        assert body["temperature"] == 0.0 and body["model"] == "qwen"
    assert [p.offset for p in answer.prefixes] == list(OFFSETS)
    for value, prefix in enumerate(answer.prefixes, start=1):
        top = [(t.token, round(math.exp(t.logprob), 6)) for t in prefix.top_logprobs]
        assert top == [(str(value), 0.7), (str(value + 1), 0.2), ("x", 0.1)]
    # Each prefix extends the last, so the slot's cache holds all of it but its last token
    # (the test server's tokenizer writes a final "\t" alone, and "\t1" once a digit follows).
    lengths = [len(server.tokenize(PROMPT[:o])) for o in OFFSETS]
    assert answer.usage.prompt_tokens == sum(lengths)
    assert answer.usage.completion_tokens == 4
    cached = sum(n - 1 for n in lengths[:-1])
    assert answer.usage.cached_tokens == cached
    assert meter.summary.calls == 4 and meter.summary.cached_tokens == cached
    assert [p.path for p in server.probes] == ["/props"]  # the slot count, asked once


def test_the_sequences_of_concurrent_requests_do_not_interleave(
    server: OpenAITestServer,
) -> None:
    """With one slot, a sequence sent between two prefixes of another would evict them from
    the slot's cache: each request's prefixes go one after another."""
    llm = llm_for(server)
    prompts = [PROMPT, PROMPT.replace("Count", "Tally"), PROMPT.replace("Count", "Total")]

    async def run() -> None:
        await asyncio.gather(
            *(
                llm.aprefix_logprobs(PrefixLogprobsRequest(prompt=p, offsets=OFFSETS))
                for p in prompts
            )
        )

    asyncio.run(run())
    sent = [r.body["prompt"].split("\n")[0] for r in server.requests]
    runs = [sent[i] for i in range(len(sent)) if i == 0 or sent[i] != sent[i - 1]]
    assert sorted(runs) == ["Count", "Tally", "Total"]  # three unbroken runs of four
    assert server.max_in_flight == 1


def test_the_response_cache_answers_repeated_prefixes(
    server: OpenAITestServer, tmp_path: Any
) -> None:
    request = PrefixLogprobsRequest(prompt=PROMPT, offsets=OFFSETS[:2], top_logprobs=2)
    first = llm_for(server, cache=tmp_path / "cache.sqlite").prefix_logprobs(request)
    with track_usage() as meter:
        again = llm_for(server, cache=tmp_path / "cache.sqlite").prefix_logprobs(request)
    assert again.prefixes == first.prefixes and len(first.prefixes[0].top_logprobs) == 2
    assert server.request_count == 2 and meter.summary.cache_hits == 2


def test_a_server_without_the_native_endpoint_is_named() -> None:
    with OpenAITestServer() as plain:  # OpenAI-like: no slots, no /completion
        llm = LlamaCppLLM("qwen", base_url=plain.base_url, cache=False)
        with pytest.raises(BadRequestError, match=r"no llama.cpp /completion.*HTTP 404") as info:
            llm.prefix_logprobs(PrefixLogprobsRequest(prompt=PROMPT, offsets=OFFSETS))
    assert info.value.status_code == 404 and "prompt_logprobs" in str(info.value)


@pytest.mark.parametrize(
    ("probabilities", "expected"),
    [
        ([{"top_logprobs": [{"token": "1", "logprob": -0.5}, {"token": "2", "logprob": -1}]}], 2),
        ([{"top_probs": [{"token": "2", "prob": 0.3}, {"token": "1", "prob": 0.6}]}], 2),
        (
            [
                {
                    "content": "1",
                    "probs": [{"tok_str": "1", "prob": 0.9}, {"tok_str": "x", "prob": 0}],
                }
            ],
            1,
        ),
    ],
    ids=["logprobs", "post-sampling", "older"],
)
def test_every_form_of_native_probabilities_is_read(
    probabilities: list[dict[str, Any]], expected: int
) -> None:
    answer = {"content": "1", "completion_probabilities": probabilities, "tokens_evaluated": 9}
    with OpenAITestServer(slots=1, responder=lambda request: answer) as server:
        prefix = llm_for(server).prefix_logprobs(
            PrefixLogprobsRequest(prompt=PROMPT, offsets=OFFSETS[:1])
        )
    (only,) = prefix.prefixes
    assert len(only.top_logprobs) == expected and only.top_logprobs[0].token == "1"
    assert [t.logprob for t in only.top_logprobs] == sorted(
        (t.logprob for t in only.top_logprobs), reverse=True
    )
    assert prefix.usage.prompt_tokens == 9


def test_an_answer_without_probabilities_is_a_protocol_error() -> None:
    server = OpenAITestServer(slots=1, responder=lambda request: {"content": "1"})
    request = PrefixLogprobsRequest(prompt=PROMPT, offsets=(5,))
    with server, pytest.raises(InvalidResponseError, match="no completion_probabilities"):
        llm_for(server).prefix_logprobs(request)


def test_offsets_must_grow_within_the_prompt() -> None:
    for offsets in ((), (5, 5), (0,), (len(PROMPT) + 1,)):
        with pytest.raises(ValueError, match="offsets"):
            PrefixLogprobsRequest(prompt=PROMPT, offsets=offsets)


def test_a_backend_that_does_not_declare_prefix_logprobs_refuses_them(
    server: OpenAITestServer,
) -> None:
    llm = OpenAILLM("qwen", base_url=server.base_url)
    with pytest.raises(CapabilityError, match="prefix_logprobs"):
        llm.prefix_logprobs(PrefixLogprobsRequest(prompt=PROMPT, offsets=OFFSETS))
    assert server.request_count == 0
    declared = OpenAILLM(
        "qwen", base_url=server.base_url, capabilities={"chat", "prefix_logprobs"}, cache=False
    )
    answer = declared.prefix_logprobs(PrefixLogprobsRequest(prompt=PROMPT, offsets=OFFSETS[:1]))
    assert answer.prefixes[0].top_logprobs[0].token == "1"


# -- prefill ---------------------------------------------------------------------------------

PREFILLED = (
    Message(role="user", content="List three fruits as JSON."),
    Message(role="assistant", content='{"fruits": ["apple",'),
)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_prefill_is_continued_and_the_answer_holds_only_the_new_text(stream: bool) -> None:
    """llama.cpp repeats the prefill at the start of a whole answer (not in streamed deltas),
    as the real server does; either way the choice's text is the continuation."""
    continuation = ' "banana"]}'
    with OpenAITestServer(slots=1) as server:
        llm = llm_for(server, stream=stream)
        repeated = PREFILLED[-1].content + continuation
        server.add(continuation if stream else repeated)
        answer = llm.chat(ChatRequest(messages=PREFILLED))
        tokens = [' "', "banana", '"]}']  # the logprobs: of the generated tokens only
        server.add(Reply(content=continuation if stream else repeated, tokens=tokens))
        with_logprobs = llm.chat(ChatRequest(messages=PREFILLED, logprobs=True, top_logprobs=1))
    assert answer.choices[0].text == continuation
    body = server.requests[0].body
    assert body["messages"][-1] == {"role": "assistant", "content": '{"fruits": ["apple",'}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    (choice,) = with_logprobs.choices
    assert choice.logprobs is not None
    assert choice.text == continuation == "".join(t.token for t in choice.logprobs)


def test_a_whole_answer_whose_logprobs_spell_it_is_not_cut() -> None:
    """A server that does not repeat the prefill (vLLM), and a continuation that happens to
    start with it: the logprobs say nothing was repeated."""
    prefill = PREFILLED[-1].content
    with OpenAITestServer() as server:
        llm = OpenAILLM(
            "m",
            base_url=server.base_url,
            stream=False,
            cache=False,
            capabilities={"chat", "chat_logprobs", "prefill"},
        )
        server.add(Reply(content=prefill + "1", tokens=[prefill, "1"]))
        answer = llm.chat(ChatRequest(messages=PREFILLED, logprobs=True, top_logprobs=1))
    assert answer.choices[0].text == prefill + "1"


def test_the_openai_backend_refuses_a_prefill_it_does_not_declare(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    transport = httpx.MockTransport(handler)
    default = OpenAILLM("gpt-4o-mini", transport=transport)
    with pytest.raises(CapabilityError, match="'prefill'"):
        default.chat(ChatRequest(messages=PREFILLED))
    # Declared or not, OpenAI's own API (and Azure's) start a new message: refused, not sent.
    for base_url in ("https://api.openai.com/v1", "https://x.openai.azure.com/openai/v1"):
        declared = OpenAILLM(
            "gpt-4o-mini",
            base_url=base_url,
            capabilities={"chat", "prefill"},
            transport=transport,
        )
        with pytest.raises(CapabilityError, match="continuing it"):
            declared.chat(ChatRequest(messages=PREFILLED))
    assert sent == []
