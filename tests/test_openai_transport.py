"""The OpenAI backend on `httpx.MockTransport`: no sockets, every answer written by the test.

The base URL is api.openai.com throughout, which this machine cannot reach: a request that
went to the network instead of the mock would fail.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_sleep import Sleeps

from neuron_explainer import (
    AuthenticationError,
    BadRequestError,
    InvalidInputError,
    InvalidResponseError,
    LLMConnectionError,
    LLMError,
    LLMTimeoutError,
    RateLimitError,
    ServerError,
)
from neuron_explainer.llm import ChatRequest, Message, PromptLogprobsRequest
from neuron_explainer.llm.openai import OpenAILLM
from neuron_explainer.llm.transport import (
    RetryingClient,
    RetryPolicy,
    _retry_after,
    endpoint_url,
    is_local_url,
)

SECRET = "sk-mock-0123456789abcdefSECRET"
ALL = ("chat", "chat_logprobs", "json_schema", "prompt_logprobs")
Handler = Callable[[httpx.Request], httpx.Response]


class Script:
    """A MockTransport handler answering from a list (the last answer repeats), recording
    every request."""

    def __init__(self, *answers: httpx.Response | BaseException) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    @property
    def bodies(self) -> list[Any]:
        return [json.loads(r.content) for r in self.requests]


def chat_answer(text: str = "ok", **choice: Any) -> dict[str, Any]:
    return {
        "model": "m-2024",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                **choice,
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1},
    }


def ok(text: str = "ok") -> httpx.Response:
    return httpx.Response(200, json=chat_answer(text))


def error(status: int, message: str = "no", code: str | None = None, **headers: str) -> Any:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return httpx.Response(status, json=body, headers=headers)


def ask(text: str = "Say hi", **fields: Any) -> ChatRequest:
    return ChatRequest(messages=(Message(role="user", content=text),), **fields)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "NEURON_EXPLAINER_CACHE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make(sleeps: Sleeps) -> Callable[..., OpenAILLM]:
    def build(handler: Handler | None = None, **options: Any) -> OpenAILLM:
        settings: dict[str, Any] = {
            "api_key": SECRET,
            "sleep": sleeps,
            "max_retries": 3,
            "capabilities": ALL,
        }
        if handler is not None:
            settings["transport"] = httpx.MockTransport(handler)
        settings.update(options)
        return OpenAILLM("m", **settings)

    return build


# -- requests and answers ------------------------------------------------------------------------


def test_a_chat_goes_through_the_mock_with_the_key_and_comes_back_parsed(make: Any) -> None:
    script = Script(ok("Hello"))
    response = make(script).chat(ask(max_tokens=5, stop=("\n",)))
    assert response.choices[0].text == "Hello"
    assert response.usage.prompt_tokens == 5 and response.model == "m-2024"
    (request,) = script.requests
    assert str(request.url) == "https://api.openai.com/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert script.bodies == [
        {
            "model": "m",
            "messages": [{"role": "user", "content": "Say hi"}],
            "temperature": 0.0,
            "max_tokens": 5,
            "stop": ["\n"],
        }
    ]


def test_chat_logprobs_are_parsed_most_likely_first(make: Any) -> None:
    logprobs = {
        "content": [
            {
                "token": "7",
                "logprob": -0.1,
                "top_logprobs": [{"token": "8", "logprob": -2.5}, {"token": "7", "logprob": -0.1}],
            },
            {"token": "!", "logprob": -1, "top_logprobs": []},
        ]
    }
    script = Script(httpx.Response(200, json=chat_answer("7!", logprobs=logprobs)))
    (choice,) = make(script).chat(ask(logprobs=True, top_logprobs=2)).choices
    assert choice.logprobs is not None
    assert [(t.token, t.logprob) for t in choice.logprobs] == [("7", -0.1), ("!", -1.0)]
    assert [a.token for a in choice.logprobs[0].top_logprobs] == ["7", "8"]
    assert script.bodies[0]["logprobs"] is True and script.bodies[0]["top_logprobs"] == 2


def test_a_malformed_logprob_is_named(make: Any) -> None:
    logprobs = {"content": [{"token": "7", "logprob": "high"}]}
    script = Script(httpx.Response(200, json=chat_answer("7", logprobs=logprobs)))
    with pytest.raises(InvalidResponseError, match=r"content\[0\]\.logprob is 'high'") as caught:
        make(script).chat(ask(logprobs=True))
    assert caught.value.attempts == 1  # a protocol mismatch is not retried


def test_prompt_logprobs_from_an_echo_answer(make: Any) -> None:
    logprobs = {
        "tokens": ["The", " cat", " sat", "!"],  # "!" was generated after the prompt
        "token_logprobs": [None, -1.5, -0.5, -3.0],
        "top_logprobs": [None, {" dog": -1.0, " cat": -1.5}, {" sat": -0.5}, {"!": -3.0}],
        "text_offset": [0, 3, 7, 11],
    }
    script = Script(httpx.Response(200, json={"choices": [{"logprobs": logprobs}]}))
    llm = make(script, prompt_logprobs_max_tokens=1)
    tokens = llm.prompt_logprobs(PromptLogprobsRequest(prompt="The cat sat", top_logprobs=2)).tokens
    assert [(t.token, t.offset, t.logprob) for t in tokens] == [
        ("The", 0, None),
        (" cat", 3, -1.5),
        (" sat", 7, -0.5),
    ]
    assert [a.token for a in tokens[1].top_logprobs] == [" dog", " cat"]
    assert str(script.requests[0].url).endswith("/v1/completions")
    assert script.bodies[0] == {
        "model": "m",
        "prompt": "The cat sat",
        "max_tokens": 1,
        "temperature": 0.0,
        "echo": True,
        "logprobs": 2,
    }


def test_prompt_logprobs_from_a_vllm_answer(make: Any) -> None:
    def entry(*alternatives: tuple[str, float]) -> dict[str, Any]:
        return {
            str(100 + i): {"logprob": lp, "rank": i + 1, "decoded_token": text}
            for i, (text, lp) in enumerate(alternatives)
        }

    entries = [None, entry((" cat", -1.5), (" dog", -2.0)), entry((" sat", -0.5))]
    script = Script(httpx.Response(200, json={"choices": [{"prompt_logprobs": entries}]}))
    llm = make(script, prompt_logprobs_style="vllm")
    tokens = llm.prompt_logprobs(PromptLogprobsRequest(prompt="The cat sat", top_logprobs=2)).tokens
    assert [(t.token, t.offset, t.logprob) for t in tokens] == [
        ("The", 0, None),
        (" cat", 3, -1.5),
        (" sat", 7, -0.5),
    ]
    assert [a.token for a in tokens[1].top_logprobs] == [" cat", " dog"]
    body = script.bodies[0]
    assert body["prompt_logprobs"] == 2 and body["max_tokens"] == 1 and "echo" not in body


# -- retries ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "error_type"),
    [
        (error(429, "slow down"), RateLimitError),
        (error(500, "boom"), ServerError),
        (error(503, "busy"), ServerError),
        (error(409, "conflict"), ServerError),
        (error(408, "too slow"), LLMTimeoutError),
        (httpx.ReadTimeout("read timed out"), LLMTimeoutError),
        (httpx.ConnectError("connection refused"), LLMConnectionError),
        (httpx.Response(200, content=b"<html>Bad gateway</html>"), InvalidResponseError),
        (httpx.Response(200, content=b'{"choices": [{"message": {"cont'), InvalidResponseError),
        (httpx.Response(200, json=["not", "an", "object"]), InvalidResponseError),
    ],
    ids=["429", "500", "503", "409", "408", "timeout", "refused", "html", "cut-json", "array"],
)
def test_retryable_failures_are_retried_then_raised(
    failure: Any, error_type: type[LLMError], make: Any, sleeps: Sleeps
) -> None:
    script = Script(failure, failure, ok("recovered"))
    assert make(script).chat(ask()).choices[0].text == "recovered"
    assert len(script.requests) == 3 and len(sleeps.waits) == 2

    always = Script(failure)
    with pytest.raises(error_type, match="giving up after 3 attempts") as caught:
        make(always, max_retries=2).chat(ask())
    assert caught.value.attempts == 3 and len(always.requests) == 3


def test_settings_assigned_after_construction_take_effect(make: Any, sleeps: Sleeps) -> None:
    """timeout, max_concurrency, max_retries and the waits were plain attributes before 0.2;
    assigning them still works, and a value the retry policy refuses is refused."""
    always = Script(error(500, "down"))
    llm = make(always)
    llm.max_retries, llm.retry_base_wait, llm.retry_max_wait = 1, 4.0, 4.0
    with pytest.raises(ServerError, match="giving up after 2 attempts"):
        llm.chat(ask())
    assert len(always.requests) == 2 and 2.0 <= sleeps.waits[-1] <= 4.0
    assert (llm.max_retries, llm.retry_base_wait, llm.retry_max_wait) == (1, 4.0, 4.0)
    llm.timeout, llm.max_concurrency = 7, 3
    assert (llm.timeout, llm.max_concurrency) == (7.0, 3)
    assert (llm.client.timeout, llm.client.max_concurrency) == (7.0, 3)
    with pytest.raises(InvalidInputError, match="max_retries must be >= 0"):
        llm.max_retries = -1
    assert llm.max_retries == 1


class _CutStream(httpx.AsyncByteStream):
    """A body that breaks off: what a dropped connection mid-body looks like to httpx."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"choices": ['
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


def test_a_body_cut_off_in_transit_is_a_connection_error_and_retried(
    make: Any, sleeps: Sleeps
) -> None:
    script = Script(httpx.Response(200, stream=_CutStream()), ok())
    assert make(script).chat(ask()).choices[0].text == "ok"
    assert len(sleeps.waits) == 1
    cut = Script(httpx.Response(200, stream=_CutStream()))
    with pytest.raises(LLMConnectionError, match="RemoteProtocolError"):
        make(cut, max_retries=0).chat(ask())


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "0.01"}, 0.01),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"Retry-After": "3", "retry-after-ms": "250"}, 0.25),  # the precise header wins
        ({"Retry-After": "1000"}, 30.0),  # capped at retry_max_wait
        ({"Retry-After": "soon"}, None),  # unusable: the backoff decides
        ({"Retry-After": "-3"}, None),
    ],
)
def test_retry_after_is_honoured_and_capped(
    headers: dict[str, str], expected: float | None, make: Any, sleeps: Sleeps
) -> None:
    script = Script(error(429, **headers), ok())
    make(script, retry_max_wait=30.0, retry_base_wait=100.0).chat(ask())
    if expected is None:
        assert 15.0 <= sleeps.waits[0] <= 30.0  # the first backoff: min(100, 30) x [0.5, 1]
    else:
        assert sleeps.waits == [pytest.approx(expected)]


def test_retry_after_as_an_http_date_is_read_against_the_clock() -> None:
    date = email.utils.formatdate(1_000_020, usegmt=True)
    assert _retry_after(httpx.Headers({"Retry-After": date}), now=lambda: 1_000_000) == 20.0
    assert _retry_after(httpx.Headers({"Retry-After": date}), now=lambda: 2_000_000) == 0.0
    assert _retry_after(httpx.Headers({})) is None


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(max_retries=9, base_wait=1.0, max_wait=5.0)
    assert [policy.backoff(r, draw=lambda: 1.0) for r in (1, 2, 3, 4, 9)] == [1, 2, 4, 5, 5]
    assert [policy.backoff(r, draw=lambda: 0.0) for r in (1, 2, 3, 4)] == [0.5, 1, 2, 2.5]
    assert policy.backoff(10_000, draw=lambda: 1.0) == 5.0  # no overflow on a long run
    assert policy.wait(1, asked=None) <= 1.0
    assert policy.wait(1, asked=60.0) == 5.0
    with pytest.raises(InvalidInputError, match="max_retries"):
        RetryPolicy(max_retries=-1)


def test_the_backend_waits_the_backoff_between_attempts(make: Any, sleeps: Sleeps) -> None:
    script = Script(error(500), error(500), error(500), ok())
    make(script, retry_base_wait=1.0, retry_max_wait=3.0).chat(ask())
    for wait, (low, high) in zip(sleeps.waits, [(0.5, 1), (1, 2), (1.5, 3)], strict=True):
        assert low <= wait <= high


# -- errors that are not retried -------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "error_type", "words"),
    [
        (error(400, "max_tokens is too large"), BadRequestError, "max_tokens is too large"),
        (error(401, "Incorrect API key"), AuthenticationError, "check OPENAI_API_KEY"),
        (error(403, "not allowed"), AuthenticationError, "not allowed"),
        (error(404, "no such model"), BadRequestError, "no such model"),
        (error(422, "unprocessable"), BadRequestError, "unprocessable"),
        (error(429, "quota", code="insufficient_quota"), RateLimitError, "out of quota"),
        (httpx.Response(400, text="plain text"), BadRequestError, "HTTP 400: plain text"),
        (httpx.Response(400), BadRequestError, "HTTP 400: Bad Request"),
        (httpx.Response(302), InvalidResponseError, "unexpected HTTP 302"),
        (httpx.UnsupportedProtocol("no ftp"), LLMConnectionError, "UnsupportedProtocol"),
    ],
    ids=["400", "401", "403", "404", "422", "quota", "text", "empty", "302", "protocol"],
)
def test_failures_that_retrying_cannot_fix_raise_at_once(
    failure: Any, error_type: type[LLMError], words: str, make: Any, sleeps: Sleeps
) -> None:
    script = Script(failure)
    with pytest.raises(error_type, match=words) as caught:
        make(script).chat(ask())
    assert type(caught.value) is error_type
    assert caught.value.attempts == 1 and "not retried after 1 attempt" in str(caught.value)
    if isinstance(failure, httpx.Response):
        assert caught.value.status_code == failure.status_code
    assert len(script.requests) == 1 and sleeps.waits == []


def test_the_key_never_appears_in_an_error_or_a_log(
    make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    script = Script(error(401, f"Incorrect API key provided: {SECRET}."))
    llm = make(script)
    with pytest.raises(AuthenticationError) as refused:
        llm.chat(ask())
    echoing = Script(error(500, f"boom {SECRET}"))
    with pytest.raises(ServerError) as failed:
        make(echoing).chat(ask())
    assert len(echoing.requests) == 4  # three retries were logged
    for caught in (refused.value, failed.value):
        assert SECRET not in str(caught) + repr(caught)
        assert "***" in str(caught)
    assert "retrying in" in caplog.text
    assert SECRET not in caplog.text
    assert SECRET not in repr(llm) + repr(vars(llm)) + repr(llm.client) + str(llm.info)
    assert script.requests[0].headers["authorization"] == f"Bearer {SECRET}"


def test_no_key_for_a_remote_server_is_refused_before_the_transport(make: Any) -> None:
    script = Script(ok())
    with pytest.raises(AuthenticationError, match="OPENAI_API_KEY") as caught:
        make(script, api_key=None).chat(ask())
    assert caught.value.attempts == 0 and script.requests == []
    local = make(script, api_key=None, base_url="http://localhost:8000/v1")
    assert local.chat(ask()).choices[0].text == "ok"
    assert "authorization" not in script.requests[0].headers


# -- the transport option ------------------------------------------------------------------------


class Recorder(httpx.AsyncBaseTransport):
    """A transport that answers ``ok``, noting the event loops it served and whether it was
    closed."""

    def __init__(self) -> None:
        self.loops: list[asyncio.AbstractEventLoop] = []
        self.closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.loops.append(asyncio.get_running_loop())
        return ok()

    async def aclose(self) -> None:
        self.closed = True


def test_a_factory_gives_each_event_loop_a_transport_of_its_own(make: Any) -> None:
    made: list[Recorder] = []

    def factory() -> Recorder:
        made.append(Recorder())
        return made[-1]

    llm = make(transport=factory)
    assert made == []  # nothing is built before the first request
    llm.chat(ask())  # a sync call: a loop of its own
    llm.chat(ask())

    async def twice() -> None:
        await asyncio.gather(llm.achat(ask()), llm.achat(ask()))
        await llm.aclose()

    asyncio.run(twice())
    assert len(made) == 3
    assert [len(t.loops) for t in made] == [1, 1, 2]
    assert len({id(t.loops[0]) for t in made}) == 3
    assert len(set(map(id, made[2].loops))) == 1
    assert all(t.closed for t in made)  # closed with their loop's client
    assert llm.client.open_loops == 0


def test_a_transport_instance_serves_every_loop_and_stays_open(make: Any) -> None:
    shared = Recorder()
    llm = make(transport=shared)
    llm.chat(ask())
    llm.chat(ask())
    assert len(shared.loops) == 2 and shared.loops[0] is not shared.loops[1]
    assert not shared.closed  # the caller's to close
    assert llm.client.open_loops == 0


def test_environment_proxies_do_not_bypass_the_transport(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # httpx mounts no environment proxy when a transport is given; the docs promise it.
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    script = Script(ok("through the mock"))
    assert make(script).chat(ask()).choices[0].text == "through the mock"


def test_a_wrong_transport_is_refused(make: Any) -> None:
    with pytest.raises(InvalidInputError, match="transport must be"):
        make(transport="http://localhost")
    llm = make(transport=lambda: "not a transport")
    with pytest.raises(InvalidInputError, match="returned str"):
        llm.chat(ask())


def test_the_retrying_client_on_its_own(sleeps: Sleeps) -> None:
    script = Script(error(503, "busy", **{"retry-after-ms": "10"}), httpx.Response(200, json={}))
    client = RetryingClient(
        "acme:m",
        retry=RetryPolicy(max_retries=1),
        sleep=sleeps,
        transport=httpx.MockTransport(script),
    )

    async def post() -> tuple[dict[str, Any], int]:
        try:
            return await client.post("https://acme.example/v1/x", {"a": 1}, headers={})
        finally:
            await client.aclose()

    assert asyncio.run(post()) == ({}, 2)
    assert sleeps.waits == [pytest.approx(0.01)]
    assert script.bodies == [{"a": 1}, {"a": 1}]
    with pytest.raises(InvalidInputError, match="max_concurrency"):
        RetryingClient("acme:m", max_concurrency=0)


def test_urls() -> None:
    assert endpoint_url("https://h/v1/", "completions") == "https://h/v1/completions"
    azure = "https://x.openai.azure.com/openai/deployments/d?api-version=2024-06-01"
    assert endpoint_url(azure, "chat/completions") == (
        "https://x.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-06-01"
    )
    local = [
        "http://localhost:8000/v1",
        "http://127.0.0.1/v1",
        "http://[::1]:1/",
        "http://a.localhost",
    ]
    assert all(is_local_url(url) for url in local)
    assert not any(is_local_url(u) for u in ["https://api.openai.com/v1", "http://localhost.com"])


def test_azure_hosts_also_get_the_api_key_header(make: Any) -> None:
    script = Script(ok())
    base = "https://x.openai.azure.com/openai/deployments/d?api-version=2024-06-01"
    make(script, base_url=base).chat(ask())
    (request,) = script.requests
    assert request.headers["api-key"] == SECRET
    assert request.url.params["api-version"] == "2024-06-01"


def test_the_documented_mock_transport_example_runs() -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "llm.md").read_text("utf-8")
    match = re.search(
        r"<!-- mock-transport-example:start -->\n```python\n(?P<code>.*?)```\n"
        r"<!-- mock-transport-example:end -->",
        page,
        re.DOTALL,
    )
    assert match, "docs/llm.md has no mock-transport-example block"
    namespace: dict[str, Any] = {}
    exec(compile(match["code"], "docs/llm.md", "exec"), namespace)
    assert namespace["waits"] == [2.0] and len(namespace["sent"]) == 3


# -- timeouts: never the same request with the same timeout again ----------------------------


def read_timeouts(script: Script) -> list[float]:
    """The read timeout each request was sent with."""
    return [r.extensions["timeout"]["read"] for r in script.requests]


def test_a_timed_out_request_gets_twice_the_time_and_only_two_retries(
    make: Any, sleeps: Sleeps
) -> None:
    """The failure of issue 14: six attempts, each timing out after the same 60 s. Now each
    retry after a timeout doubles it, and the third timeout ends it even though max_retries
    allows more."""
    always = Script(httpx.ReadTimeout("timed out"))
    with pytest.raises(LLMTimeoutError) as caught:
        make(always, timeout=60.0, max_retries=5).chat(ask())
    assert read_timeouts(always) == [60.0, 120.0, 240.0]
    assert caught.value.attempts == 3 and len(sleeps.waits) == 2
    assert "no answer within 240s" in str(caught.value)
    assert "3 attempts, 3 of them timed out, each with twice the time" in str(caught.value)


def test_the_timeout_budget_counts_timeouts_only(make: Any) -> None:
    mixed = Script(
        httpx.ReadTimeout("slow"), error(500), error(408, "request timeout"), error(503), ok()
    )
    assert make(mixed, timeout=10.0, max_retries=5).chat(ask()).choices[0].text == "ok"
    assert read_timeouts(mixed) == [10.0, 20.0, 20.0, 40.0, 40.0]  # an HTTP 408 counts too
    never = Script(httpx.ConnectTimeout("no route"), ok())
    with pytest.raises(LLMTimeoutError, match="no answer within 5s") as caught:
        make(never, timeout=5.0, timeout_retries=0).chat(ask())
    assert caught.value.attempts == 1


def test_the_timeout_retries_setting(make: Any) -> None:
    llm = make(Script(ok()))
    assert llm.timeout_retries == 2 and llm.client.retry.timeout_retries == 2
    llm.timeout_retries = 4
    assert llm.client.retry.timeout_retries == 4
    with pytest.raises(InvalidInputError, match="timeout_retries must be >= 0"):
        RetryPolicy(timeout_retries=-1)


# -- the base URL, checked once, where it came from named ------------------------------------


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("", "base_url= is empty"),
        ("   ", "base_url= is empty"),
        ("http://127.0.0.1:99999/v1", "the port 99999 is out of range (1-65535)"),
        ("http://127.0.0.1:0/v1", "the port 0 is out of range"),
        ("localhost:8000/v1", "no scheme (did you mean 'http://localhost:8000/v1'?)"),
        ("ftp://example.com/v1", "the scheme is 'ftp'"),
        ("http://:8000/v1", "it names no host"),
        ("http://host:abc/v1", "invalid port"),
        ("http://exa mple.com/v1", "white space"),
    ],
)
def test_an_unusable_base_url_is_refused_when_given(url: str, words: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(words)):
        OpenAILLM("m", base_url=url)


def test_an_unusable_base_url_in_the_environment_is_named_before_anything_is_sent(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure of issue 14: OPENAI_BASE_URL with port 99999 gave "unexpected ValueError"."""
    script = Script(ok())
    llm = make(script, api_key=None)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:99999/v1")
    with pytest.raises(InvalidInputError) as caught:
        llm.chat(ask())
    assert str(caught.value) == (
        "OPENAI_BASE_URL='http://127.0.0.1:99999/v1' is not a usable base URL: the port 99999 "
        "is out of range (1-65535)"
    )
    assert script.requests == []
    monkeypatch.setenv("OPENAI_BASE_URL", "https://user:hunter2@example.com:0/v1")
    with pytest.raises(InvalidInputError, match=r"https://\*\*\*@example.com:0/v1") as hidden:
        llm.chat(ask())
    assert "hunter2" not in str(hidden.value)


def test_an_empty_base_url_variable_counts_as_unset(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "  ")
    script = Script(ok())
    make(script).chat(ask())
    assert str(script.requests[0].url) == "https://api.openai.com/v1/chat/completions"


def test_check_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from neuron_explainer.llm.openai import check_environment

    assert check_environment() == "https://api.openai.com/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", " http://localhost:8080/v1 ")
    assert check_environment() == "http://localhost:8080/v1"
    for name, value, words in [
        ("NEURON_EXPLAINER_LLM_TIMEOUT", "soon", "is not a number of seconds > 0"),
        ("NEURON_EXPLAINER_LLM_TIMEOUT", "-1", "is not a number of seconds > 0"),
        ("NEURON_EXPLAINER_LLM_TIMEOUT", "nan", "is not a number of seconds > 0"),
        ("NEURON_EXPLAINER_LLM_CONCURRENCY", "2.5", "is not a whole number >= 1"),
        ("NEURON_EXPLAINER_LLM_CONCURRENCY", "0", "is not a whole number >= 1"),
    ]:
        monkeypatch.setenv(name, value)
        with pytest.raises(InvalidInputError, match=re.escape(f"{name}={value!r} {words}")):
            check_environment()
        monkeypatch.delenv(name)


# -- the timeout and concurrency from the environment ----------------------------------------


def test_the_timeout_and_concurrency_come_from_the_environment_at_the_first_request(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = Script(ok())
    llm = make(script)
    monkeypatch.setenv("NEURON_EXPLAINER_LLM_TIMEOUT", "7.5")
    monkeypatch.setenv("NEURON_EXPLAINER_LLM_CONCURRENCY", "3")
    llm.chat(ask())
    assert read_timeouts(script) == [7.5]
    assert (llm.timeout, llm.max_concurrency) == (7.5, 3)
    given = make(script, timeout=2.0, max_concurrency=5)  # an argument wins
    given.chat(ask())
    assert read_timeouts(script)[-1] == 2.0 and given.max_concurrency == 5
    assigned = make(script)
    assigned.timeout = 4.0  # so does an assignment
    assigned.chat(ask())
    assert read_timeouts(script)[-1] == 4.0 and assigned.max_concurrency == 3


def test_an_unusable_setting_in_the_environment_is_named_at_each_request(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = Script(ok())
    llm = make(script)
    monkeypatch.setenv("NEURON_EXPLAINER_LLM_CONCURRENCY", "many")
    for _ in range(2):
        with pytest.raises(
            InvalidInputError, match="NEURON_EXPLAINER_LLM_CONCURRENCY='many' is not a whole"
        ):
            llm.chat(ask())
    assert script.requests == []
    monkeypatch.setenv("NEURON_EXPLAINER_LLM_CONCURRENCY", "2")
    llm.chat(ask())
    assert llm.max_concurrency == 2


# -- a local server's slot count -------------------------------------------------------------


class Llamacpp:
    """A MockTransport handler like llama.cpp's server: ``GET /props`` says ``total_slots``
    (or answers ``props``: a status, an exception to raise, a body); chats answer ``ok``."""

    def __init__(self, props: Any = None, slots: int = 2) -> None:
        self.props = {"total_slots": slots, "model_alias": "qwen"} if props is None else props
        self.gets: list[httpx.Request] = []
        self.chats = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            self.gets.append(request)
            if isinstance(self.props, BaseException):
                raise self.props
            if isinstance(self.props, int):
                return httpx.Response(self.props)
            return httpx.Response(200, json=self.props)
        self.chats += 1
        await asyncio.sleep(0)
        return ok()


def test_a_local_servers_slot_count_becomes_the_concurrency_once(make: Any) -> None:
    server = Llamacpp(slots=2)
    llm = make(server, base_url="http://127.0.0.1:8080/v1", stream=False)
    assert llm.max_concurrency == 16  # nothing asked before the first request

    async def many() -> None:
        await asyncio.gather(*(llm.achat(ask(f"q{i}")) for i in range(6)))
        await llm.achat(ask("again"))

    asyncio.run(many())
    assert llm.max_concurrency == 2 and llm.settings.slots == 2
    (get,) = server.gets  # asked once, by the first request, for all of them
    assert str(get.url) == "http://127.0.0.1:8080/props"
    assert get.extensions["timeout"]["read"] == 2.0  # a short timeout
    assert server.chats == 7


@pytest.mark.parametrize(
    ("props", "options", "asked", "concurrency"),
    [
        (None, {"max_concurrency": 5}, False, 5),  # given: not asked
        (None, {"detect_slots": False}, False, 16),
        (None, {"base_url": "https://llm.example.com/v1"}, False, 16),  # remote: not asked
        (None, {"base_url": "https://llm.example.com/v1", "detect_slots": True}, True, 2),
        (404, {}, True, 16),  # vLLM, Ollama: no /props
        (httpx.ReadTimeout("busy"), {}, True, 16),
        ({"total_slots": "two"}, {}, True, 16),
        ([1, 2], {}, True, 16),
    ],
    ids=["given", "off", "remote", "asked", "404", "silent", "odd", "list"],
)
def test_when_the_slot_count_is_asked_and_what_else_happens(
    props: Any, options: dict[str, Any], asked: bool, concurrency: int, make: Any
) -> None:
    server = Llamacpp(props=props)
    settings = {"base_url": "http://localhost:8080/v1", "stream": False, **options}
    llm = make(server, **settings)
    assert llm.chat(ask()).choices[0].text == "ok"
    assert bool(server.gets) == asked and llm.max_concurrency == concurrency


def test_concurrency_from_the_environment_means_no_question(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEURON_EXPLAINER_LLM_CONCURRENCY", "4")
    server = Llamacpp()
    llm = make(server, base_url="http://localhost:8080/v1", stream=False)
    llm.chat(ask())
    assert server.gets == [] and llm.max_concurrency == 4


def test_private_urls() -> None:
    from neuron_explainer.llm.urls import is_private_url

    private = [
        "http://localhost:8080/v1",
        "http://127.0.0.1/v1",
        "http://[::1]:8000",
        "http://10.1.2.3/v1",
        "http://172.20.0.5:8000/v1",
        "http://192.168.1.9/v1",
        "http://[fd00::1]/v1",
        "http://169.254.1.1/v1",
        "http://llama:8080/v1",
        "http://gpu-box.local/v1",
        "http://vllm.internal/v1",
    ]
    public = ["https://api.openai.com/v1", "http://8.8.8.8/v1", "http://172.32.0.1/v1", "x"]
    assert [u for u in private if not is_private_url(u)] == []
    assert [u for u in public if is_private_url(u)] == []
