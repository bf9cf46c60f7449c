"""The OpenAI-protocol test server itself, spoken to with a plain HTTP client."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from neuron_explainer.llm import openai as openai_backend
from neuron_explainer.testing import Fault, OpenAITestServer, ReceivedRequest, Reply
from neuron_explainer.testing.server import simple_tokenize

DOCS = Path(__file__).resolve().parent.parent / "docs"
EXAMPLE = re.compile(
    r"<!-- openai-server-example:start -->\n```python\n(?P<code>.*?)```\n"
    r"<!-- openai-server-example:end -->",
    re.DOTALL,
)


@pytest.fixture
def server() -> Iterator[OpenAITestServer]:
    with OpenAITestServer() as running:
        yield running


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as http:
        yield http


def chat(client: httpx.Client, server: OpenAITestServer, **body: Any) -> httpx.Response:
    payload = {"model": "m", "messages": [{"role": "user", "content": "Hi there"}], **body}
    return client.post(f"{server.base_url}/chat/completions", json=payload)


def test_the_documented_example_runs() -> None:
    match = EXAMPLE.search((DOCS / "testing.md").read_text(encoding="utf-8"))
    assert match, "docs/testing.md has no openai-server-example block"
    exec(compile(match["code"], "docs/testing.md", "exec"), {})


def test_the_backend_environment_variables_are_documented() -> None:
    page = (DOCS / "llm.md").read_text(encoding="utf-8")
    names = [value for key, value in vars(openai_backend).items() if key.startswith("ENV_")]
    assert len(names) == 5
    assert [name for name in names if name not in page] == []


def test_scripted_answers_then_the_default(server: OpenAITestServer, client: httpx.Client) -> None:
    server.add("first", Reply(content="second", prompt_tokens=9, completion_tokens=2))
    answers = [chat(client, server).json() for _ in range(3)]
    assert [a["choices"][0]["message"]["content"] for a in answers] == ["first", "second", "ok"]
    assert answers[0]["usage"]["prompt_tokens"] == 2  # "Hi", " there"
    assert answers[1]["usage"]["prompt_tokens"] == 9
    assert answers[0]["object"] == "chat.completion"
    assert server.remaining == 0
    assert server.request_count == 3
    request = server.requests[0]
    assert isinstance(request, ReceivedRequest)
    assert request.endpoint == "chat/completions"
    assert request.body["model"] == "m"
    assert request.headers["content-type"] == "application/json"


def test_logprobs_max_tokens_and_stop(server: OpenAITestServer, client: httpx.Client) -> None:
    server.add("one two three four", "alpha. beta")
    answer = chat(client, server, logprobs=True, top_logprobs=2, max_tokens=2).json()
    (choice,) = answer["choices"]
    assert choice["message"]["content"] == "one two"
    assert choice["finish_reason"] == "length"
    tokens = choice["logprobs"]["content"]
    assert [t["token"] for t in tokens] == ["one", " two"]
    assert all(len(t["top_logprobs"]) == 2 for t in tokens)
    assert all(t["top_logprobs"][0]["logprob"] >= t["top_logprobs"][1]["logprob"] for t in tokens)
    stopped = chat(client, server, stop=".").json()["choices"][0]
    assert stopped["message"]["content"] == "alpha"


def test_n_choices(server: OpenAITestServer, client: httpx.Client) -> None:
    server.add(Reply(content=["a", "b"]))
    choices = chat(client, server, n=3).json()["choices"]
    assert [c["message"]["content"] for c in choices] == ["a", "b", "a"]
    assert [c["index"] for c in choices] == [0, 1, 2]


def test_the_responder_sees_the_request(server: OpenAITestServer, client: httpx.Client) -> None:
    seen: list[ReceivedRequest] = []

    def respond(request: ReceivedRequest) -> Any:
        seen.append(request)
        return None if request.body.get("n") else {"choices": [], "custom": True}

    server.responder = respond
    assert chat(client, server).json() == {"choices": [], "custom": True}
    assert chat(client, server, n=1).json()["choices"][0]["message"]["content"] == "ok"
    assert len(seen) == 2


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        (Fault.rate_limit(retry_after=2, retry_after_ms=1500), 429),
        (Fault.server_error(503), 503),
        (Fault.error(400, "bad things", code="bad"), 400),
    ],
)
def test_http_faults_have_openai_error_bodies(
    fault: Fault, status: int, server: OpenAITestServer, client: httpx.Client
) -> None:
    server.fail_next(fault)
    response = chat(client, server)
    assert response.status_code == status
    assert response.json()["error"]["message"] == fault.message
    if status == 429:
        assert response.headers["retry-after"] == "2"
        assert response.headers["retry-after-ms"] == "1500"
    assert chat(client, server).status_code == 200  # one fault, one request


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.disconnect(), httpx.RemoteProtocolError),
        (Fault.truncated(), httpx.RemoteProtocolError),
        (Fault.timeout(hold=5), httpx.ReadTimeout),
    ],
)
def test_connection_faults(
    fault: Fault, error: type[Exception], server: OpenAITestServer, client: httpx.Client
) -> None:
    server.fail_next(fault)
    with pytest.raises(error):
        client.post(
            f"{server.base_url}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
            timeout=0.2,
        )


def test_invalid_json_and_garbage(server: OpenAITestServer, client: httpx.Client) -> None:
    server.fail_next(Fault.invalid_json(), Fault.garbage("no JSON here"))
    with pytest.raises(json.JSONDecodeError):
        chat(client, server).json()
    assert chat(client, server).json()["choices"][0]["message"]["content"] == "no JSON here"


def test_random_faults_are_seeded(client: httpx.Client) -> None:
    def statuses(seed: int) -> list[int]:
        with OpenAITestServer(fault_rate=0.5, faults=[Fault.server_error(500)], seed=seed) as flaky:
            return [chat(client, flaky).status_code for _ in range(12)]

    first = statuses(1)
    assert first == statuses(1)
    assert {200, 500} == set(first)


def test_an_api_key_is_required_when_configured(client: httpx.Client) -> None:
    with OpenAITestServer(api_key="sk-right") as guarded:
        payload = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        url = f"{guarded.base_url}/chat/completions"
        refused = client.post(url, json=payload, headers={"Authorization": "Bearer sk-wrong"})
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
        assert client.post(url, json=payload, headers={"api-key": "sk-right"}).status_code == 200
        ok = client.post(url, json=payload, headers={"Authorization": "Bearer sk-right"})
        assert ok.status_code == 200


def test_bad_requests_and_unknown_paths(server: OpenAITestServer, client: httpx.Client) -> None:
    assert chat(client, server, n=0).status_code == 400
    assert client.post(f"{server.base_url}/chat/completions", content=b"{").status_code == 400
    assert client.post(f"{server.base_url}/embeddings", json={"model": "m"}).status_code == 404
    models = client.get(f"{server.base_url}/models").json()
    assert models["data"] == [{"id": "test-model"}]


def test_echo_scores_the_prompt(server: OpenAITestServer, client: httpx.Client) -> None:
    prompt = "The cat sat."
    body = {"model": "m", "prompt": prompt, "echo": True, "logprobs": 2, "max_tokens": 1}
    choice = client.post(f"{server.base_url}/completions", json=body).json()["choices"][0]
    logprobs = choice["logprobs"]
    assert logprobs["tokens"] == ["The", " cat", " sat", ".", " ok"]
    assert logprobs["text_offset"] == [0, 3, 7, 11, 12]
    assert logprobs["token_logprobs"][0] is None
    assert logprobs["top_logprobs"][0] is None
    assert all(len(top) == 2 for top in logprobs["top_logprobs"][1:])
    assert choice["text"] == prompt + " ok"
    server.offset_shift, server.logprob_shift = 3, True
    shifted = client.post(f"{server.base_url}/completions", json=body).json()["choices"][0]
    assert shifted["logprobs"]["text_offset"] == [3, 6, 10, 14, 15]
    assert shifted["logprobs"]["token_logprobs"][0] == logprobs["token_logprobs"][1]
    assert shifted["logprobs"]["token_logprobs"][-1] is None


def test_vllm_prompt_logprobs(server: OpenAITestServer, client: httpx.Client) -> None:
    body = {"model": "m", "prompt": "The cat sat.", "prompt_logprobs": 1, "max_tokens": 1}
    choice = client.post(f"{server.base_url}/completions", json=body).json()["choices"][0]
    entries = choice["prompt_logprobs"]
    assert entries[0] is None and len(entries) == 4
    for entry, token in zip(entries[1:], [" cat", " sat", "."], strict=True):
        assert token in {info["decoded_token"] for info in entry.values()}
        assert min(info["rank"] for info in entry.values()) == 1


def test_max_in_flight_and_latency() -> None:
    with OpenAITestServer(latency=0.1) as slow, httpx.Client(timeout=5.0) as http:
        threads = [threading.Thread(target=chat, args=(http, slow)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert slow.request_count == 4
        assert slow.max_in_flight >= 2
        slow.reset()
        assert slow.request_count == 0 and slow.max_in_flight == 0


def test_a_stopped_server_refuses_connections() -> None:
    server = OpenAITestServer().start()
    url = server.base_url
    server.stop()
    server.stop()  # twice is fine
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.base_url
    with httpx.Client() as http, pytest.raises(httpx.ConnectError):
        http.get(url + "/models")


# -- streaming, slots, slow generation ------------------------------------------------------


def stream_lines(client: httpx.Client, server: OpenAITestServer, **body: Any) -> list[str]:
    """The non-empty lines of a streamed chat answer."""
    payload = {"model": "m", "messages": [{"role": "user", "content": "Hi there"}], **body}
    with client.stream("POST", f"{server.base_url}/chat/completions", json=payload) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/event-stream"
        assert answer.headers["transfer-encoding"] == "chunked"
        return [line for line in answer.iter_lines() if line]


def test_a_streamed_answer_is_server_sent_chunks_ending_in_done(
    server: OpenAITestServer, client: httpx.Client
) -> None:
    server.add("Hello world")
    options = {"include_usage": True}
    lines = stream_lines(client, server, stream=True, stream_options=options, logprobs=True)
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert {e["object"] for e in events} == {"chat.completion.chunk"}
    role, hello, world, finish, usage = events
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [hello["choices"][0]["delta"]["content"], world["choices"][0]["delta"]["content"]] == [
        "Hello",
        " world",
    ]
    assert hello["choices"][0]["logprobs"]["content"][0]["token"] == "Hello"
    assert finish["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 2
    no_usage = stream_lines(client, server, stream=True)
    assert len(no_usage) == 4  # role, "ok", finish, [DONE]: no usage chunk
    refused = chat(client, server, stream_options=options)  # without "stream": true
    assert refused.status_code == 400 and "stream_options" in refused.json()["error"]["message"]


def test_props_and_slots_like_llamacpp(client: httpx.Client) -> None:
    with OpenAITestServer(slots=2, model="qwen") as llama:
        props = client.get(f"{llama.url}/props").json()
        assert props["total_slots"] == 2 and props["model_alias"] == "qwen"
        slots = client.get(f"{llama.url}/slots").json()
        assert [slot["id"] for slot in slots] == [0, 1]
        assert [p.endpoint for p in llama.probes] == ["props", "slots"]
        assert llama.request_count == 0  # probes are not API requests
    with OpenAITestServer() as plain:
        assert client.get(f"{plain.url}/props").status_code == 404
        assert len(plain.probes) == 1


def test_the_native_completion_endpoint_like_llamacpp(client: httpx.Client) -> None:
    """With slots, ``POST /completion`` answers as llama.cpp's: ``n_probs`` alternatives of
    each generated token, and ``timings.cache_n`` the prompt tokens the slot already held."""
    with OpenAITestServer() as plain:
        assert client.post(f"{plain.url}/completion", json={"prompt": "a"}).status_code == 404
    scripted = Reply(content=" 7", top_logprobs=[{" 7": -0.1, " 8": -2.5, " 9": -3.0}])
    with OpenAITestServer(slots=1, responder=lambda request: scripted) as server:

        def native(prompt: str, **fields: Any) -> dict[str, Any]:
            body = {"prompt": prompt, "n_predict": 1, "n_probs": 2, "cache_prompt": True}
            answer = client.post(f"{server.url}/completion", json={**body, **fields})
            assert answer.status_code == 200
            data: dict[str, Any] = answer.json()
            return data

        first = native("one two three")
        assert first["content"] == " 7" and first["tokens_predicted"] == 1
        (generated,) = first["completion_probabilities"]
        assert generated["token"] == " 7" and generated["logprob"] == -0.1
        assert [(t["token"], t["logprob"]) for t in generated["top_logprobs"]] == [
            (" 7", -0.1),
            (" 8", -2.5),
        ]
        assert first["tokens_evaluated"] == 3 and first["timings"]["cache_n"] == 0
        longer = native("one two three four five")
        assert longer["tokens_evaluated"] == 5 and longer["timings"]["cache_n"] == 3
        again = native("one two three four five")
        assert again["timings"]["cache_n"] == 4, "the last token is evaluated again"
        assert native("one two six", cache_prompt=False)["timings"]["cache_n"] == 0
        assert native("one two three")["timings"]["cache_n"] == 2  # the slot held "one two six"
        assert "completion_probabilities" not in native("one", n_probs=0)
        assert [r.endpoint for r in server.requests] == ["completion"] * 6


def test_slots_make_other_requests_wait_without_a_byte(client: httpx.Client) -> None:
    with OpenAITestServer(slots=1, latency=0.3) as llama:
        first = threading.Thread(target=chat, args=(client, llama))
        first.start()
        while llama.request_count == 0:  # the first request holds the only slot
            threading.Event().wait(0.01)
        with pytest.raises(httpx.ReadTimeout):
            client.post(
                f"{llama.base_url}/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
                timeout=0.1,
            )
        first.join()


def test_a_slow_server_streams_chunk_by_chunk(client: httpx.Client) -> None:
    """With ``chunk_delay``, streamed chunks come apart in time; a plain answer comes whole
    after as long as its chunks would have taken."""
    with OpenAITestServer(chunk_delay=0.05, default="a b c d e f") as slow:
        payload = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
        arrivals = []
        with client.stream("POST", f"{slow.base_url}/chat/completions", json=payload) as answer:
            for line in answer.iter_lines():
                if line:
                    arrivals.append(time.monotonic())
        assert len(arrivals) == 9  # role, six tokens, finish, [DONE]
        assert arrivals[-1] - arrivals[0] >= 0.05 * 7  # at least the delays (no upper bound)
        with pytest.raises(httpx.ReadTimeout):  # whole: nothing for 8 x 0.05 s
            chat_with_timeout(client, slow, 0.2)


def chat_with_timeout(client: httpx.Client, server: OpenAITestServer, timeout: float) -> None:
    client.post(
        f"{server.base_url}/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        timeout=timeout,
    )


def test_stream_faults(server: OpenAITestServer, client: httpx.Client) -> None:
    payload = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
    url = f"{server.base_url}/chat/completions"
    server.fail_next(Fault.cut(after=2), Fault.stall(after=1, hold=5))
    lines: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError), client.stream("POST", url, json=payload) as cut:
        lines.extend(line for line in cut.iter_lines() if line)
    assert len(lines) == 2 and "[DONE]" not in lines
    with (
        pytest.raises(httpx.ReadTimeout),
        client.stream("POST", url, json=payload, timeout=0.2) as stalled,
    ):
        for _ in stalled.iter_lines():
            pass
    server.fail_next(Fault.cut(), Fault.stall(hold=5))  # not streamed: truncated, a timeout
    with pytest.raises(httpx.RemoteProtocolError):
        chat(client, server)
    with pytest.raises(httpx.ReadTimeout):
        chat_with_timeout(client, server, 0.2)


@given(st.text(max_size=60))
def test_simple_tokenize_round_trips(text: str) -> None:
    tokens = simple_tokenize(text)
    assert "".join(tokens) == text
    assert all(tokens)
