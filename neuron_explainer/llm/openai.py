"""The OpenAI-compatible backend: `OpenAILLM`, chat completions and prompt logprobs over HTTP.

`OpenAILLM` (provider ``"openai"``) speaks the OpenAI REST protocol, which OpenAI, Azure OpenAI
and most local servers (vLLM, llama.cpp, Ollama, LM Studio, TGI, ...) offer:

* `achat`: ``POST {base_url}/chat/completions``;
* `aprompt_logprobs`: ``POST {base_url}/completions`` with ``echo: true, logprobs: k,
  max_tokens: 0`` (or vLLM's ``prompt_logprobs: k``), checked token by token against the prompt.

This module is the client: configuration, the API key, the base URL (Azure's included), the
response cache (`ResponseCache`) and the usage meters of `neuron_explainer.llm.usage` (cost
recorded, budget checked before sending). The wire format is in `neuron_explainer.llm.protocol`
and `neuron_explainer.llm.prompt_logprobs`; sending (one ``httpx.AsyncClient`` per event loop,
limits, retries, typed errors) in `neuron_explainer.llm.transport`.

Configuration is read lazily, at the first request: ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``,
``NEURON_EXPLAINER_LLM_TIMEOUT`` and ``NEURON_EXPLAINER_LLM_CONCURRENCY`` unless given to the
constructor, ``NEURON_EXPLAINER_CACHE`` unless ``cache=`` is. A server on this machine needs no
key; the key never appears in a repr, a log line, an exception or the cache. Chat answers of
servers on this machine or a private network are streamed, and such a server is asked once for
its slot count (llama.cpp's ``GET /props``): see ``stream=`` and ``detect_slots=``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from neuron_explainer._aio import run_sync
from neuron_explainer.errors import InvalidInputError
from neuron_explainer.llm import _settings
from neuron_explainer.llm._answers import cached_answer, parse_answer
from neuron_explainer.llm._llamacpp import prefix_logprobs
from neuron_explainer.llm._prefill import check_chat_request, prefill_of
from neuron_explainer.llm._settings import (
    DEFAULT_CONCURRENCY,
    DEFAULT_TIMEOUT,
    LazySettings,
    Secret,
    check_options,
    environment_base_url,
    explicit_setting,
    request_headers,
)
from neuron_explainer.llm._settings import check_environment as check_environment
from neuron_explainer.llm.base import (
    CAPABILITIES,
    LLM,
    Capability,
    ChatRequest,
    ChatResponse,
    PromptLogprobsRequest,
    PromptLogprobsResponse,
    Usage,
)
from neuron_explainer.llm.cache import ResponseCache, cache_key, public_url
from neuron_explainer.llm.limits import RateLimiter
from neuron_explainer.llm.limits import Sleep as Sleep  # the type of `sleep=`
from neuron_explainer.llm.prompt_logprobs import parse_echo, parse_vllm
from neuron_explainer.llm.protocol import (
    ChatCompletionBody,
    CompletionBody,
    parse_chat,
    parse_usage,
)
from neuron_explainer.llm.streaming import ChatStream
from neuron_explainer.llm.transport import (
    RetryingClient,
    RetryPolicy,
    TransportOption,
    client_setting,
    endpoint_url,
)
from neuron_explainer.llm.urls import check_base_url, is_private_url
from neuron_explainer.llm.usage import Price, estimate_cost, price_for, record_usage, reserve_budget
from neuron_explainer.results import ComponentInfo

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_CAPABILITIES",
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "ENV_CACHE",
    "ENV_CONCURRENCY",
    "ENV_TIMEOUT",
    "OpenAILLM",
    "check_environment",
]

ENV_API_KEY = _settings.ENV_API_KEY
"""The environment variable holding the API key (read at the first request)."""
ENV_BASE_URL = _settings.ENV_BASE_URL
"""The environment variable holding the server's base URL (read at each request; empty or
white space counts as unset)."""
ENV_CACHE = _settings.ENV_CACHE
"""The environment variable naming a response-cache file, used when ``cache=None``."""
ENV_TIMEOUT = _settings.ENV_TIMEOUT
"""The environment variable holding the timeout in seconds, used when ``timeout=None`` (read at
the first request)."""
ENV_CONCURRENCY = _settings.ENV_CONCURRENCY
"""The environment variable holding the most requests in flight at once, used when
``max_concurrency=None`` (read at the first request)."""
DEFAULT_BASE_URL = _settings.DEFAULT_BASE_URL
"""Where requests go without ``base_url=`` or ``OPENAI_BASE_URL``."""
DEFAULT_CAPABILITIES: frozenset[Capability] = frozenset({"chat", "chat_logprobs", "json_schema"})
"""What an `OpenAILLM` offers unless told otherwise: api.openai.com's chat models have no prompt
logprobs, so pass ``capabilities=`` including ``"prompt_logprobs"`` for servers that do (vLLM)."""

_WORST_CASE_COMPLETION = 4096  # completion tokens assumed when a request sets no max_tokens
_MESSAGE_OVERHEAD = 4  # tokens per chat message beyond its text (role, separators)
_R = TypeVar("_R", ChatResponse, PromptLogprobsResponse)

logger = logging.getLogger(__name__)


class OpenAILLM(LLM):
    """A model behind an OpenAI-compatible server (provider ``"openai"``).

    ``default_registry().llm("openai:gpt-4o-mini")`` builds one from the environment; build it
    yourself for options. It is safe to share between tasks, threads and event loops: limits,
    the cache and the usage meters cover every caller.

    Args:
        model: the model name the server knows (``"gpt-4o-mini"``, a vLLM model path, ...).
        api_key: the API key; default ``OPENAI_API_KEY``, read at the first request. Servers
            on localhost need none.
        base_url: the server's base URL (``.../v1``); default ``OPENAI_BASE_URL``, else
            `DEFAULT_BASE_URL`. A query string (Azure's ``?api-version=...``) is kept on every
            request. Checked when given (an empty one is refused) or read
            (`neuron_explainer.llm.urls.check_base_url`).
        timeout: seconds allowed for connecting, and between bytes of the answer (of a streamed
            answer: how long the server may stay silent); default ``NEURON_EXPLAINER_LLM_TIMEOUT``,
            else 60. Each retry after a timeout gets twice the time of the attempt before.
        max_concurrency: most requests in flight at once (per event loop); default
            ``NEURON_EXPLAINER_LLM_CONCURRENCY``, else the server's slot count (see
            ``detect_slots``), else 16.
        requests_per_minute: client-side request limit (``None``: none).
        tokens_per_minute: client-side token limit; a request counts its prompt characters / 4
            plus ``max_tokens`` (times ``n``).
        max_retries: retries after the first attempt of a request that failed in a way worth
            retrying (HTTP 408, 409, 429, 5xx, timeouts, dropped connections, a body that is
            not JSON); ``0`` sends each request once.
        retry_max_wait: the longest wait before a retry, in seconds (caps ``Retry-After``).
        retry_base_wait: the first backoff; it doubles with each retry, with jitter.
        timeout_retries: how many of the retries may follow a timeout (default 2): a server
            that stays silent three times is not asked a fourth time.
        stream: stream chat answers as server-sent events (``True``), never (``False``), or
            ``None`` (default): stream when the base URL is on this machine or a private network
            (`neuron_explainer.llm.urls.is_private_url`), where a slow CPU may take minutes for
            one answer. Streamed or not, the answer, the cache entry and the errors are the same.
        detect_slots: ask the server once, before the first request, how many requests it
            generates at once (llama.cpp's ``GET /props``, ``total_slots``) and use that as the
            concurrency: ``True``, ``False``, or ``None`` (default): for servers on this machine
            or a private network. Given concurrency (argument, assignment or environment) wins.
        cache: a response-cache file (or a `ResponseCache`); ``False`` for none; ``None``
            (default) uses ``NEURON_EXPLAINER_CACHE`` if it is set, else no cache.
        price: the price used for cost and budgets; default from
            `neuron_explainer.llm.usage.price_for` (0 for unknown models).
        capabilities: what the model offers; default `DEFAULT_CAPABILITIES` (add
            ``"prompt_logprobs"`` for servers that echo prompt logprobs, such as vLLM;
            llama.cpp's server does not).
        organization: sent as the ``OpenAI-Organization`` header.
        context_window: the model's context length, for the worst-case cost of a request
            without ``max_tokens`` (default: 4,096 completion tokens are assumed).
        extra_headers: more headers for every request.
        prompt_logprobs_style: ``"echo"`` (``echo`` + ``logprobs``, the completions API's
            way) or ``"vllm"`` (vLLM's ``prompt_logprobs``).
        prompt_logprobs_max_tokens: ``max_tokens`` of a prompt-logprob request; default 0
            for ``"echo"`` and 1 for ``"vllm"`` (some servers refuse 0). Generated tokens
            are dropped.
        sleep: awaited for every wait (retries, rate limits); default `asyncio.sleep`.
        transport: what carries the requests instead of the network: an
            ``httpx.AsyncBaseTransport`` (e.g. ``httpx.MockTransport(handler)``, for tests
            with no sockets), shared by every event loop and never closed by the backend; or a
            zero-argument function returning one, called once per event loop, whose
            transports are closed with their loop's client (see
            `neuron_explainer.llm.transport.TransportOption`). Default: the network.

    Attributes:
        client: the `RetryingClient` that sends the requests (its clients, limits, retries).
        limiter: the client-side rate limits, shared by every caller.
        stream: the ``stream`` option (settable); `streams` says what it means for a server.
        settings: the timeout and concurrency settled at the first request; ``settings.slots``
            is the slot count the server reported (``None``: not asked, or it did not say).

    Raises:
        InvalidInputError: an option out of range, an unknown capability, a ``base_url``
            that is empty or not a usable URL, or a ``transport`` that is neither a transport
            nor a function.
    """

    provider = "openai"

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        max_retries: int = 5,
        retry_max_wait: float = 60.0,
        retry_base_wait: float = 0.5,
        timeout_retries: int = 2,
        stream: bool | None = None,
        detect_slots: bool | None = None,
        cache: str | os.PathLike[str] | ResponseCache | Literal[False] | None = None,
        price: Price | None = None,
        capabilities: Sequence[Capability] | frozenset[Capability] | None = None,
        organization: str | None = None,
        context_window: int | None = None,
        extra_headers: Mapping[str, str] | None = None,
        prompt_logprobs_style: Literal["echo", "vllm"] = "echo",
        prompt_logprobs_max_tokens: int | None = None,
        sleep: Sleep | None = None,
        transport: TransportOption = None,
    ) -> None:
        sleep = asyncio.sleep if sleep is None else sleep
        if not isinstance(model, str) or not model:
            raise InvalidInputError(f"model must be a non-empty string, got {model!r}")
        check_options(
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            context_window=context_window,
            prompt_logprobs_style=prompt_logprobs_style,
            prompt_logprobs_max_tokens=prompt_logprobs_max_tokens,
        )
        offered = frozenset(DEFAULT_CAPABILITIES if capabilities is None else capabilities)
        unknown = sorted(set(offered) - set(CAPABILITIES))
        if unknown:
            raise InvalidInputError(
                f"unknown capabilities {unknown}; known: {', '.join(CAPABILITIES)}"
            )
        super().__init__(model)
        self.capabilities = offered
        self._api_key = None if api_key is None else Secret(api_key)
        self._base_url = None if base_url is None else check_base_url(base_url, "base_url=")
        self.stream = stream
        self.price = price
        self.organization = organization
        self.context_window = context_window
        self.extra_headers = dict(extra_headers or {})
        self.prompt_logprobs_style = prompt_logprobs_style
        self.prompt_logprobs_max_tokens = prompt_logprobs_max_tokens
        self._cache_option = cache
        self._cache: ResponseCache | None = None
        self._cache_resolved = False
        self._lock = threading.Lock()
        retry = RetryPolicy(
            int(max_retries), float(retry_base_wait), float(retry_max_wait), int(timeout_retries)
        )
        self.client = RetryingClient(
            self.name,
            timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
            max_concurrency=DEFAULT_CONCURRENCY if max_concurrency is None else max_concurrency,
            retry=retry,
            limiter=RateLimiter(requests_per_minute, tokens_per_minute, sleep=sleep),
            sleep=sleep,
            transport=transport,
            auth_hint=f" (check {ENV_API_KEY} or api_key=)",
        )
        self.limiter = self.client.limiter
        given = {"timeout"} if timeout is not None else set()
        given |= {"max_concurrency"} if max_concurrency is not None else set()
        self.settings = LazySettings(self.client, given, detect_slots)

    # -- configuration -----------------------------------------------------------------------

    def __repr__(self) -> str:
        where = "" if self._base_url is None else f", base_url={public_url(self._base_url)!r}"
        return f"OpenAILLM({self.model!r}{where})"

    # Settable, as they were plain attributes before 0.2: a change reaches the event loops
    # whose HTTP client is made after it (timeout, max_concurrency) and every later retry.
    timeout = explicit_setting(
        "timeout", "Seconds allowed for connecting, and between bytes of the answer."
    )
    max_concurrency = explicit_setting(
        "max_concurrency", "Most requests in flight at once, per event loop."
    )
    max_retries = client_setting(
        "retry.max_retries", "Retries after the first attempt of a request."
    )
    retry_base_wait = client_setting(
        "retry.base_wait", "The first backoff, in seconds; it doubles with each retry, with jitter."
    )
    retry_max_wait = client_setting(
        "retry.max_wait", "The longest wait before a retry, in seconds (caps ``Retry-After``)."
    )
    timeout_retries = client_setting(
        "retry.timeout_retries", "How many of the retries may follow a timeout."
    )

    @property
    def base_url(self) -> str:
        """The base URL requests go to: ``base_url=``, else ``OPENAI_BASE_URL`` (unless empty),
        else `DEFAULT_BASE_URL` (the environment is read each time).

        Raises:
            InvalidInputError: ``OPENAI_BASE_URL`` holds an unusable URL.
        """
        if self._base_url is not None:
            return self._base_url
        return environment_base_url() or DEFAULT_BASE_URL

    def streams(self, base_url: str | None = None) -> bool:
        """Whether chat answers from ``base_url`` (default: `base_url`) are streamed: the
        ``stream`` option, else whether the server is on this machine or a private network."""
        if self.stream is not None:
            return self.stream
        return is_private_url(self.base_url if base_url is None else base_url)

    @property
    def cache(self) -> ResponseCache | None:
        """The response cache in use, if any (``NEURON_EXPLAINER_CACHE`` is read on first use)."""
        with self._lock:
            if not self._cache_resolved:
                self._cache = ResponseCache.from_option(self._cache_option, ENV_CACHE)
                self._cache_resolved = True
            return self._cache

    @property
    def info(self) -> ComponentInfo:
        """Name, capabilities and the server (without credentials), recorded in results."""
        base = super().info
        return base.model_copy(
            update={"settings": {**base.settings, "base_url": public_url(self.base_url)}}
        )

    def _key(self) -> str | None:
        if self._api_key is not None:
            return self._api_key.value
        return os.environ.get(ENV_API_KEY) or None

    async def aclose(self) -> None:
        """Close this event loop's connections (a later call opens new ones). Clients of loops
        that ``asyncio.run`` ran are closed when those loops end."""
        await self.client.aclose()

    async def __aenter__(self) -> OpenAILLM:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- sending -----------------------------------------------------------------------------

    def _completion_cap(self, max_tokens: int | None, prompt_tokens: int) -> int:
        if max_tokens is not None:
            return max_tokens
        if self.context_window is not None:
            return max(0, self.context_window - prompt_tokens)
        return _WORST_CASE_COMPLETION

    async def _send(
        self,
        base_url: str,
        endpoint: str,
        body: dict[str, Any],
        *,
        prompt: int,
        completion: int,
        stream: bool = False,
    ) -> tuple[dict[str, Any], int]:
        """POST ``body`` within the budgets: the JSON answer (with ``stream``, the chat
        completion its streamed chunks add up to) and the attempts it took. The worst case
        (``prompt`` + ``completion`` tokens) is held against every open budget while the
        request is in flight, and the real cost is recorded before it is released. The first
        request settles the timeout and concurrency (`LazySettings`).
        """
        price = self.price if self.price is not None else price_for(self.model)
        worst = Usage(prompt_tokens=prompt, completion_tokens=completion)
        worst_cost = estimate_cost(self.model, worst, price)
        async with reserve_budget(worst_cost, what=f"a request to {self.name} ({endpoint})"):
            key = self._key()
            headers = request_headers(self, base_url, key)
            await self.settings.settle(base_url, headers)
            if stream:
                body = {**body, "stream": True, "stream_options": {"include_usage": True}}
                headers["Accept"] = "text/event-stream"
            data, attempts = await self.client.post(
                endpoint_url(base_url, endpoint),
                body,
                headers=headers,
                tokens=prompt + completion,
                secret=key,
                stream=ChatStream if stream else None,
            )
            usage = parse_usage(data)  # recorded even if the rest turns out unusable
            record_usage(usage, cost_usd=estimate_cost(self.model, usage, price))
        return data, attempts

    async def _call(
        self,
        endpoint: str,
        body: dict[str, Any],
        parse: Callable[[dict[str, Any]], _R],
        *,
        prompt_tokens: int,
        completion_tokens: int,
        streamable: bool = False,
    ) -> _R:
        """The parsed answer to ``body`` at ``endpoint``: from the cache, else sent (streamed
        when ``streamable`` and `streams` say so) and then stored in the cache. The cache key
        is made from ``body`` as it is, without the streaming fields, so a streamed and a plain
        answer share their entry."""
        base_url = self.base_url
        cache = self.cache
        key_id = cache_key(endpoint, base_url, self.model, body) if cache is not None else ""
        if cache is not None:
            hit = await cached_answer(cache, key_id, parse, self.name)
            if hit is not None:
                return hit
        data, attempts = await self._send(
            base_url,
            endpoint,
            body,
            prompt=prompt_tokens,
            completion=completion_tokens,
            stream=streamable and self.streams(base_url),
        )
        where = f"{self.name}: POST {public_url(endpoint_url(base_url, endpoint))}"
        parsed = parse_answer(data, parse, where, attempts)
        if cache is not None:
            await cache.aput(key_id, data, endpoint=endpoint, model=self.model)
        return parsed

    # -- the LLM contract --------------------------------------------------------------------

    async def achat(self, request: ChatRequest) -> ChatResponse:
        """Send ``request`` to ``{base_url}/chat/completions``.

        Raises:
            CapabilityError: the request asks for logprobs, a ``response_format`` or a prefill
                this LLM was not configured to offer (a prefill never to OpenAI's own API).
            BudgetExceededError: an open usage meter's budget could be exceeded (nothing sent).
            AuthenticationError: no API key for a remote server, or HTTP 401/403.
            BadRequestError: HTTP 400/404/422 and other 4xx (not retried).
            RateLimitError / ServerError / LLMTimeoutError / LLMConnectionError: that kind of
                failure on every attempt.
            InvalidResponseError: an answer that is not JSON on every attempt, or JSON that is
                not a chat completion.
        """
        check_chat_request(self, request, self.base_url)
        chars = sum(len(m.content) for m in request.messages)
        prompt_tokens = math.ceil(chars / 4) + _MESSAGE_OVERHEAD * len(request.messages)
        completion = self._completion_cap(request.max_tokens, prompt_tokens) * request.n
        return await self._call(
            "chat/completions",
            ChatCompletionBody.of(self.model, request).wire(),
            lambda data: parse_chat(data, request.n, prefill=prefill_of(request)),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion,
            streamable=True,
        )

    async def aprompt_logprobs(self, request: PromptLogprobsRequest) -> PromptLogprobsResponse:
        """Score ``request.prompt`` through ``{base_url}/completions``.

        With ``prompt_logprobs_style="echo"`` the request is ``echo: true, logprobs: k,
        max_tokens: 0``; with ``"vllm"``, ``prompt_logprobs: k``. The answer is checked against
        the prompt token by token, as `neuron_explainer.llm.prompt_logprobs` describes: what
        does not line up, or lines up in more than one way, raises rather than being guessed.

        Raises:
            CapabilityError: ``"prompt_logprobs"`` is not in `capabilities`.
            InvalidResponseError: the answer does not line up with the prompt.
            LLMError: as for `achat`.
        """
        self.require("prompt_logprobs", by="a prompt-logprob request")
        k = request.top_logprobs
        style = self.prompt_logprobs_style
        max_tokens = self.prompt_logprobs_max_tokens
        if max_tokens is None:
            max_tokens = 1 if style == "vllm" else 0
        body = CompletionBody.scoring(self.model, request, style=style, max_tokens=max_tokens)
        parse = parse_vllm if style == "vllm" else parse_echo
        prompt = request.prompt
        return await self._call(
            "completions",
            body.wire(),
            lambda data: parse(data, prompt, k),
            prompt_tokens=math.ceil(len(prompt) / 4),
            completion_tokens=max_tokens,
        )

    def prompt_logprobs(self, request: PromptLogprobsRequest) -> PromptLogprobsResponse:
        """Sync twin of `aprompt_logprobs`."""
        return run_sync(self.aprompt_logprobs(request))

    aprefix_logprobs = prefix_logprobs  # llama.cpp's /completion: see llm._llamacpp
