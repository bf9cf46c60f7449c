"""A real HTTP server on 127.0.0.1 speaking the OpenAI protocol, for tests and benchmarks.

`OpenAITestServer` answers ``POST .../chat/completions`` and ``POST .../completions`` (with
``echo`` + ``logprobs``, or vLLM's ``prompt_logprobs``) from a script, a ``responder`` function
or a deterministic default, and injects faults on demand: HTTP errors with ``Retry-After``,
timeouts, dropped connections, bodies that are not JSON or cut short, answers that ignore the
requested format. It records every request, and the most requests it had in flight at once.

It runs in a background thread on an ephemeral port; use it as a context manager::

    with OpenAITestServer() as server:
        server.add("Hello!")
        llm = OpenAILLM("test-model", base_url=server.base_url)
        assert llm.chat(request).choices[0].text == "Hello!"
        assert server.request_count == 1

The server is for tests: it binds to 127.0.0.1 only and is not hardened.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, TypeAlias
from urllib.parse import urlsplit

__all__ = [
    "Fault",
    "OpenAITestServer",
    "PromptLogprobFunction",
    "ReceivedRequest",
    "Reply",
    "Responder",
    "default_prompt_logprob",
    "simple_tokenize",
]

_TOKEN = re.compile(r"\s*\w+|\s*[^\w\s]|\s+")
_ALTERNATIVES: tuple[str, ...] = (
    *(" the", " a", ",", ".", " and", " of", " to", " in", " is", "\n", " it", " that"),
    *(" for", " on", " with", " as", " was", " he", " be", " at", " by", " not"),
)


def simple_tokenize(text: str) -> list[str]:
    """Split ``text`` into word-like tokens that concatenate back to it: a word or one
    punctuation character with the whitespace before it, or a whitespace run at the end."""
    return _TOKEN.findall(text)


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def default_prompt_logprob(tokens: Sequence[str], index: int) -> tuple[float, dict[str, float]]:
    """The default scorer of token ``index`` of ``tokens``: a deterministic logprob in
    [-3.05, -0.05] from the token's text and position, and 20 alternatives below it."""
    own = -(0.05 + (_crc(f"{index}:{tokens[index]}") % 300) / 100)
    alternatives = {
        alt: round(own - 0.5 - 0.25 * j, 4)
        for j, alt in enumerate(a for a in _ALTERNATIVES if a != tokens[index])
    }
    return own, {tokens[index]: own, **alternatives}


PromptLogprobFunction: TypeAlias = Callable[[Sequence[str], int], tuple[float, Mapping[str, float]]]
"""``f(tokens, i) -> (logprob of tokens[i], {alternative: logprob})``: how the server scores a
token given the ones before it (``i >= 1``)."""


@dataclass(frozen=True)
class Reply:
    """A scripted chat answer.

    Args:
        content: the message text of every choice, or one text per choice.
        tokens: the generated tokens (joining to ``content``) when logprobs are asked for;
            default `simple_tokenize` of the content.
        logprobs: the logprob of each token; default from ``top_logprobs`` or a fixed rule.
        top_logprobs: the alternatives at each token, ``{token: logprob}``.
        prompt_tokens: the prompt tokens to report; by default the request's messages are
            counted with `simple_tokenize`.
        completion_tokens: the completion tokens to report; by default counted likewise.
        cached_tokens: the cached prompt tokens to report.
        finish_reason: the finish reason of every choice.
        model: the model name to report (default: the request's).
    """

    content: str | Sequence[str] = ""
    tokens: Sequence[str] | None = None
    logprobs: Sequence[float] | None = None
    top_logprobs: Sequence[Mapping[str, float]] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    finish_reason: str = "stop"
    model: str | None = None


FaultKind = Literal["status", "timeout", "disconnect", "invalid_json", "truncated", "garbage"]


@dataclass(frozen=True)
class Fault:
    """A failure to inject instead of an answer. Build one with the class methods."""

    kind: FaultKind
    status: int = 500
    message: str = "The server had an error while processing your request."
    error_type: str | None = "server_error"
    code: str | None = None
    retry_after: float | str | None = None
    retry_after_ms: float | None = None
    hold: float = 30.0
    text: str = "I'm sorry, but I can't help with that."

    @classmethod
    def error(
        cls,
        status: int,
        message: str = "error",
        *,
        error_type: str | None = "invalid_request_error",
        code: str | None = None,
        retry_after: float | str | None = None,
        retry_after_ms: float | None = None,
    ) -> Fault:
        """HTTP ``status`` with an OpenAI-style body ``{"error": {"message", "type", "code"}}``
        and, if given, ``Retry-After`` (seconds, or an HTTP date as text) / ``retry-after-ms``."""
        return cls(
            "status",
            status=status,
            message=message,
            error_type=error_type,
            code=code,
            retry_after=retry_after,
            retry_after_ms=retry_after_ms,
        )

    @classmethod
    def rate_limit(
        cls,
        retry_after: float | str | None = None,
        *,
        retry_after_ms: float | None = None,
        code: str | None = "rate_limit_exceeded",
        message: str = "Rate limit reached for requests.",
    ) -> Fault:
        """HTTP 429, optionally with ``Retry-After`` / ``retry-after-ms``."""
        return cls.error(
            429,
            message,
            error_type="requests",
            code=code,
            retry_after=retry_after,
            retry_after_ms=retry_after_ms,
        )

    @classmethod
    def server_error(
        cls, status: int = 500, message: str = "The server had an error.", **headers: Any
    ) -> Fault:
        """HTTP ``status`` (500 by default; 502, 503, 504, ...) with an OpenAI-style body."""
        return cls.error(status, message, error_type="server_error", **headers)

    @classmethod
    def timeout(cls, hold: float = 30.0) -> Fault:
        """Read the request, then hold the connection for ``hold`` seconds (or until the server
        stops) and close it without answering: longer than the client's timeout."""
        return cls("timeout", hold=hold)

    @classmethod
    def disconnect(cls) -> Fault:
        """Close the connection without sending any response."""
        return cls("disconnect")

    @classmethod
    def invalid_json(cls) -> Fault:
        """HTTP 200 whose body is not JSON."""
        return cls("invalid_json")

    @classmethod
    def truncated(cls) -> Fault:
        """HTTP 200 whose ``Content-Length`` is larger than the body sent before the connection
        is closed."""
        return cls("truncated")

    @classmethod
    def garbage(cls, text: str = "I'm sorry, but I can't help with that.") -> Fault:
        """A well-formed completion whose content ignores the requested format."""
        return cls("garbage", text=text)


@dataclass(frozen=True)
class ReceivedRequest:
    """A request the server received.

    Attributes:
        method: ``"POST"`` or ``"GET"``.
        path: the URL path, e.g. ``"/v1/chat/completions"``.
        query: the query string, without ``?``.
        headers: the headers, names in lower case.
        body: the JSON body, or ``None`` if it was not JSON.
    """

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: Any
    received_at: float = field(default_factory=time.monotonic)

    @property
    def endpoint(self) -> str:
        """``"chat/completions"``, ``"completions"``, ``"models"`` or the path."""
        for name in ("chat/completions", "completions", "models"):
            if self.path.rstrip("/").endswith("/" + name):
                return name
        return self.path


_Answer: TypeAlias = Reply | Fault | str | dict[str, Any]
Responder: TypeAlias = Callable[[ReceivedRequest], _Answer | None]
"""``responder(request)`` → a `Reply` or text (a chat answer, or the generated text of a
completion), a `Fault`, a whole JSON body (``dict``), or ``None`` for the default answer."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True
    request_queue_size = 256  # the default 5 drops bursts of connections (a 1 s SYN retry)
    owner: OpenAITestServer

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        self.owner._track(request, True)
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.owner._track(request, False)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up is not the test's concern


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.server.owner._handle(self, "POST")

    def do_GET(self) -> None:
        self.server.owner._handle(self, "GET")


class OpenAITestServer:
    """An OpenAI-protocol HTTP server on 127.0.0.1, in a background thread.

    Answers, in order of precedence: faults queued with `fail_next`; random faults (with
    ``fault_rate``); for chat, the script (`add`); the ``responder``; the default (chat:
    ``default``; completions: the prompt echoed and scored token by token).

    Args:
        api_key: if given, every request must carry ``Authorization: Bearer <api_key>`` (or
            ``api-key: <api_key>``); others get HTTP 401.
        latency: seconds to wait before answering each request.
        default: the chat answer when the script is empty and no responder answers.
        responder: a function of the `ReceivedRequest` (see `Responder`).
        tokenize: splits texts into tokens (default `simple_tokenize`).
        prompt_logprob: scores a token given the previous ones (default
            `default_prompt_logprob`).
        offset_shift: added to every ``text_offset`` of an echo answer (to test clients).
        logprob_shift: move every echo ``token_logprobs``/``top_logprobs`` value one position
            earlier, so the first token has one and the last none (to test clients).
        fault_rate: the probability that a request gets a random fault from ``faults``.
        faults: what random faults to draw from.
        seed: seeds the random faults.
        model: the model name reported when a request names none.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        latency: float = 0.0,
        default: str | Reply = "ok",
        responder: Responder | None = None,
        tokenize: Callable[[str], list[str]] = simple_tokenize,
        prompt_logprob: PromptLogprobFunction = default_prompt_logprob,
        offset_shift: int = 0,
        logprob_shift: bool = False,
        fault_rate: float = 0.0,
        faults: Sequence[Fault] = (),
        seed: int = 0,
        model: str = "test-model",
    ) -> None:
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be in [0, 1], got {fault_rate}")
        if fault_rate and not faults:
            faults = (Fault.server_error(500), Fault.rate_limit(0.0), Fault.disconnect())
        self.api_key = api_key
        self.latency = latency
        self.default = default
        self.responder = responder
        self.tokenize = tokenize
        self.prompt_logprob = prompt_logprob
        self.offset_shift = offset_shift
        self.logprob_shift = logprob_shift
        self.fault_rate = fault_rate
        self.faults = tuple(faults)
        self.model = model
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._script: deque[Reply | Fault | str] = deque()
        self._next_faults: deque[Fault] = deque()
        self._requests: list[ReceivedRequest] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._ids = 0
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> OpenAITestServer:
        """Bind an ephemeral port on 127.0.0.1 and serve in a background thread."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="OpenAITestServer",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and wait for the handler threads."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> OpenAITestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port it listens on."""
        if self._httpd is None:
            raise RuntimeError("the server is not running; call start() or use `with`")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``: what a client's ``base_url`` should be."""
        return self.url + "/v1"

    # -- scripting ---------------------------------------------------------------------------

    def add(self, *items: Reply | Fault | str) -> None:
        """Queue answers for the next chat requests, in order: texts, `Reply`s or `Fault`s."""
        with self._lock:
            self._script.extend(items)

    def fail_next(self, *faults: Fault, times: int = 1) -> None:
        """Inject ``faults`` (each ``times`` times, in order) into the next requests of any
        endpoint, before any scripted answer."""
        with self._lock:
            for fault in faults:
                self._next_faults.extend([fault] * times)

    @property
    def remaining(self) -> int:
        """Scripted chat answers not used yet."""
        with self._lock:
            return len(self._script)

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request received so far, in order of arrival (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        """How many requests were received."""
        with self._lock:
            return len(self._requests)

    @property
    def max_in_flight(self) -> int:
        """The most requests that were being handled at once."""
        with self._lock:
            return self._max_in_flight

    def reset(self) -> None:
        """Forget the requests, the script, queued faults and the in-flight maximum."""
        with self._lock:
            self._requests.clear()
            self._script.clear()
            self._next_faults.clear()
            self._max_in_flight = 0

    # -- handling ----------------------------------------------------------------------------

    def _track(self, connection: socket.socket, opened: bool) -> None:
        with self._lock:
            if opened:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _handle(self, handler: _Handler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        parts = urlsplit(handler.path)
        request = ReceivedRequest(
            method=method,
            path=parts.path,
            query=parts.query,
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
        )
        with self._lock:
            self._requests.append(request)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            if self.latency > 0:
                self._stopping.wait(self.latency)
            self._answer(handler, request)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _authorized(self, request: ReceivedRequest) -> bool:
        if self.api_key is None:
            return True
        return (
            request.headers.get("authorization") == f"Bearer {self.api_key}"
            or request.headers.get("api-key") == self.api_key
        )

    def _pick(self, request: ReceivedRequest) -> _Answer | None:
        with self._lock:
            if self._next_faults:
                return self._next_faults.popleft()
            if self.fault_rate and self._random.random() < self.fault_rate:
                return self._random.choice(self.faults)
            if request.endpoint == "chat/completions" and self._script:
                return self._script.popleft()
        if self.responder is not None:
            return self.responder(request)
        return None

    def _answer(self, handler: _Handler, request: ReceivedRequest) -> None:
        if not self._authorized(request):
            message = "Incorrect API key provided."
            self._error(handler, 401, message, "invalid_request_error", "invalid_api_key")
            return
        endpoint = request.endpoint
        if endpoint == "models" and request.method == "GET":
            self._json(handler, 200, {"object": "list", "data": [{"id": self.model}]})
            return
        if request.method != "POST" or endpoint not in ("chat/completions", "completions"):
            self._error(handler, 404, f"Unknown request URL: {request.method} {request.path}")
            return
        body = request.body
        if not isinstance(body, dict):
            self._error(handler, 400, "The request body is not a JSON object.")
            return
        problem = self._validate(endpoint, body)
        if problem:
            self._error(handler, 400, problem)
            return
        answer = self._pick(request)
        if isinstance(answer, Fault):
            if answer.kind != "garbage":
                self._fault(handler, answer)
                return
            answer = answer.text
        if isinstance(answer, dict):
            self._json(handler, 200, answer)
        elif endpoint == "chat/completions":
            reply = answer if answer is not None else self.default
            self._json(handler, 200, self._chat(body, reply))
        else:
            self._json(handler, 200, self._completion(body, answer))

    @staticmethod
    def _validate(endpoint: str, body: dict[str, Any]) -> str | None:
        if not isinstance(body.get("model"), str):
            return "you must provide a model parameter"
        if endpoint == "chat/completions":
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                return "'messages' must be a non-empty list"
        elif not isinstance(body.get("prompt"), str | list):
            return "'prompt' must be a string"
        n, max_tokens = body.get("n", 1), body.get("max_tokens")
        if not isinstance(n, int) or n < 1:
            return f"invalid n: {n!r}"
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 0):
            return f"invalid max_tokens: {max_tokens!r}"
        return None

    def _next_id(self, prefix: str) -> str:
        with self._lock:
            self._ids += 1
            return f"{prefix}-{self._ids}"

    # -- answers -----------------------------------------------------------------------------

    def _chat(self, body: dict[str, Any], answer: Reply | str) -> dict[str, Any]:
        reply = answer if isinstance(answer, Reply) else Reply(content=answer)
        n = body.get("n", 1)
        contents = [reply.content] * n if isinstance(reply.content, str) else list(reply.content)
        contents = [contents[i % len(contents)] for i in range(n)] if contents else [""] * n
        k = int(body.get("top_logprobs") or 0)
        max_tokens, stops = body.get("max_tokens"), body.get("stop") or []
        stops = [stops] if isinstance(stops, str) else stops
        choices, completion_tokens = [], 0
        for i, content in enumerate(contents):
            tokens = list(reply.tokens) if reply.tokens is not None else self.tokenize(content)
            text, finish = content, reply.finish_reason
            if max_tokens is not None and len(tokens) > max_tokens:
                tokens = tokens[:max_tokens]
                text, finish = "".join(tokens), "length"
            for stop in stops:
                if stop and stop in text:
                    text, finish = text[: text.index(stop)], "stop"
                    tokens = self.tokenize(text)
            completion_tokens += len(tokens)
            choice: dict[str, Any] = {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
            if body.get("logprobs"):
                choice["logprobs"] = {"content": self._token_logprobs(tokens, reply, k)}
            choices.append(choice)
        prompt_tokens = sum(
            len(self.tokenize(m.get("content") or ""))
            for m in body["messages"]
            if isinstance(m, dict) and isinstance(m.get("content"), str)
        )
        return {
            "id": self._next_id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.model or body.get("model") or self.model,
            "choices": choices,
            "usage": self._usage(
                prompt_tokens if reply.prompt_tokens is None else reply.prompt_tokens,
                completion_tokens if reply.completion_tokens is None else reply.completion_tokens,
                reply.cached_tokens,
            ),
        }

    def _token_logprobs(self, tokens: list[str], reply: Reply, k: int) -> list[dict[str, Any]]:
        entries = []
        for j, token in enumerate(tokens):
            if reply.top_logprobs is not None and j < len(reply.top_logprobs):
                top = dict(reply.top_logprobs[j])
                own = top.get(token, min(top.values(), default=0.0) - 1.0)
            else:
                own, top = default_prompt_logprob(tokens, j)
            if reply.logprobs is not None and j < len(reply.logprobs):
                own = reply.logprobs[j]
            ranked = sorted(top.items(), key=lambda item: -item[1])[:k]
            entries.append(
                {
                    "token": token,
                    "logprob": own,
                    "bytes": list(token.encode("utf-8")),
                    "top_logprobs": [
                        {"token": t, "logprob": v, "bytes": list(t.encode("utf-8"))}
                        for t, v in ranked
                    ],
                }
            )
        return entries

    def _completion(self, body: dict[str, Any], answer: Reply | str | None) -> dict[str, Any]:
        prompt = body["prompt"] if isinstance(body["prompt"], str) else str(body["prompt"][0])
        max_tokens = body.get("max_tokens")
        max_tokens = 16 if max_tokens is None else max_tokens
        if isinstance(answer, Reply):
            answer = answer.content if isinstance(answer.content, str) else answer.content[0]
        generated = self.tokenize(" ok" * max_tokens if answer is None else answer)[:max_tokens]
        prompt_tokens = self.tokenize(prompt)
        echo = bool(body.get("echo"))
        shown = (prompt_tokens if echo else []) + generated
        context = prompt_tokens + generated
        first = 0 if echo else len(prompt_tokens)
        choice: dict[str, Any] = {
            "index": 0,
            "text": "".join(shown),
            "logprobs": None,
            "finish_reason": "length",
        }
        k = body.get("logprobs")
        if isinstance(k, int) and k >= 0:
            values: list[float | None] = []
            tops: list[dict[str, float] | None] = []
            offsets, position = [], 0 if echo else len(prompt)
            for i, token in enumerate(shown, start=first):
                offsets.append(position + self.offset_shift)
                position += len(token)
                if i == 0:
                    values.append(None)
                    tops.append(None)
                    continue
                own, alternatives = self.prompt_logprob(context, i)
                values.append(own)
                tops.append(dict(sorted(alternatives.items(), key=lambda item: -item[1])[:k]))
            if self.logprob_shift:
                values, tops = [*values[1:], None], [*tops[1:], None]
            choice["logprobs"] = {
                "tokens": shown,
                "token_logprobs": values,
                "top_logprobs": tops,
                "text_offset": offsets,
            }
        if isinstance(body.get("prompt_logprobs"), int):
            choice["prompt_logprobs"] = self._vllm_prompt_logprobs(
                prompt_tokens, body["prompt_logprobs"]
            )
        return {
            "id": self._next_id("cmpl"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [choice],
            "usage": self._usage(len(prompt_tokens), len(generated), 0),
        }

    def _vllm_prompt_logprobs(
        self, tokens: list[str], k: int
    ) -> list[dict[str, dict[str, Any]] | None]:
        """vLLM's format: ``null``, then per token ``{token_id: {logprob, rank,
        decoded_token}}`` holding the top ``k`` and the prompt's own token."""
        entries: list[dict[str, dict[str, Any]] | None] = [None]
        for i in range(1, len(tokens)):
            own, alternatives = self.prompt_logprob(tokens, i)
            ranked = sorted({**alternatives, tokens[i]: own}.items(), key=lambda item: -item[1])
            entry = {}
            for rank, (text, value) in enumerate(ranked, start=1):
                if rank <= k or text == tokens[i]:
                    entry[str(_crc(text) % 1_000_003)] = {
                        "logprob": value,
                        "rank": rank,
                        "decoded_token": text,
                    }
            entries.append(entry)
        return entries

    @staticmethod
    def _usage(prompt: int, completion: int, cached: int) -> dict[str, Any]:
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        }

    # -- the wire ----------------------------------------------------------------------------

    @staticmethod
    def _json(
        handler: _Handler, status: int, data: Any, headers: Mapping[str, str] | None = None
    ) -> None:
        payload = json.dumps(data).encode("utf-8")
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)
        handler.wfile.flush()

    def _error(
        self,
        handler: _Handler,
        status: int,
        message: str,
        error_type: str | None = "invalid_request_error",
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        error = {"message": message, "type": error_type, "param": None, "code": code}
        self._json(handler, status, {"error": error}, headers)

    def _fault(self, handler: _Handler, fault: Fault) -> None:
        if fault.kind == "status":
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            if fault.retry_after_ms is not None:
                headers["retry-after-ms"] = str(fault.retry_after_ms)
            self._error(handler, fault.status, fault.message, fault.error_type, fault.code, headers)
        elif fault.kind == "timeout":
            self._stopping.wait(fault.hold)
            handler.close_connection = True
        elif fault.kind == "disconnect":
            handler.close_connection = True
        elif fault.kind == "invalid_json":
            payload = b'{"id": "chatcmpl-1", "choices": [{"message": <html>Bad gateway</html>'
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        elif fault.kind == "truncated":
            payload = json.dumps({"id": "chatcmpl-1", "choices": [], "padding": "x" * 64}).encode()
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload) + 100))
            handler.end_headers()
            handler.wfile.write(payload[: len(payload) // 2])
            handler.wfile.flush()
            handler.close_connection = True
