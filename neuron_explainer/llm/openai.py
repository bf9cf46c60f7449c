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

Configuration is read lazily, at the first request: ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL``
(default ``https://api.openai.com/v1``) unless given to the constructor, and
``NEURON_EXPLAINER_CACHE`` (a path) for the response cache unless ``cache=`` says otherwise. A
server on this machine (`neuron_explainer.llm.transport.is_local_url`) needs no key. The API key
never appears in a repr, a log line, an exception or the cache.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import httpx
from pydantic import ValidationError

from neuron_explainer._aio import run_sync
from neuron_explainer._version import __version__
from neuron_explainer.errors import AuthenticationError, InvalidInputError, InvalidResponseError
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
from neuron_explainer.llm.transport import (
    RetryingClient,
    RetryPolicy,
    TransportOption,
    client_setting,
    endpoint_url,
    gc_paused,
    is_local_url,
)
from neuron_explainer.llm.usage import Price, estimate_cost, price_for, record_usage, reserve_budget
from neuron_explainer.results import ComponentInfo

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_CAPABILITIES",
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "ENV_CACHE",
    "OpenAILLM",
]

ENV_API_KEY = "OPENAI_API_KEY"
"""The environment variable holding the API key (read at the first request)."""
ENV_BASE_URL = "OPENAI_BASE_URL"
"""The environment variable holding the server's base URL (read at the first request)."""
ENV_CACHE = "NEURON_EXPLAINER_CACHE"
"""The environment variable naming a response-cache file, used when ``cache=None``."""
DEFAULT_BASE_URL = "https://api.openai.com/v1"
"""Where requests go without ``base_url=`` or ``OPENAI_BASE_URL``."""
DEFAULT_CAPABILITIES: frozenset[Capability] = frozenset({"chat", "chat_logprobs", "json_schema"})
"""What an `OpenAILLM` offers unless told otherwise: api.openai.com's chat models have no prompt
logprobs, so pass ``capabilities=`` including ``"prompt_logprobs"`` for servers that do (vLLM)."""

_WORST_CASE_COMPLETION = 4096  # completion tokens assumed when a request sets no max_tokens
_MESSAGE_OVERHEAD = 4  # tokens per chat message beyond its text (role, separators)
_R = TypeVar("_R", ChatResponse, PromptLogprobsResponse)

logger = logging.getLogger(__name__)


class _Secret:
    """A string that never shows itself in a repr."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<secret>"


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
            request.
        timeout: seconds allowed for connecting, and between bytes of the answer.
        max_concurrency: most requests in flight at once (per event loop).
        requests_per_minute: client-side request limit (``None``: none).
        tokens_per_minute: client-side token limit; a request counts its prompt characters / 4
            plus ``max_tokens`` (times ``n``).
        max_retries: retries after the first attempt of a request that failed in a way worth
            retrying (HTTP 408, 409, 429, 5xx, timeouts, dropped connections, a body that is
            not JSON); ``0`` sends each request once.
        retry_max_wait: the longest wait before a retry, in seconds (caps ``Retry-After``).
        retry_base_wait: the first backoff; it doubles with each retry, with jitter.
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

    Raises:
        InvalidInputError: an option out of range, an unknown capability, or a ``transport``
            that is neither a transport nor a function.
    """

    provider = "openai"

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_concurrency: int = 16,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        max_retries: int = 5,
        retry_max_wait: float = 60.0,
        retry_base_wait: float = 0.5,
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
        checks = [
            (not requests_per_minute or requests_per_minute > 0, "requests_per_minute must be > 0"),
            (not tokens_per_minute or tokens_per_minute > 0, "tokens_per_minute must be > 0"),
            (context_window is None or context_window > 0, "context_window must be > 0"),
            (
                prompt_logprobs_style in ("echo", "vllm"),
                f"prompt_logprobs_style must be 'echo' or 'vllm', got {prompt_logprobs_style!r}",
            ),
            (
                prompt_logprobs_max_tokens is None or prompt_logprobs_max_tokens >= 0,
                "prompt_logprobs_max_tokens must be >= 0",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidInputError(message)
        offered = frozenset(DEFAULT_CAPABILITIES if capabilities is None else capabilities)
        unknown = sorted(set(offered) - set(CAPABILITIES))
        if unknown:
            raise InvalidInputError(
                f"unknown capabilities {unknown}; known: {', '.join(CAPABILITIES)}"
            )
        super().__init__(model)
        self.capabilities = offered
        self._api_key = None if api_key is None else _Secret(api_key)
        self._base_url = base_url
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
        retry = RetryPolicy(int(max_retries), float(retry_base_wait), float(retry_max_wait))
        self.client = RetryingClient(
            self.name,
            timeout=timeout,
            max_concurrency=max_concurrency,
            retry=retry,
            limiter=RateLimiter(requests_per_minute, tokens_per_minute, sleep=sleep),
            sleep=sleep,
            transport=transport,
            auth_hint=f" (check {ENV_API_KEY} or api_key=)",
        )
        self.limiter = self.client.limiter

    # -- configuration -----------------------------------------------------------------------

    def __repr__(self) -> str:
        where = "" if self._base_url is None else f", base_url={public_url(self._base_url)!r}"
        return f"OpenAILLM({self.model!r}{where})"

    # Settable, as they were plain attributes before 0.2: a change reaches the event loops
    # whose HTTP client is made after it (timeout, max_concurrency) and every later retry.
    timeout = client_setting(
        "timeout", "Seconds allowed for connecting, and between bytes of the answer."
    )
    max_concurrency = client_setting(
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

    @property
    def base_url(self) -> str:
        """The base URL requests go to: ``base_url=``, else ``OPENAI_BASE_URL``, else
        `DEFAULT_BASE_URL` (the environment is read each time)."""
        return self._base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL

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

    def _headers(self, base_url: str, key: str | None) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"neuron-explainer/{__version__}",
        }
        if key:
            headers["Authorization"] = f"Bearer {key}"
            if (httpx.URL(base_url).host or "").endswith(".azure.com"):
                headers["api-key"] = key
        elif not is_local_url(base_url):
            raise AuthenticationError(
                f"no API key for {self.name} at {public_url(base_url)}: set the {ENV_API_KEY} "
                "environment variable or pass api_key= (servers on localhost need none)",
                attempts=0,
            )
        if self.organization:
            headers["OpenAI-Organization"] = self.organization
        headers.update(self.extra_headers)
        return headers

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

    async def _cached(
        self, cache: ResponseCache, key_id: str, parse: Callable[[dict[str, Any]], _R]
    ) -> _R | None:
        """The stored answer to this request, parsed and counted as a hit, if usable."""
        stored = await cache.aget(key_id)
        if stored is None:
            return None
        try:
            parsed = parse(stored)
        except (InvalidResponseError, ValidationError):
            logger.debug("ignoring an unusable cached answer for %s", self.name)
            return None
        logger.debug("cache hit for %s", self.name)
        record_usage(parsed.usage, cached=True)
        return parsed

    async def _send(
        self, base_url: str, endpoint: str, body: dict[str, Any], *, prompt: int, completion: int
    ) -> tuple[dict[str, Any], int]:
        """POST ``body`` within the budgets: the JSON answer and the attempts it took. The
        worst case (``prompt`` + ``completion`` tokens) is held against every open budget
        while the request is in flight, and the real cost is recorded before it is released.
        """
        price = self.price if self.price is not None else price_for(self.model)
        worst = Usage(prompt_tokens=prompt, completion_tokens=completion)
        worst_cost = estimate_cost(self.model, worst, price)
        async with reserve_budget(worst_cost, what=f"a request to {self.name} ({endpoint})"):
            key = self._key()
            data, attempts = await self.client.post(
                endpoint_url(base_url, endpoint),
                body,
                headers=self._headers(base_url, key),
                tokens=prompt + completion,
                secret=key,
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
    ) -> _R:
        """The parsed answer to ``body`` at ``endpoint``: from the cache, else sent (and then
        stored in the cache)."""
        base_url = self.base_url
        cache = self.cache
        key_id = cache_key(endpoint, base_url, self.model, body) if cache is not None else ""
        if cache is not None:
            hit = await self._cached(cache, key_id, parse)
            if hit is not None:
                return hit
        data, attempts = await self._send(
            base_url, endpoint, body, prompt=prompt_tokens, completion=completion_tokens
        )
        try:
            with gc_paused():
                parsed = parse(data)
        except ValidationError as exc:
            raise InvalidResponseError(
                f"{self.name}: the server's answer does not follow the protocol: {exc}",
                status_code=200,
                attempts=attempts,
            ) from None
        except InvalidResponseError as exc:
            raise InvalidResponseError(
                f"{self.name}: POST {public_url(endpoint_url(base_url, endpoint))}: {exc}",
                status_code=200,
                attempts=attempts,
            ) from None
        if cache is not None:
            await cache.aput(key_id, data, endpoint=endpoint, model=self.model)
        return parsed

    # -- the LLM contract --------------------------------------------------------------------

    async def achat(self, request: ChatRequest) -> ChatResponse:
        """Send ``request`` to ``{base_url}/chat/completions``.

        Raises:
            CapabilityError: the request asks for logprobs or a ``response_format`` this LLM
                was not configured to offer.
            BudgetExceededError: an open usage meter's budget could be exceeded (nothing sent).
            AuthenticationError: no API key for a remote server, or HTTP 401/403.
            BadRequestError: HTTP 400/404/422 and other 4xx (not retried).
            RateLimitError / ServerError / LLMTimeoutError / LLMConnectionError: that kind of
                failure on every attempt.
            InvalidResponseError: an answer that is not JSON on every attempt, or JSON that is
                not a chat completion.
        """
        self.require("chat", by="a chat request")
        if request.logprobs:
            self.require("chat_logprobs", by="a chat request with logprobs")
        if request.response_format is not None:
            self.require("json_schema", by="a chat request with a response_format")
        chars = sum(len(m.content) for m in request.messages)
        prompt_tokens = math.ceil(chars / 4) + _MESSAGE_OVERHEAD * len(request.messages)
        completion = self._completion_cap(request.max_tokens, prompt_tokens) * request.n
        return await self._call(
            "chat/completions",
            ChatCompletionBody.of(self.model, request).wire(),
            lambda data: parse_chat(data, request.n),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion,
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
