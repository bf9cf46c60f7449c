"""The OpenAI-compatible backend, end to end against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import email.utils
import gc
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_sleep import Sleeps

from neuron_explainer import (
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    CapabilityError,
    InvalidInputError,
    InvalidResponseError,
    LLMConnectionError,
    LLMError,
    LLMTimeoutError,
    RateLimitError,
    ServerError,
)
from neuron_explainer.llm import ChatRequest, Message, PromptLogprobsRequest
from neuron_explainer.llm.cache import ResponseCache, cache_key, public_url
from neuron_explainer.llm.limits import RateLimiter, TokenBucket
from neuron_explainer.llm.openai import DEFAULT_CAPABILITIES, OpenAILLM
from neuron_explainer.llm.prompt_logprobs import _fix_offsets
from neuron_explainer.llm.usage import Price, track_usage
from neuron_explainer.plugins import Registry
from neuron_explainer.testing import Fault, OpenAITestServer, Reply

SECRET = "sk-test-0123456789abcdefSECRET"
ALL = ("chat", "chat_logprobs", "json_schema", "prompt_logprobs")


def ask(text: str = "Say hi", **fields: Any) -> ChatRequest:
    return ChatRequest(messages=(Message(role="user", content=text),), **fields)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "NEURON_EXPLAINER_CACHE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[OpenAITestServer]:
    with OpenAITestServer() as running:
        yield running


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture(params=[False, True], ids=["plain", "streamed"])
def streamed(request: pytest.FixtureRequest) -> bool:
    """Every test that uses `make` runs twice: chat answers whole, then streamed (server-sent
    events put back together), which must not change anything but the two stream fields."""
    return bool(request.param)


def sent_body(received: Any) -> dict[str, Any]:
    """A request's body without the fields that ask for a streamed answer."""
    body = dict(received.body)
    if body.pop("stream", False):
        assert body.pop("stream_options") == {"include_usage": True}
    return body


@pytest.fixture
def make(server: OpenAITestServer, sleeps: Sleeps, streamed: bool) -> Any:
    def build(**options: Any) -> OpenAILLM:
        settings: dict[str, Any] = {
            "base_url": server.base_url,
            "sleep": sleeps,
            "timeout": 5.0,
            "max_retries": 3,
            "capabilities": ALL,
            "stream": streamed,
        }
        settings.update(options)
        return OpenAILLM("test-model", **settings)

    return build


# -- parsing and request mapping -------------------------------------------------------------


def test_chat_maps_the_request_and_parses_content_logprobs_and_usage(
    server: OpenAITestServer, make: Any
) -> None:
    server.add(
        Reply(
            content="Hello world",
            top_logprobs=[{"Hello": -0.1, "Hi": -2.5}, {" world": -0.2, " there": -1.9}],
            prompt_tokens=12,
            completion_tokens=2,
            cached_tokens=4,
            model="test-model-2024",
        )
    )
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    request = ChatRequest(
        messages=(Message(role="system", content="Be brief."), Message(role="user", content="Hi")),
        temperature=0.5,
        max_tokens=20,
        logprobs=True,
        top_logprobs=2,
        response_format=schema,
        stop=("\n\n",),
    )
    response = make().chat(request)

    (sent,) = server.requests
    assert sent.path == "/v1/chat/completions"
    assert sent_body(sent) == {
        "model": "test-model",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "temperature": 0.5,
        "max_tokens": 20,
        "logprobs": True,
        "top_logprobs": 2,
        "response_format": schema,
        "stop": ["\n\n"],
    }
    (choice,) = response.choices
    assert choice.text == "Hello world"
    assert choice.finish_reason == "stop"
    assert choice.logprobs is not None
    assert [t.token for t in choice.logprobs] == ["Hello", " world"]
    assert [t.logprob for t in choice.logprobs] == [-0.1, -0.2]
    assert [(a.token, a.logprob) for a in choice.logprobs[0].top_logprobs] == [
        ("Hello", -0.1),
        ("Hi", -2.5),
    ]
    assert response.usage.model_dump() == {
        "prompt_tokens": 12,
        "completion_tokens": 2,
        "cached_tokens": 4,
    }
    assert response.model == "test-model-2024"


def test_n_choices_come_back_in_order(server: OpenAITestServer, make: Any) -> None:
    server.add(Reply(content=["first", "second"]))
    response = make().chat(ask(n=2, temperature=1.0))
    assert [c.text for c in response.choices] == ["first", "second"]
    assert server.requests[0].body["n"] == 2


def test_fewer_choices_than_asked_is_an_invalid_response(
    server: OpenAITestServer, make: Any
) -> None:
    server.responder = lambda request: {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "one"}}]
    }
    with pytest.raises(InvalidResponseError, match="n=3"):
        make().chat(ask(n=3))


def test_a_body_without_choices_fails_at_once_but_its_usage_is_recorded(
    server: OpenAITestServer, make: Any
) -> None:
    server.responder = lambda request: {"object": "chat.completion", "usage": {"prompt_tokens": 7}}
    with track_usage() as meter, pytest.raises(InvalidResponseError, match="no 'choices'"):
        make().chat(ask())
    assert server.request_count == 1
    assert meter.summary.calls == 1
    assert meter.summary.prompt_tokens == 7


def test_null_content_and_missing_usage_are_tolerated(server: OpenAITestServer, make: Any) -> None:
    server.responder = lambda request: {
        "choices": [{"message": {"role": "assistant", "content": None}, "finish_reason": "stop"}]
    }
    response = make().chat(ask())
    assert response.choices[0].text == ""
    assert response.usage.prompt_tokens == 0


def test_capabilities_are_enforced_before_sending(server: OpenAITestServer, make: Any) -> None:
    llm = make(capabilities=["chat"])
    with pytest.raises(CapabilityError, match="chat_logprobs"):
        llm.chat(ask(logprobs=True))
    with pytest.raises(CapabilityError, match="prompt_logprobs"):
        llm.prompt_logprobs(PromptLogprobsRequest(prompt="x"))
    assert server.request_count == 0
    assert OpenAILLM("gpt-4o-mini").capabilities == DEFAULT_CAPABILITIES
    assert "prompt_logprobs" not in DEFAULT_CAPABILITIES


def test_bad_options_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="unknown capabilities"):
        OpenAILLM("m", capabilities=["telepathy"])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="max_concurrency"):
        OpenAILLM("m", max_concurrency=0)
    with pytest.raises(InvalidInputError, match="model"):
        OpenAILLM("")


# -- retries -----------------------------------------------------------------------------------

RETRYABLE = {
    "429": (Fault.rate_limit(), RateLimitError),
    "500": (Fault.server_error(500), ServerError),
    "502": (Fault.server_error(502), ServerError),
    "503": (Fault.server_error(503), ServerError),
    "408": (Fault.error(408, "request timeout"), LLMTimeoutError),
    "409": (Fault.error(409, "conflict"), ServerError),
    "disconnect": (Fault.disconnect(), LLMConnectionError),
    "invalid-json": (Fault.invalid_json(), InvalidResponseError),
    "truncated": (Fault.truncated(), LLMConnectionError),
}


@pytest.mark.parametrize("name", sorted(RETRYABLE))
def test_a_retryable_fault_is_retried_then_succeeds(
    name: str, server: OpenAITestServer, make: Any, sleeps: Sleeps
) -> None:
    fault, _ = RETRYABLE[name]
    server.fail_next(fault, times=2)
    server.add("recovered")
    assert make().chat(ask()).choices[0].text == "recovered"
    assert server.request_count == 3
    assert len(sleeps.waits) == 2


@pytest.mark.parametrize("name", sorted(RETRYABLE))
def test_retries_are_bounded_and_the_last_failure_is_raised(
    name: str, server: OpenAITestServer, make: Any, sleeps: Sleeps
) -> None:
    fault, error = RETRYABLE[name]
    server.fail_next(fault, times=10)
    with pytest.raises(error, match="giving up after 3 attempts") as caught:
        make(max_retries=2).chat(ask())
    assert caught.value.attempts == 3
    assert server.request_count == 3
    assert len(sleeps.waits) == 2


def test_backoff_is_exponential_with_jitter(
    server: OpenAITestServer, make: Any, sleeps: Sleeps
) -> None:
    server.fail_next(Fault.server_error(500), times=4)
    make(max_retries=4, retry_base_wait=1.0, retry_max_wait=5.0).chat(ask())
    bounds = [(0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (2.5, 5.0)]
    assert len(sleeps.waits) == 4
    for wait, (low, high) in zip(sleeps.waits, bounds, strict=True):
        assert low <= wait <= high


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault.rate_limit(7), 7.0),
        (Fault.rate_limit(0.01), 0.01),
        (Fault.rate_limit(retry_after_ms=1500), 1.5),
        (Fault.rate_limit(3, retry_after_ms=250), 0.25),  # the precise header wins
        (Fault.server_error(503, retry_after=2), 2.0),
        (Fault.rate_limit(1000), 30.0),  # capped at retry_max_wait
    ],
    ids=["seconds", "tiny", "ms", "ms-wins", "503", "capped"],
)
def test_retry_after_is_honoured(
    fault: Fault, expected: float, server: OpenAITestServer, make: Any, sleeps: Sleeps
) -> None:
    server.fail_next(fault)
    make(retry_max_wait=30.0).chat(ask())
    assert sleeps.waits == [pytest.approx(expected)]


def test_retry_after_as_an_http_date(server: OpenAITestServer, make: Any, sleeps: Sleeps) -> None:
    server.fail_next(Fault.rate_limit(email.utils.formatdate(time.time() + 20, usegmt=True)))
    make().chat(ask())
    (wait,) = sleeps.waits
    assert 15 < wait <= 20


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, BadRequestError),
        (422, BadRequestError),
    ],
)
def test_client_errors_fail_at_once_with_the_servers_message(
    status: int, error: type[LLMError], server: OpenAITestServer, make: Any, sleeps: Sleeps
) -> None:
    server.fail_next(Fault.error(status, f"the model says no ({status})", code="nope"))
    with pytest.raises(error, match=rf"the model says no \({status}\)") as caught:
        make().chat(ask())
    assert caught.value.status_code == status
    assert caught.value.attempts == 1
    assert "not retried after 1 attempt" in str(caught.value)
    assert server.request_count == 1
    assert sleeps.waits == []


def test_out_of_quota_is_not_retried(server: OpenAITestServer, make: Any) -> None:
    server.fail_next(Fault.rate_limit(0, code="insufficient_quota", message="You exceeded it."))
    with pytest.raises(RateLimitError, match="out of quota"):
        make().chat(ask())
    assert server.request_count == 1


def test_a_timeout_is_retried_then_raised(
    server: OpenAITestServer, make: Any, streamed: bool
) -> None:
    server.fail_next(Fault.timeout(hold=10), times=2)
    silent = "the server sent nothing for" if streamed else "no answer within"
    # The retry waited twice as long as the first attempt: 0.4 s.
    with pytest.raises(LLMTimeoutError, match=rf"{silent} 0\.4s \(ReadTimeout\)") as caught:
        make(timeout=0.2, max_retries=1).chat(ask())
    assert caught.value.attempts == 2
    server.fail_next(Fault.timeout(hold=10))
    assert make(timeout=0.2, max_retries=1).chat(ask()).choices[0].text == "ok"


def test_an_unreachable_server_is_a_connection_error(make: Any) -> None:
    with OpenAITestServer() as gone:
        url = gone.base_url
    with pytest.raises(LLMConnectionError, match="giving up after 2 attempts"):
        make(base_url=url, max_retries=1).chat(ask())


# -- limits ----------------------------------------------------------------------------------


def test_concurrency_limit_is_never_exceeded(make: Any) -> None:
    with OpenAITestServer(latency=0.05) as slow:
        llm = make(base_url=slow.base_url, max_concurrency=3)

        async def many() -> list[str]:
            responses = await asyncio.gather(*(llm.achat(ask(f"q{i}")) for i in range(12)))
            await llm.aclose()
            return [r.choices[0].text for r in responses]

        assert asyncio.run(many()) == ["ok"] * 12
        assert slow.request_count == 12
        assert slow.max_in_flight <= 3
        assert slow.max_in_flight >= 2  # the server really saw them overlap


def test_the_concurrency_defaults_to_a_local_servers_slot_count() -> None:
    """A llama.cpp server generates ``slots`` answers at once; the others wait in its queue and
    get no bytes, so a streamed request sent beyond the slot count times out while it waits.
    Asked once for its slots, the backend sends no more than it can serve."""
    long = Reply(content=" ".join(["word"] * 20))  # 20 chunks, 0.02 s apart: 0.4 s an answer
    with OpenAITestServer(slots=1, chunk_delay=0.02, default=long) as llama:
        options = {"base_url": llama.base_url, "timeout": 0.3, "max_retries": 0, "stream": True}
        crowding = OpenAILLM("m", max_concurrency=3, **options)  # more than it serves

        async def three(llm: OpenAILLM) -> list[str]:
            outcomes = await asyncio.gather(
                *(llm.achat(ask(f"q{i}")) for i in range(3)), return_exceptions=True
            )
            await llm.aclose()
            return [type(o).__name__ if isinstance(o, Exception) else "ok" for o in outcomes]

        assert sorted(asyncio.run(three(crowding))) == ["LLMTimeoutError"] * 2 + ["ok"]
        assert llama.probes == []  # a given concurrency: the server is not asked
        detected = OpenAILLM("m", **options)
        assert asyncio.run(three(detected)) == ["ok"] * 3
        assert detected.max_concurrency == 1
        assert [p.path for p in llama.probes] == ["/props"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_token_bucket_reserves_and_refills() -> None:
    clock = FakeClock()
    bucket = TokenBucket(60, clock=clock)  # one a second, burst 1
    assert bucket.capacity == 1
    assert bucket.reserve() == 0
    assert bucket.reserve() == pytest.approx(1.0)
    assert bucket.reserve() == pytest.approx(2.0)  # queued behind the previous reservation
    clock.now += 10
    assert bucket.level == pytest.approx(1.0)  # refilled, but never above the burst
    bucket.reserve(5)  # more than the burst: allowed, it just waits longer
    assert bucket.level == pytest.approx(-4.0)
    bucket.refund(5)
    assert bucket.level == pytest.approx(1.0)
    with pytest.raises(ValueError, match="rate_per_minute"):
        TokenBucket(0)


def test_rate_limiter_paces_requests_and_tokens() -> None:
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=120, clock=clock, sleep=clock.sleep)

    async def five() -> list[float]:
        return [await limiter.acquire() for _ in range(5)]

    start = clock.now
    waits = asyncio.run(five())
    assert waits[:2] == [0, 0]  # a burst of 2 (one second's worth), then 2 a second
    assert waits[2:] == [pytest.approx(0.5)] * 3
    assert clock.now - start == pytest.approx(1.5)

    tokens = RateLimiter(tokens_per_minute=600, clock=clock, sleep=clock.sleep)
    assert asyncio.run(tokens.acquire(10)) == 0  # the burst: one second's worth
    assert asyncio.run(tokens.acquire(100)) == pytest.approx(10.0)  # 100 tokens at 10/s
    assert not RateLimiter().active


def test_rate_limiter_refunds_a_cancelled_wait() -> None:
    clock = FakeClock()

    async def never(seconds: float) -> None:
        raise asyncio.CancelledError

    limiter = RateLimiter(requests_per_minute=60, clock=clock, sleep=never)
    assert limiter.requests is not None
    asyncio.run(limiter.acquire())
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(limiter.acquire())
    assert limiter.requests.level == pytest.approx(0.0)


def test_the_backend_waits_for_its_rate_limit(
    server: OpenAITestServer, make: Any, sleeps: Sleeps
) -> None:
    llm = make(requests_per_minute=60)
    for _ in range(3):
        llm.chat(ask())
    assert len(sleeps.waits) == 2  # the first request goes at once
    assert sleeps.waits[1] > sleeps.waits[0] > 0.5
    assert server.request_count == 3


# -- the API key -----------------------------------------------------------------------------


def test_the_key_is_read_at_the_first_request(
    monkeypatch: pytest.MonkeyPatch, sleeps: Sleeps
) -> None:
    with OpenAITestServer(api_key=SECRET) as guarded:
        llm = OpenAILLM("m", base_url=guarded.base_url, sleep=sleeps)
        with pytest.raises(AuthenticationError, match="Incorrect API key"):
            llm.chat(ask())  # local servers may be keyless, but this one wants a key
        monkeypatch.setenv("OPENAI_API_KEY", SECRET)
        assert llm.chat(ask()).choices[0].text == "ok"
        assert guarded.requests[-1].headers["authorization"] == f"Bearer {SECRET}"


def test_a_remote_server_without_a_key_is_refused_before_sending(server: OpenAITestServer) -> None:
    llm = OpenAILLM("gpt-4o-mini", base_url="https://api.example.invalid/v1")
    with pytest.raises(AuthenticationError, match="OPENAI_API_KEY") as caught:
        llm.chat(ask())
    assert caught.value.attempts == 0


def test_the_base_url_is_read_from_the_environment_lazily(
    server: OpenAITestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = OpenAILLM("m")
    assert llm.base_url == "https://api.openai.com/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    assert llm.chat(ask()).choices[0].text == "ok"
    assert server.request_count == 1


def test_importing_reads_no_environment_and_no_httpx() -> None:
    code = (
        "import os, sys\n"
        "import neuron_explainer, neuron_explainer.plugins\n"
        "assert 'httpx' not in sys.modules, 'httpx imported eagerly'\n"
        "from neuron_explainer.llm.openai import OpenAILLM\n"
        "llm = OpenAILLM('m')\n"
        "os.environ['OPENAI_BASE_URL'] = 'http://127.0.0.1:9/v1'\n"
        "print(llm.base_url)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "http://127.0.0.1:9/v1"


def test_the_key_never_leaks(
    server: OpenAITestServer, make: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cache = tmp_path / "cache.sqlite"
    llm = make(api_key=SECRET, cache=cache, organization="org-1")
    assert SECRET not in repr(llm) + str(llm) + repr(vars(llm)) + str(llm.info)
    llm.chat(ask())  # a success, stored in the cache
    # The server quotes the key back in its error, as OpenAI's 401 does.
    server.fail_next(Fault.error(401, f"Incorrect API key provided: {SECRET}."))
    with pytest.raises(AuthenticationError) as refused:
        llm.chat(ask("another"))
    server.fail_next(Fault.server_error(500, f"boom {SECRET}"), times=4)
    with pytest.raises(ServerError) as failed:
        llm.chat(ask("a third"))
    for error in (refused.value, failed.value):
        assert SECRET not in str(error) + repr(error)
        assert "***" in str(error)
    assert "retrying in" in caplog.text  # the retries were logged, without the key
    assert SECRET not in caplog.text
    assert server.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert server.requests[0].headers["openai-organization"] == "org-1"
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert stored and SECRET.encode() not in stored


# -- the cache -------------------------------------------------------------------------------


def test_a_cache_hit_spends_nothing_and_survives_a_new_backend(
    server: OpenAITestServer, make: Any, tmp_path: Path
) -> None:
    path = tmp_path / "sub" / "cache.sqlite"
    server.add(Reply(content="cached answer", prompt_tokens=10, completion_tokens=3))
    price = Price(prompt=1.0, completion=2.0)
    with track_usage() as first:
        assert make(cache=path, price=price).chat(ask()).choices[0].text == "cached answer"
    assert first.summary.calls == 1
    assert first.summary.cost_usd == pytest.approx((10 * 1.0 + 3 * 2.0) / 1e6)
    with track_usage() as again:
        response = make(cache=path, price=price).chat(ask())  # a new backend object
    assert response.choices[0].text == "cached answer"
    assert response.usage.prompt_tokens == 10
    assert server.request_count == 1
    assert again.summary.cache_hits == 1
    assert again.summary.calls == 0
    assert again.summary.cost_usd == 0
    make(cache=path).chat(ask(temperature=0.7))  # another request body: a miss
    assert server.request_count == 2
    assert len(ResponseCache(path)) == 2


def test_a_cache_hit_needs_no_budget(server: OpenAITestServer, make: Any, tmp_path: Path) -> None:
    llm = make(cache=tmp_path / "c.sqlite", price=Price(prompt=1000.0, completion=1000.0))
    llm.chat(ask())
    with track_usage(budget_usd=0.0) as meter:
        llm.chat(ask())
    assert meter.summary.cache_hits == 1


def test_the_cache_comes_from_the_environment_unless_turned_off(
    server: OpenAITestServer, make: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = make()
    monkeypatch.setenv("NEURON_EXPLAINER_CACHE", str(tmp_path / "env.sqlite"))
    llm.chat(ask())
    llm.chat(ask())
    assert server.request_count == 1
    assert llm.cache is not None and llm.cache.path == tmp_path / "env.sqlite"
    off = make(cache=False)
    off.chat(ask())
    off.chat(ask())
    assert server.request_count == 3
    assert off.cache is None


def test_errors_are_never_cached(server: OpenAITestServer, make: Any, tmp_path: Path) -> None:
    llm = make(cache=tmp_path / "c.sqlite")
    server.fail_next(Fault.error(400, "bad"))
    with pytest.raises(BadRequestError):
        llm.chat(ask())
    server.responder = lambda request: {"choices": []}
    with pytest.raises(InvalidResponseError):
        llm.chat(ask())
    server.responder = None
    assert llm.chat(ask()).choices[0].text == "ok"
    assert server.request_count == 3
    assert len(ResponseCache(tmp_path / "c.sqlite")) == 1


def test_cache_keys_cover_the_request_and_never_credentials() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0.0}
    key = cache_key("chat/completions", "https://h/v1", "m", body)
    assert key == cache_key("chat/completions", "https://user:pw@h/v1?api-key=k", "m", body)
    assert key != cache_key("chat/completions", "https://h/v1", "m", {**body, "n": 2})
    assert key != cache_key("completions", "https://h/v1", "m", body)
    assert key != cache_key("chat/completions", "https://other/v1", "m", body)
    assert public_url("https://u:p@h:8/x?api-version=1&api-key=s&sig=t") == (
        "https://h:8/x?api-version=1"
    )


def test_the_cache_is_safe_under_concurrent_callers(
    server: OpenAITestServer, make: Any, tmp_path: Path
) -> None:
    llm = make(cache=tmp_path / "c.sqlite")

    async def many() -> None:
        await asyncio.gather(*(llm.achat(ask(f"q{i % 5}")) for i in range(20)))
        await llm.aclose()

    asyncio.run(many())
    asyncio.run(many())
    assert len(ResponseCache(tmp_path / "c.sqlite")) == 5
    assert server.request_count <= 20


# -- cost and budget -------------------------------------------------------------------------


def test_the_budget_stops_a_call_before_it_is_sent(server: OpenAITestServer, make: Any) -> None:
    llm = make(price=Price(prompt=1.0, completion=1.0))
    with track_usage(budget_usd=0.001) as meter:
        with pytest.raises(BudgetExceededError, match="could cost up to"):
            llm.chat(ask())  # no max_tokens: 4,096 completion tokens assumed
        assert llm.chat(ask(max_tokens=10)).choices[0].text == "ok"
    assert server.request_count == 1
    assert meter.summary.calls == 1
    assert meter.summary.cost_usd > 0


def test_usage_goes_to_every_open_meter(server: OpenAITestServer, make: Any) -> None:
    server.add(Reply(content="a", prompt_tokens=100, completion_tokens=10, cached_tokens=50))
    llm = make(price=Price(prompt=2.0, completion=8.0, cached_prompt=1.0))
    with track_usage() as outer, track_usage() as inner:
        llm.chat(ask())
    expected = (50 * 2.0 + 50 * 1.0 + 10 * 8.0) / 1e6
    for meter in (outer, inner):
        assert meter.summary.prompt_tokens == 100
        assert meter.summary.cached_tokens == 50
        assert meter.summary.cost_usd == pytest.approx(expected)


# -- prompt logprobs -------------------------------------------------------------------------

PROMPT = "The cat sat on the mat.\nIt purred."


def score(llm: OpenAILLM, prompt: str = PROMPT, k: int = 3) -> list[Any]:
    return list(llm.prompt_logprobs(PromptLogprobsRequest(prompt=prompt, top_logprobs=k)).tokens)


def test_prompt_logprobs_through_echo(server: OpenAITestServer, make: Any) -> None:
    tokens = score(make())
    assert "".join(t.token for t in tokens) == PROMPT
    assert [t.offset for t in tokens] == [PROMPT.index(t.token, t.offset) for t in tokens]
    assert tokens[0].logprob is None and tokens[0].top_logprobs == ()
    assert all(t.logprob is not None and len(t.top_logprobs) == 3 for t in tokens[1:])
    assert all(t.top_logprobs[0].token == t.token for t in tokens[1:])  # most likely first
    assert server.requests[0].path == "/v1/completions"
    assert server.requests[0].body == {
        "model": "test-model",
        "prompt": PROMPT,
        "max_tokens": 0,
        "temperature": 0.0,
        "echo": True,
        "logprobs": 3,
    }


def test_generated_tokens_after_the_echo_are_dropped(server: OpenAITestServer, make: Any) -> None:
    reference = score(make())
    assert score(make(prompt_logprobs_max_tokens=1)) == reference
    assert server.requests[-1].body["max_tokens"] == 1


def test_offsets_shifted_by_a_constant_are_recomputed(server: OpenAITestServer, make: Any) -> None:
    reference = score(make())
    server.offset_shift = 7
    assert score(make()) == reference


def test_logprobs_shifted_by_one_position_are_refused(server: OpenAITestServer, make: Any) -> None:
    server.logprob_shift = True
    with pytest.raises(InvalidResponseError, match="shifted by one position"):
        score(make())
    assert server.request_count == 1  # a protocol mismatch is not retried


def echo_answer(tokens: list[str], offsets: list[int], values: list[float | None]) -> Any:
    tops = [None if v is None else {t: v} for t, v in zip(tokens, values, strict=True)]
    logprobs = {
        "tokens": tokens,
        "token_logprobs": values,
        "top_logprobs": tops,
        "text_offset": offsets,
    }
    return lambda request: {"choices": [{"text": "".join(tokens), "logprobs": logprobs}]}


@pytest.mark.parametrize(
    ("tokens", "offsets", "values", "problem"),
    [
        (["The", " dog"], [0, 3], [None, -1.0], "do not spell the prompt"),
        (["The", " cat"], [0, 3], [None, -1.0], "spell only the first 7"),
        (["The", " cat", " sat"], [0, 3, 9], [None, -1.0, -2.0], "text_offset"),
        (["The", " cat", " sat"], [0, 3, 7], [None, None, -2.0], "no value for token 1"),
    ],
    ids=["wrong-text", "too-short", "offsets", "missing-logprob"],
)
def test_echo_answers_that_do_not_line_up_are_refused(
    tokens: list[str],
    offsets: list[int],
    values: list[float | None],
    problem: str,
    server: OpenAITestServer,
    make: Any,
) -> None:
    server.responder = echo_answer(tokens, offsets, values)
    with pytest.raises(InvalidResponseError, match=problem):
        score(make(), "The cat sat")


def test_a_logprob_on_the_first_token_is_dropped(server: OpenAITestServer, make: Any) -> None:
    server.responder = echo_answer(["The", " cat"], [0, 3], [-5.0, -1.0])
    tokens = score(make(), "The cat")
    assert [t.logprob for t in tokens] == [None, -1.0]


def test_byte_offsets_are_recognised() -> None:
    texts = ["Ca", "fé", " au", " lait"]
    assert _fix_offsets([0, 2, 4, 7], texts) is None
    assert "UTF-8 byte" in (_fix_offsets([0, 2, 5, 8], texts) or "")
    assert "shifted by 3" in (_fix_offsets([3, 5, 7, 10], texts) or "")
    with pytest.raises(InvalidResponseError, match=r"text_offset\[2\]"):
        _fix_offsets([0, 2, 9, 1], texts)


def test_prompt_logprobs_the_vllm_way_agree_with_echo(server: OpenAITestServer, make: Any) -> None:
    echo = score(make())
    vllm = score(make(prompt_logprobs_style="vllm"))
    assert vllm == echo
    body = server.requests[-1].body
    assert body["prompt_logprobs"] == 3 and body["max_tokens"] == 1 and "echo" not in body


# -- URLs, loops, the registry ---------------------------------------------------------------


def test_an_azure_style_base_url_keeps_its_query(server: OpenAITestServer, make: Any) -> None:
    base = f"{server.url}/openai/deployments/my-gpt/?api-version=2024-06-01"
    make(base_url=base).chat(ask())
    make(base_url=base).prompt_logprobs(PromptLogprobsRequest(prompt="Hi there"))
    chat, completion = server.requests
    assert chat.path == "/openai/deployments/my-gpt/chat/completions"
    assert completion.path == "/openai/deployments/my-gpt/completions"
    assert chat.query == completion.query == "api-version=2024-06-01"


def test_sync_calls_in_fresh_event_loops(server: OpenAITestServer, make: Any) -> None:
    llm = make()
    assert llm.chat(ask()).choices[0].text == "ok"
    assert llm.chat(ask("again")).choices[0].text == "ok"
    assert asyncio.run(llm.achat(ask())).choices[0].text == "ok"
    assert llm.client.open_loops == 0  # every loop's client was closed when its loop ended
    gc.collect()  # an unclosed socket would warn (and fail) here


def test_async_with_closes_the_client(server: OpenAITestServer, make: Any) -> None:
    async def run() -> str:
        async with make() as llm:
            text = (await llm.achat(ask())).choices[0].text
            assert llm.client.open_loops == 1
        assert llm.client.open_loops == 0
        return text

    assert asyncio.run(run()) == "ok"


def test_the_registry_builds_openai_llms(server: OpenAITestServer) -> None:
    registry = Registry(entry_points=False)
    llm = registry.llm("openai:some-model")
    assert isinstance(llm, OpenAILLM)
    assert llm.name == "openai:some-model"
    assert registry.llm("openai:some-model") is llm  # shared: one client, one set of limits
    built = registry.llm("openai:other", base_url=server.base_url, max_retries=0)
    assert isinstance(built, OpenAILLM) and built.max_retries == 0
    assert built.chat(ask()).choices[0].text == "ok"
    with pytest.raises(InvalidInputError, match="does not accept"):
        registry.llm("openai:m", nonsense=True)
    assert "openai" in {e.name for e in registry.components("llm_provider")}


def test_the_cache_is_shared_between_processes(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    code = (
        "import sys\n"
        "from neuron_explainer.llm.cache import ResponseCache\n"
        "cache = ResponseCache(sys.argv[1])\n"
        "for i in range(100):\n"
        "    cache.put(f'child{i}', {'i': i}, endpoint='e', model='m')\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(path)])
    cache = ResponseCache(path)
    for i in range(100):
        cache.put(f"parent{i}", {"i": i}, endpoint="e", model="m")
    assert child.wait(timeout=60) == 0
    assert len(cache) == 200
    assert cache.get("child99") == {"i": 99}
    cache.close()
    assert ResponseCache(path).get("parent0") == {"i": 0}


def test_an_empty_bos_token_before_the_prompt_is_dropped(
    server: OpenAITestServer, make: Any
) -> None:
    server.responder = echo_answer(["", "The", " cat"], [0, 0, 3], [None, -3.0, -1.0])
    tokens = score(make(), "The cat")
    assert [(t.token, t.offset, t.logprob) for t in tokens] == [("The", 0, None), (" cat", 3, -1.0)]


def vllm_answer(entries: list[Any]) -> Any:
    return lambda request: {"choices": [{"text": "", "prompt_logprobs": entries}]}


def entry(*alternatives: tuple[str, float]) -> dict[str, Any]:
    return {
        str(i): {"logprob": value, "rank": i + 1, "decoded_token": text}
        for i, (text, value) in enumerate(alternatives)
    }


def test_vllm_answers_are_lined_up_or_refused(server: OpenAITestServer, make: Any) -> None:
    llm = make(prompt_logprobs_style="vllm")
    # A BOS token first: its entry is null, and the prompt's first token is scored after it.
    server.responder = vllm_answer([None, entry(("Hi", -2.0)), entry((" there", -1.0))])
    tokens = score(llm, "Hi there")
    assert [(t.token, t.logprob) for t in tokens] == [("Hi", None), (" there", -1.0)]
    # Two ways to spell "aaa" from these entries: refused.
    server.responder = vllm_answer([None, entry(("a", -1.0), ("aa", -2.0))])
    with pytest.raises(InvalidResponseError, match="more than one way"):
        score(llm, "aaa")
    server.responder = vllm_answer([None, entry(("dog", -1.0))])
    with pytest.raises(InvalidResponseError, match="cannot be lined up"):
        score(llm, "a cat")
    # prompt_token_ids settle which entry is the prompt's own token.
    server.responder = lambda request: {
        "choices": [
            {
                "prompt_logprobs": [None, entry(("a", -1.0), ("aa", -2.0))],
                "prompt_token_ids": [7, 1],
            }
        ]
    }
    assert [t.token for t in score(llm, "aaa")] == ["a", "aa"]


def test_a_server_that_ignores_echo_is_named(server: OpenAITestServer, make: Any) -> None:
    server.responder = lambda request: {
        "choices": [{"text": " It", "logprobs": {"content": [{"token": " It", "logprob": -1.0}]}}]
    }
    with pytest.raises(InvalidResponseError, match="ignores `echo`"):
        score(make(), "The cat")


def test_logprob_parsing_fast_path_equals_the_checked_path_and_defers_to_it() -> None:
    from neuron_explainer.llm import protocol

    items = [
        {
            "token": "7",
            "logprob": -1,  # an int is a number
            "bytes": [55],  # extra keys are ignored, as OpenAI sends them
            "top_logprobs": [
                {"token": "6", "logprob": -2.5, "bytes": [54]},
                {"token": "7", "logprob": -1},
                {"token": "8", "logprob": float("-inf")},
            ],
        },
        {"token": "\n", "logprob": -0.01, "top_logprobs": None},
        {"token": "x", "logprob": -0.5},
    ]
    where = "choices[0].logprobs.content"
    fast = protocol._well_formed_logprobs(items)
    assert fast == protocol._checked_logprobs(items, where)
    assert fast is not None and [t.token for t in fast[0].top_logprobs] == ["7", "6", "8"]
    assert all(type(t.logprob) is float for t in fast)
    for broken in (
        [{"token": 7, "logprob": -1.0}],
        [{"token": "7", "logprob": True}],
        [{"token": "7", "logprob": "-1.0"}],
        [{"token": "7"}],
        [{"token": "7", "logprob": -1.0, "top_logprobs": [{"token": "6"}]}],
        [{"token": "7", "logprob": -1.0, "top_logprobs": {"6": -2.0}}],
        ["7"],
    ):
        assert protocol._well_formed_logprobs(broken) is None, broken

    def chat(content: list[Any]) -> Any:
        data = {"choices": [{"message": {"content": ""}, "logprobs": {"content": content}}]}
        return protocol.parse_chat(data, 1).choices[0].logprobs

    # The whole parser takes the checked path when the fast one declines: alternatives given
    # as a mapping are not the chat form, but the checked path reads them.
    mapped = [{"token": "7", "logprob": -1.0, "top_logprobs": {"6": -2.0, "7": -1.0}}]
    assert chat(mapped) == protocol._checked_logprobs(mapped, where)
    assert [a.token for a in chat(mapped)[0].top_logprobs] == ["7", "6"]
    # ... and a broken item still gets the checked path's message.
    with pytest.raises(InvalidResponseError, match=r"logprobs\.content\[0\]\.token is int"):
        chat([{"token": 7}])
    assert chat(items) == fast


def test_parsing_pauses_the_garbage_collector_and_always_restores_it() -> None:
    from neuron_explainer.llm.transport import gc_paused

    seen: list[bool] = []
    assert gc.isenabled()
    with gc_paused():
        seen.append(gc.isenabled())
    assert seen == [False] and gc.isenabled()
    with pytest.raises(KeyError), gc_paused():
        raise KeyError("parse failed")
    assert gc.isenabled()
    gc.disable()
    try:  # a caller that turned it off keeps it off
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
