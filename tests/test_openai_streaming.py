"""Streamed chat answers: server-sent events put back together into exactly the answer a
non-streamed request gets, their faults as typed errors, and a long answer from a slow server
under a short timeout.

The unit tests run on `httpx.MockTransport` (no sockets) with events written by hand in the
form llama.cpp's server sends them; the last ones run against `OpenAITestServer` on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_sleep import Sleeps

from neuron_explainer import (
    InvalidResponseError,
    LLMConnectionError,
    LLMTimeoutError,
    RateLimitError,
    ServerError,
)
from neuron_explainer.llm import ChatRequest, ChatResponse, Message
from neuron_explainer.llm.openai import OpenAILLM
from neuron_explainer.llm.protocol import parse_chat
from neuron_explainer.llm.streaming import ChatStream
from neuron_explainer.testing import Fault, OpenAITestServer, Reply

LOCAL = "http://127.0.0.1:8080/v1"  # never reached: the mock answers
SSE = {"content-type": "text/event-stream"}


def ask(text: str = "Say hi", **fields: Any) -> ChatRequest:
    return ChatRequest(messages=(Message(role="user", content=text),), **fields)


def entry(token: str, logprob: float, *alternatives: tuple[str, float]) -> dict[str, Any]:
    """A token's logprob entry as llama.cpp writes it (with ``id`` and ``bytes``)."""
    top = [
        {"id": 1, "token": t, "bytes": list(t.encode()), "logprob": lp} for t, lp in alternatives
    ]
    own = {"id": 1, "token": token, "bytes": list(token.encode()), "logprob": logprob}
    return {**own, "top_logprobs": top}


HELLO = [entry("Hello", -0.22, ("Hello", -0.22), ("Hi", -2.0)), entry("!", -0.5, ("!", -0.5))]
USAGE = {"completion_tokens": 2, "prompt_tokens": 35, "prompt_tokens_details": {"cached_tokens": 3}}


def plain_answer() -> dict[str, Any]:
    """The non-streamed answer that the events of `llamacpp_events` add up to."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "qwen",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello!"},
                "logprobs": {"content": HELLO},
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }


def chunk(*choices: dict[str, Any], **fields: Any) -> dict[str, Any]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "qwen", "created": 1}
    return {**base, "choices": list(choices), **fields}


def llamacpp_events() -> list[dict[str, Any]]:
    """What llama.cpp's server streams for `plain_answer` (recorded from a real one): a role
    chunk with null content, one chunk per token with its logprobs, the finish reason, then the
    usage (with llama.cpp's own ``timings``) and no choices."""
    return [
        chunk({"finish_reason": None, "index": 0, "delta": {"role": "assistant", "content": None}}),
        chunk(
            {
                "finish_reason": None,
                "index": 0,
                "delta": {"content": "Hello"},
                "logprobs": {"content": HELLO[:1]},
            }
        ),
        chunk(
            {
                "finish_reason": None,
                "index": 0,
                "delta": {"content": "!"},
                "logprobs": {"content": HELLO[1:]},
            }
        ),
        chunk({"finish_reason": "stop", "index": 0, "delta": {}}),
        chunk(usage=USAGE, timings={"predicted_per_second": 11.0}),
    ]


def sse(*events: dict[str, Any] | str, done: bool = True) -> bytes:
    """Server-sent events: objects as JSON ``data:`` lines, strings as raw lines."""
    lines = [f"data: {json.dumps(e)}\n\n" if isinstance(e, dict) else f"{e}\n\n" for e in events]
    return ("".join(lines) + ("data: [DONE]\n\n" if done else "")).encode()


class Cut(httpx.AsyncByteStream):
    """A body that breaks off after ``data``, as a dropped connection looks to httpx."""

    def __init__(self, data: bytes, error: Exception) -> None:
        self.data, self.error = data, error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data
        raise self.error


Answer = httpx.Response | Callable[[], httpx.Response]


class Server:
    """A MockTransport handler: answers chat requests from a list (the last one repeats; a
    function makes a fresh response each time, for bodies that can be read once) and
    ``GET /props`` with 404, recording the chat requests."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(404)
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer() if callable(answer) else answer

    @property
    def bodies(self) -> list[Any]:
        return [json.loads(r.content) for r in self.requests]


def streamed(body: bytes, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=body, headers=SSE)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "NEURON_EXPLAINER_CACHE",
        "NEURON_EXPLAINER_LLM_TIMEOUT",
        "NEURON_EXPLAINER_LLM_CONCURRENCY",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make(sleeps: Sleeps) -> Callable[..., OpenAILLM]:
    def build(handler: Callable[[httpx.Request], httpx.Response], **options: Any) -> OpenAILLM:
        settings: dict[str, Any] = {"base_url": LOCAL, "sleep": sleeps, "max_retries": 2}
        settings.update(options)
        return OpenAILLM("qwen", transport=httpx.MockTransport(handler), **settings)

    return build


# -- the answer is the same, streamed or not -----------------------------------------------------


def test_a_streamed_answer_is_exactly_the_plain_one(make: Any) -> None:
    request = ask(logprobs=True, top_logprobs=2, max_tokens=5)
    events = make(Server(streamed(sse(*llamacpp_events())))).chat(request)
    plain = make(Server(httpx.Response(200, json=plain_answer())), stream=False).chat(request)
    assert events == plain == parse_chat(plain_answer(), 1)
    (choice,) = events.choices
    assert choice.text == "Hello!" and choice.finish_reason == "stop"
    assert choice.logprobs is not None and [t.token for t in choice.logprobs] == ["Hello", "!"]
    assert [a.token for a in choice.logprobs[0].top_logprobs] == ["Hello", "Hi"]
    assert (events.usage.prompt_tokens, events.usage.cached_tokens) == (35, 3)
    assert events.model == "qwen"


def test_a_streamed_request_asks_for_events_and_the_usage(make: Any) -> None:
    server = Server(streamed(sse(*llamacpp_events())))
    make(server).chat(ask(max_tokens=5))
    (body,) = server.bodies
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert server.requests[0].headers["accept"] == "text/event-stream"
    plain = Server(httpx.Response(200, json=plain_answer()))
    make(plain, stream=False).chat(ask(max_tokens=5))
    assert "stream" not in plain.bodies[0] and "stream_options" not in plain.bodies[0]


def test_interleaved_choices_are_put_back_in_order() -> None:
    def piece(index: int, text: str, finish: str | None = None) -> dict[str, Any]:
        return {"index": index, "delta": {"content": text}, "finish_reason": finish}

    stream = ChatStream()
    for event in (
        chunk(piece(1, "B")),
        chunk(piece(0, "a")),
        chunk(piece(1, "b", "length"), piece(0, "!", "stop")),  # two choices in one chunk
        chunk(usage={"prompt_tokens": 1, "completion_tokens": 4}),
    ):
        stream.add(event)
    response = parse_chat(stream.result(), 2)
    texts = [(c.text, c.finish_reason) for c in response.choices]
    assert texts == [("a!", "stop"), ("Bb", "length")]
    assert response.usage.completion_tokens == 4 and stream.complete


def test_a_server_that_ignores_stream_answers_plain_json(make: Any) -> None:
    server = Server(httpx.Response(200, json=plain_answer()))  # application/json
    assert make(server).chat(ask()).choices[0].text == "Hello!"


def test_the_cache_stores_the_same_entry_streamed_or_not(make: Any, tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    first = Server(streamed(sse(*llamacpp_events())))
    answer = make(first, cache=cache).chat(ask())
    plain = Server(httpx.Response(500))
    assert make(plain, cache=cache, stream=False).chat(ask()) == answer  # a hit: nothing sent
    assert plain.requests == []
    again = Server(httpx.Response(500))
    assert make(again, cache=cache).chat(ask()) == answer and again.requests == []


# -- what goes wrong -------------------------------------------------------------------------


def test_a_stream_cut_off_midway_is_a_connection_error_and_retried(
    make: Any, sleeps: Sleeps
) -> None:
    events = sse(*llamacpp_events())

    def cut() -> httpx.Response:
        error = httpx.RemoteProtocolError("peer closed connection")
        return httpx.Response(200, stream=Cut(events[:200], error), headers=SSE)

    server = Server(cut, streamed(events))
    assert make(server).chat(ask()).choices[0].text == "Hello!"
    assert len(server.requests) == 2 and len(sleeps.waits) == 1
    always = Server(cut)
    with pytest.raises(LLMConnectionError, match="RemoteProtocolError") as caught:
        make(always).chat(ask())
    assert caught.value.attempts == 3


def test_a_stream_that_ends_early_without_done_is_retried(make: Any) -> None:
    short = streamed(sse(*llamacpp_events()[:2], done=False))  # closed cleanly, but unfinished
    with pytest.raises(LLMConnectionError, match="without data: \\[DONE\\]") as caught:
        make(Server(short)).chat(ask())
    assert caught.value.attempts == 3
    # Every choice finished and the usage came: whole, even without [DONE].
    whole = streamed(sse(*llamacpp_events(), done=False))
    assert make(Server(whole)).chat(ask()).choices[0].text == "Hello!"


def test_after_done_the_answer_is_whole_however_the_body_ends(make: Any) -> None:
    body = sse(*llamacpp_events())
    broken = Cut(body, httpx.RemoteProtocolError("peer closed connection"))
    server = Server(httpx.Response(200, stream=broken, headers=SSE))
    assert make(server).chat(ask()).choices[0].text == "Hello!"
    assert len(server.requests) == 1


def test_an_error_event_is_read_at_once_not_after_the_timeout(make: Any) -> None:
    body = sse(llamacpp_events()[0], 'data: {"error": {"message": "slot died"}}', done=False)
    server = Server(
        lambda: httpx.Response(
            200, stream=Cut(body, httpx.ReadTimeout("then nothing")), headers=SSE
        )
    )
    with pytest.raises(ServerError, match="event 2 is an error: slot died"):
        make(server).chat(ask())


def test_a_silent_stream_is_a_timeout(make: Any) -> None:
    events = sse(*llamacpp_events())
    server = Server(
        lambda: httpx.Response(
            200, stream=Cut(events[:100], httpx.ReadTimeout("timed out")), headers=SSE
        )
    )
    with pytest.raises(LLMTimeoutError, match="the server sent nothing for 4s") as caught:
        make(server, timeout=1.0).chat(ask())
    assert caught.value.attempts == 3  # 1 s, then 2 s, then 4 s: the message gives the last


@pytest.mark.parametrize(
    ("event", "error", "words", "retried"),
    [
        ("data: <html>Bad gateway", InvalidResponseError, "event 2 is not valid JSON", True),
        ("data: [1, 2]", InvalidResponseError, "event 2 is JSON list, not an object", True),
        ('data: {"error": {"message": "slot died"}}', ServerError, "slot died", True),
        ('error: {"code": 500, "message": "out of memory"}', ServerError, "out of memory", True),
        (
            'data: {"choices": [{"index": 0, "delta": {"content": 7}}]}',
            InvalidResponseError,
            r"event 2 \(a chat.completion.chunk\): choices\[0\]\.delta\.content is int",
            False,
        ),
        (
            'data: {"choices": [{"index": -1, "delta": {}}]}',
            InvalidResponseError,
            r"choices\[0\]\.index is -1",
            False,
        ),
        ('data: {"choices": {"0": 1}}', InvalidResponseError, "choices is dict, not a list", False),
        (
            'data: {"choices": [{"index": 0, "logprobs": {"content": "x"}}]}',
            InvalidResponseError,
            r"logprobs\.content is str",
            False,
        ),
    ],
    ids=["html", "array", "error-data", "error-line", "content", "index", "choices", "logprobs"],
)
def test_bad_events_raise_typed_errors(
    event: str, error: type[Exception], words: str, retried: bool, make: Any
) -> None:
    server = Server(streamed(sse(llamacpp_events()[0], event)))
    with pytest.raises(error, match=words) as caught:
        make(server).chat(ask())
    assert type(caught.value) is error
    assert getattr(caught.value, "attempts", None) == (3 if retried else 1)


def test_an_http_error_of_a_streamed_request_is_read_as_usual(make: Any, sleeps: Sleeps) -> None:
    limited = httpx.Response(
        429, json={"error": {"message": "slow down"}}, headers={"Retry-After": "2"}
    )
    server = Server(limited, streamed(sse(*llamacpp_events())))
    assert make(server).chat(ask()).choices[0].text == "Hello!"
    assert sleeps.waits == [2.0]
    with pytest.raises(RateLimitError, match="slow down"):
        make(Server(limited)).chat(ask())


def test_comments_and_multi_line_data_are_read_as_the_standard_says(make: Any) -> None:
    events = llamacpp_events()
    split = json.dumps(events[1]).replace(', "delta"', ',\ndata: "delta"', 1)
    body = sse(events[0], ": keep-alive", "event: message\ndata: " + split, *events[2:])
    assert make(Server(streamed(body))).chat(ask()).choices[0].text == "Hello!"


# -- when to stream --------------------------------------------------------------------------


def test_streaming_is_on_for_local_and_private_servers_only(make: Any) -> None:
    assert make(Server(), base_url="http://localhost:8080/v1").streams()
    assert make(Server(), base_url="http://192.168.1.20:8000/v1").streams()
    assert make(Server(), base_url="http://llama:8080/v1").streams()
    remote = make(Server(), base_url="https://api.openai.com/v1", api_key="sk-x")
    assert not remote.streams()
    assert make(Server(), base_url="https://api.openai.com/v1", stream=True).streams()
    assert not make(Server(), stream=False).streams()


# -- against a real HTTP server: a slow generation -------------------------------------------


@pytest.fixture
def slow() -> Iterator[OpenAITestServer]:
    """A server that generates one token every 20 ms: 60 tokens take 1.2 s."""
    with OpenAITestServer(chunk_delay=0.02) as running:
        yield running


LONG = Reply(content=" ".join(str(i) for i in range(60)))


def test_a_long_streamed_answer_outlasts_a_short_timeout(slow: OpenAITestServer) -> None:
    """The failure of issue 14: an answer that takes longer than the timeout. Streamed, bytes
    keep coming and it succeeds; whole, nothing comes for 1.2 s and a 0.5 s timeout fires."""
    slow.add(LONG, LONG)
    llm = OpenAILLM("m", base_url=slow.base_url, timeout=0.5, max_retries=0, cache=False)
    response = llm.chat(ask(logprobs=True, top_logprobs=2))
    assert response.choices[0].text == LONG.content
    assert response.choices[0].logprobs is not None and len(response.choices[0].logprobs) == 60
    assert slow.requests[-1].body["stream"] is True
    plain = OpenAILLM("m", base_url=slow.base_url, timeout=0.5, max_retries=0, stream=False)
    with pytest.raises(LLMTimeoutError, match=r"no answer within 0\.5s"):
        plain.chat(ask())


def test_a_stalled_stream_fails_and_a_cut_one_is_retried(slow: OpenAITestServer) -> None:
    slow.chunk_delay = 0.0
    llm = OpenAILLM("m", base_url=slow.base_url, timeout=0.3, max_retries=1, timeout_retries=0)
    slow.fail_next(Fault.stall(after=3, hold=5.0))
    with pytest.raises(LLMTimeoutError, match=r"the server sent nothing for 0\.3s") as caught:
        llm.chat(ask())
    assert caught.value.attempts == 1  # timeout_retries=0: a timeout is not retried
    slow.fail_next(Fault.cut(after=3))
    assert llm.chat(ask()).choices[0].text == "ok"
    assert [r.body["stream"] for r in slow.requests[-2:]] == [True, True]


def test_the_test_servers_stream_adds_up_to_its_plain_answer(slow: OpenAITestServer) -> None:
    slow.chunk_delay = 0.0
    reply = Reply(content=["one two", "three"], top_logprobs=[{"one": -0.1, "two": -1.0}])
    slow.add(reply, reply)
    request = ask(n=2, logprobs=True, top_logprobs=2, max_tokens=8)
    streamed_llm = OpenAILLM("m", base_url=slow.base_url, stream=True)
    plain_llm = OpenAILLM("m", base_url=slow.base_url, stream=False)

    async def both() -> tuple[ChatResponse, ChatResponse]:
        return await streamed_llm.achat(request), await plain_llm.achat(request)

    first, second = asyncio.run(both())
    assert first == second and [c.text for c in first.choices] == ["one two", "three"]
