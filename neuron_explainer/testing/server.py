"""A real HTTP server on 127.0.0.1 speaking the OpenAI protocol, for tests and benchmarks.

`OpenAITestServer` answers ``POST .../chat/completions`` (streamed as server-sent events when
the request says ``"stream": true``) and ``POST .../completions`` (with ``echo`` + ``logprobs``,
or vLLM's ``prompt_logprobs``) from a script, a ``responder`` function or a deterministic
default, and injects faults on demand: HTTP errors with ``Retry-After``, timeouts, dropped
connections, bodies that are not JSON or cut short, streams that stall or are cut off, answers
that ignore the requested format. Like llama.cpp's server it can have a number of slots (it
generates that many answers at once, the others wait without a byte) and say so at
``GET /props``, and then it also answers llama.cpp's native ``POST /completion`` (``n_probs``
alternatives of the generated tokens, ``cache_prompt`` reusing the slot's last prompt); it can
generate slowly (``chunk_delay`` seconds per streamed chunk). It
records every request, and the most requests it had in flight at once.

It runs in a background thread on an ephemeral port; use it as a context manager::

    with OpenAITestServer() as server:
        server.add("Hello!")
        llm = OpenAILLM("test-model", base_url=server.base_url)
        assert llm.chat(request).choices[0].text == "Hello!"
        assert server.request_count == 1

The server is for tests: it binds to 127.0.0.1 only and is not hardened. What a script is made
of (`Reply`, `Fault`, `ReceivedRequest`) is defined in ``testing/_replies.py`` and the answer
bodies are built in ``testing/_answers.py``; import the names from here or from
`neuron_explainer.testing`.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
from collections import deque
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from neuron_explainer.testing._answers import Answers, SlotPromptCache
from neuron_explainer.testing._replies import Fault as Fault
from neuron_explainer.testing._replies import PromptLogprobFunction as PromptLogprobFunction
from neuron_explainer.testing._replies import ReceivedRequest as ReceivedRequest
from neuron_explainer.testing._replies import Reply as Reply
from neuron_explainer.testing._replies import Responder as Responder
from neuron_explainer.testing._replies import _Answer
from neuron_explainer.testing._replies import default_prompt_logprob as default_prompt_logprob
from neuron_explainer.testing._replies import simple_tokenize as simple_tokenize
from neuron_explainer.testing._wire import send_error, send_fault, send_json, send_stream

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
        chunk_delay: seconds to wait before each chunk of a streamed chat answer; a chat answer
            that is not streamed waits as long as its chunks would have taken, then comes whole
            (a slow generation).
        slots: how many answers it generates at once, like llama.cpp's slots: other requests
            wait, receiving nothing, until a slot is free. ``GET /props`` then answers
            ``{"total_slots": slots, ...}`` as llama.cpp's does, ``GET /slots`` lists them, and
            ``POST /completion`` answers as llama.cpp's native endpoint: the generated text
            from the script's ``responder`` (a `Reply`, whose ``top_logprobs`` give the
            ``n_probs`` alternatives, else ``prompt_logprob``), and ``timings.cache_n`` the
            prompt tokens shared with a slot's last prompt when ``cache_prompt`` is true (all
            but the last, at most). ``None`` (default): no limit, and all three are 404, as on
            OpenAI's API.
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
        chunk_delay: float = 0.0,
        slots: int | None = None,
    ) -> None:
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be in [0, 1], got {fault_rate}")
        if slots is not None and slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
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
        self.chunk_delay = chunk_delay
        self.slots = slots
        self._slot_gate = threading.Semaphore(slots) if slots is not None else None
        self._prompt_cache = SlotPromptCache(slots or 0)
        self._probes: list[ReceivedRequest] = []
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
        """Every request received so far, in order of arrival (a copy), but for `probes`."""
        with self._lock:
            return list(self._requests)

    @property
    def probes(self) -> list[ReceivedRequest]:
        """The ``GET /props`` and ``GET /slots`` requests (what a client asks a llama.cpp
        server about itself before its first request), in order of arrival (a copy). They are
        not in `requests`, `request_count` or `max_in_flight`."""
        with self._lock:
            return list(self._probes)

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
            self._probes.clear()
            self._script.clear()
            self._next_faults.clear()
            self._prompt_cache = SlotPromptCache(self.slots or 0)
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
        if method == "GET" and request.endpoint in ("props", "slots"):
            with self._lock:
                self._probes.append(request)
            self._about(handler, request)
            return
        with self._lock:
            self._requests.append(request)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        gate = self._slot_gate if method == "POST" else None
        try:
            if gate is not None and not self._wait_for_slot(gate):
                handler.close_connection = True  # the server is stopping
                return
            try:
                if self.latency > 0:
                    self._stopping.wait(self.latency)
                self._answer(handler, request)
            finally:
                if gate is not None:
                    gate.release()
        finally:
            with self._lock:
                self._in_flight -= 1

    def _wait_for_slot(self, gate: threading.Semaphore) -> bool:
        """Wait, sending nothing, for a free slot; ``False`` if the server stops first."""
        while not gate.acquire(timeout=0.05):
            if self._stopping.is_set():
                return False
        return True

    def _about(self, handler: _Handler, request: ReceivedRequest) -> None:
        """``GET /props`` and ``GET /slots``, as llama.cpp answers them (404 without slots)."""
        if self.slots is None or not self._authorized(request):
            status = 404 if self.slots is None else 401
            send_error(handler, status, f"{request.method} {request.path} is not served here")
        elif request.endpoint == "props":
            settings = {"n_ctx": 8192, "params": {"temperature": 0.8}}
            props = {"total_slots": self.slots, "model_alias": self.model}
            send_json(handler, 200, {**props, "default_generation_settings": settings})
        else:
            slots = [{"id": i, "n_ctx": 8192, "is_processing": False} for i in range(self.slots)]
            send_json(handler, 200, slots)

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
            send_error(handler, 401, message, "invalid_request_error", "invalid_api_key")
            return
        endpoint = request.endpoint
        if endpoint == "models" and request.method == "GET":
            send_json(handler, 200, {"object": "list", "data": [{"id": self.model}]})
            return
        served = ("chat/completions", "completions", *(("completion",) if self.slots else ()))
        if request.method != "POST" or endpoint not in served:
            send_error(handler, 404, f"Unknown request URL: {request.method} {request.path}")
            return
        body = request.body
        if not isinstance(body, dict):
            send_error(handler, 400, "The request body is not a JSON object.")
            return
        problem = self._validate(endpoint, body)
        if problem:
            send_error(handler, 400, problem)
            return
        answer = self._pick(request)
        if isinstance(answer, Fault):
            if answer.kind != "garbage":
                self._fault(handler, body, answer, endpoint == "chat/completions")
                return
            answer = answer.text
        if isinstance(answer, dict):
            send_json(handler, 200, answer)
        elif endpoint == "completion":
            cached = self._prompt_cache.take(self.tokenize(str(body["prompt"])), body)
            send_json(handler, 200, self._answers().native_completion(body, answer, cached))
        elif endpoint == "chat/completions":
            self._chat(handler, body, answer if answer is not None else self.default)
        else:
            completion = self._answers().completion(body, answer, self._next_id("cmpl"))
            send_json(handler, 200, completion)

    def _chat(
        self,
        handler: _Handler,
        body: dict[str, Any],
        reply: Reply | str,
        fault: Fault | None = None,
    ) -> None:
        """A chat answer: streamed when the request asks for it (cut short by a stream
        ``fault``), else whole, after as long as streaming it would have taken."""
        answers = self._answers()
        answer = answers.chat(body, reply, self._next_id("chatcmpl"))
        options = body.get("stream_options") or {}
        chunks = answers.chunks(answer, include_usage=bool(options.get("include_usage")))
        if body.get("stream"):
            send_stream(
                handler, chunks, delay=self.chunk_delay, stopping=self._stopping, fault=fault
            )
            return
        if self.chunk_delay > 0 and self._stopping.wait(self.chunk_delay * len(chunks)):
            handler.close_connection = True  # stopping
            return
        send_json(handler, 200, answer)

    def _fault(self, handler: _Handler, body: dict[str, Any], fault: Fault, chat: bool) -> None:
        """Answer with ``fault``; a stream fault cuts short a streamed chat answer."""
        if fault.kind in ("stall", "cut") and chat and body.get("stream"):
            self._chat(handler, body, self.default, fault)
        else:
            send_fault(handler, fault, self._stopping)

    @staticmethod
    def _validate(endpoint: str, body: dict[str, Any]) -> str | None:
        if endpoint != "completion" and not isinstance(body.get("model"), str):
            return "you must provide a model parameter"  # llama.cpp's own endpoint needs none
        if endpoint == "chat/completions":
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                return "'messages' must be a non-empty list"
        elif not isinstance(body.get("prompt"), str | list):
            return "'prompt' must be a string"
        if not isinstance(body.get("stream", False), bool):
            return f"invalid stream: {body['stream']!r}"
        if "stream_options" in body and not body.get("stream"):
            return "'stream_options' is only allowed when 'stream' is true"
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

    def _answers(self) -> Answers:
        """The answer builder, with the settings as they are now (tests change them)."""
        return Answers(
            tokenize=self.tokenize,
            prompt_logprob=self.prompt_logprob,
            offset_shift=self.offset_shift,
            logprob_shift=self.logprob_shift,
            model=self.model,
        )
