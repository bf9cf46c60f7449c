"""Posting JSON to an HTTP API: one pooled client per event loop, limits and retries.

`RetryingClient` sends a JSON body and returns the JSON object answered; every failure becomes
one of the typed errors of `neuron_explainer.errors`:

| The server | Retried | Raised at the end |
|------------|---------|-------------------|
| HTTP 429 (code ``insufficient_quota``: not retried) | yes | `RateLimitError` |
| HTTP 409, 500 and above | yes | `ServerError` |
| HTTP 408, or no answer within ``timeout`` | yes, a few times | `LLMTimeoutError` |
| unreachable, or the connection closes early (also mid-stream) | yes | `LLMConnectionError` |
| HTTP 200 whose body (or a streamed event) is not a JSON object | yes | `InvalidResponseError` |
| HTTP 401, 403 | no | `AuthenticationError` |
| other 4xx | no | `BadRequestError` |

Between attempts it waits what the server asked for (``retry-after-ms``, else ``Retry-After``
in seconds or as an HTTP date), at most `RetryPolicy.max_wait`, else a jittered exponential
backoff; the wait goes through an injectable ``sleep``, so tests record it instead of waiting.
A request that timed out is never sent again unchanged: each retry after a timeout gets twice the
timeout of the attempt before, and at most `RetryPolicy.timeout_retries` timeouts are retried.

With ``stream=`` (a `neuron_explainer.llm.streaming.StreamAssembler` factory) the answer is read
as server-sent events as it is generated (`neuron_explainer.llm.streaming`), so ``timeout`` is
how long the server may stay silent, not how long the whole answer may take.

The HTTP client is ``httpx``. Each event loop gets its own ``httpx.AsyncClient`` (a client is
bound to the loop it was first used in), closed when that loop shuts down. The ``transport=``
option replaces the network: see `TransportOption`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import random
import ssl
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import httpx

from neuron_explainer.errors import (
    InvalidInputError,
    LLMConnectionError,
    LLMTimeoutError,
)
from neuron_explainer.llm._failures import _classify, _decode, _Failure, _redact
from neuron_explainer.llm._failures import _retry_after as _retry_after
from neuron_explainer.llm.cache import public_url
from neuron_explainer.llm.limits import RateLimiter, Sleep
from neuron_explainer.llm.streaming import (
    StreamAssembler,
    StreamFailure,
    assemble,
    is_event_stream,
    read_event_stream,
)

__all__ = [
    "RetryPolicy",
    "RetryingClient",
    "TransportFactory",
    "TransportOption",
    "client_setting",
    "endpoint_url",
    "gc_paused",
    "is_local_url",
]

logger = logging.getLogger(__name__)

TransportFactory: TypeAlias = Callable[[], httpx.AsyncBaseTransport]
"""Makes a fresh transport; called once for each event loop that sends."""

TransportOption: TypeAlias = httpx.AsyncBaseTransport | TransportFactory | None
"""What carries the requests instead of the network (``None``: the network).

* An ``httpx.AsyncBaseTransport`` instance, such as ``httpx.MockTransport(handler)``, serves
  every event loop. It stays yours: the client never closes it. Right for a stateless
  transport (a mock) or one used from a single event loop.
* A `TransportFactory` (a zero-argument callable) is called once per event loop, and the
  transport it returns is closed with that loop's client. Right for a transport that holds
  connections, such as ``lambda: httpx.AsyncHTTPTransport(retries=2)``: a connection belongs
  to the loop that opened it.

With either, the environment's proxy settings are not applied: the transport decides.
"""


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and after how long, a failed request is sent again.

    Attributes:
        max_retries: retries after the first attempt (``0``: send each request once).
        base_wait: the first backoff in seconds; it doubles with each retry.
        max_wait: the longest wait before a retry in seconds; it caps ``Retry-After`` too.
        timeout_retries: how many of the retries may follow a timeout (no answer, or no bytes
            of a streamed answer, within the timeout; or HTTP 408). Each of them is sent with
            twice the timeout of the attempt before, so a slow server is never asked the same
            way again; ``0``: a timeout is not retried. ``max_retries`` bounds the retries of
            every kind together.

    Raises:
        InvalidInputError: a negative value.
    """

    max_retries: int = 5
    base_wait: float = 0.5
    max_wait: float = 60.0
    timeout_retries: int = 2

    def __post_init__(self) -> None:
        for name in ("max_retries", "base_wait", "max_wait", "timeout_retries"):
            value = getattr(self, name)
            if not value >= 0:
                raise InvalidInputError(f"retry {name} must be >= 0, got {value}")

    def backoff(self, retry: int, draw: Callable[[], float] = random.random) -> float:
        """The wait before retry number ``retry`` (1, 2, ...) when the server asked for none:
        ``base_wait * 2 ** (retry - 1)``, at most ``max_wait``, times a factor in [0.5, 1]
        (``0.5 + draw() / 2``)."""
        ceiling = min(self.max_wait, self.base_wait * 2.0 ** min(retry - 1, 64))
        return ceiling * (0.5 + draw() / 2)

    def wait(self, retry: int, asked: float | None) -> float:
        """The wait before retry number ``retry``: what the server ``asked`` for, at most
        ``max_wait``, else `backoff`."""
        return self.backoff(retry) if asked is None else min(asked, self.max_wait)


def is_local_url(url: str) -> bool:
    """Whether ``url`` points at this machine (``localhost`` or a name under it, ``127.x.x.x``,
    ``::1``, ``0.0.0.0``): such a server needs no API key."""
    host = (httpx.URL(url).host or "").lower()
    return (
        host in ("localhost", "::1", "0.0.0.0")
        or host.endswith(".localhost")
        or host.startswith("127.")
    )


def endpoint_url(base_url: str, endpoint: str) -> str:
    """The URL of ``endpoint`` (``"chat/completions"``) under ``base_url`` (``.../v1``), keeping
    the base URL's query (Azure's ``?api-version=...``)."""
    url = httpx.URL(base_url)
    return str(url.copy_with(path=url.path.rstrip("/") + "/" + endpoint))


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's garbage collector off while a response is decoded and parsed (synchronous
    code, no await inside): a logprob answer is thousands of small objects that all stay
    alive, and collecting while they are made promotes them into the old generations, whose
    full collections then cost more than the parsing (measured: 15 ms of GC per request with
    10 excerpts per request, 5 ms with the pause). Left as it was if the caller turned it off."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _Borrowed(httpx.AsyncBaseTransport):
    """A transport the caller owns: requests go through it, closing it is left to the owner."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)


@dataclass
class _LoopState:
    """What one event loop needs: its client, its concurrency limit and the generator that
    closes the client when the loop shuts down."""

    client: httpx.AsyncClient
    semaphore: asyncio.Semaphore
    closer: AsyncGenerator[None, None] | None = None


class RetryingClient:
    """Posts JSON bodies and returns the JSON objects answered, with limits and retries.

    Safe to share between tasks, threads and event loops: each loop gets its own pooled
    ``httpx.AsyncClient`` and concurrency limit; the rate limits cover every caller.

    Args:
        name: who sends, for messages and logs (e.g. ``"openai:gpt-4o-mini"``).
        timeout: seconds allowed for connecting, and between bytes of the answer.
        max_concurrency: most requests in flight at once, per event loop.
        retry: when to send a failed request again (default `RetryPolicy()`).
        limiter: client-side requests/tokens-per-minute limits (default: none).
        sleep: awaited with every wait between attempts (default `asyncio.sleep`).
        transport: what carries the requests instead of the network (see `TransportOption`).
        auth_hint: appended to the message of an HTTP 401/403, e.g. ``" (check MY_KEY)"``.

    Raises:
        InvalidInputError: a timeout or concurrency that is not positive, or a ``transport``
            that is neither a transport nor a callable.
    """

    def __init__(
        self,
        name: str,
        *,
        timeout: float = 60.0,
        max_concurrency: int = 16,
        retry: RetryPolicy | None = None,
        limiter: RateLimiter | None = None,
        sleep: Sleep | None = None,
        transport: TransportOption = None,
        auth_hint: str = "",
    ) -> None:
        if not timeout > 0:
            raise InvalidInputError(f"timeout must be > 0, got {timeout}")
        if not max_concurrency >= 1:
            raise InvalidInputError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if not (transport is None or isinstance(transport, httpx.AsyncBaseTransport)) and not (
            callable(transport)
        ):
            raise InvalidInputError(
                "transport must be an httpx.AsyncBaseTransport or a function returning one, "
                f"got {type(transport).__name__}"
            )
        self.name = name
        self.timeout = float(timeout)
        self.max_concurrency = int(max_concurrency)
        self.retry = retry if retry is not None else RetryPolicy()
        self.sleep: Sleep = sleep if sleep is not None else asyncio.sleep
        self.limiter = limiter if limiter is not None else RateLimiter(sleep=self.sleep)
        self.auth_hint = auth_hint
        self._transport = transport
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._ssl_context: ssl.SSLContext | None = None
        # Entered with the loop's semaphore around each attempt: a concurrency cap shared
        # beyond this process (neuron_explainer.cluster sets it on workers); none by default.
        self.gate: Callable[[], contextlib.AbstractAsyncContextManager[object]] = (
            contextlib.nullcontext
        )

    def __repr__(self) -> str:
        return f"RetryingClient({self.name!r})"

    @property
    def open_loops(self) -> int:
        """How many event loops have an open client (each is closed when its loop ends)."""
        with self._lock:
            return len(self._states)

    # -- clients, one per event loop -------------------------------------------------------

    def _new_client(self) -> httpx.AsyncClient:
        """A client for one event loop (called under the lock)."""
        timeout = httpx.Timeout(self.timeout)
        option = self._transport
        if option is None:
            if self._ssl_context is None:  # loading the CA bundle takes ~20 ms: do it once
                self._ssl_context = httpx.create_ssl_context()
            return httpx.AsyncClient(
                verify=self._ssl_context,
                timeout=timeout,
                limits=httpx.Limits(
                    max_connections=self.max_concurrency,
                    max_keepalive_connections=self.max_concurrency,
                ),
            )
        if isinstance(option, httpx.AsyncBaseTransport):
            transport: httpx.AsyncBaseTransport = _Borrowed(option)
        else:
            transport = option()
            if not isinstance(transport, httpx.AsyncBaseTransport):
                raise InvalidInputError(
                    f"the transport factory of {self.name} returned "
                    f"{type(transport).__name__}, not an httpx.AsyncBaseTransport"
                )
        return httpx.AsyncClient(transport=transport, timeout=timeout)

    async def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._states.get(loop)
            if state is not None:
                return state
            state = _LoopState(self._new_client(), asyncio.Semaphore(self.max_concurrency))
            self._states[loop] = state
        # An async generator the loop finalizes at shutdown (asyncio.run calls
        # shutdown_asyncgens), so the client is closed inside the loop that owns it, even when
        # a sync wrapper ran the call in a loop of its own.
        state.closer = self._close_at_shutdown(loop, state)
        await anext(state.closer)
        return state

    async def _close_at_shutdown(
        self, loop: asyncio.AbstractEventLoop, state: _LoopState
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._lock:
                if self._states.get(loop) is state:
                    del self._states[loop]
            await state.client.aclose()

    async def aclose(self) -> None:
        """Close this event loop's client (a later call opens a new one). Clients of loops
        that ``asyncio.run`` ran are closed when those loops end."""
        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._states.pop(loop, None)
        if state is not None and state.closer is not None:
            await state.closer.aclose()

    # -- sending -----------------------------------------------------------------------------

    async def _attempt(
        self,
        url: str,
        body: dict[str, Any],
        headers: Mapping[str, str],
        timeout: float,
        stream: Callable[[], StreamAssembler] | None,
    ) -> dict[str, Any] | _Failure:
        """Send once with ``timeout``: the JSON answer (put together from the events when
        ``stream`` is given), or the failure."""
        state = await self._state()
        try:
            async with state.semaphore, self.gate():
                if stream is not None:
                    return await self._streamed(state.client, url, body, headers, timeout, stream)
                response = await state.client.post(url, json=body, headers=headers, timeout=timeout)
        except httpx.TimeoutException as exc:
            silent = "no answer within" if stream is None else "the server sent nothing for"
            return _Failure(LLMTimeoutError, f"{silent} {timeout:g}s ({type(exc).__name__})")
        except (httpx.TransportError, httpx.DecodingError) as exc:
            reason = f"{type(exc).__name__}: {exc or 'connection failed'}"
            retry = not isinstance(exc, httpx.UnsupportedProtocol)
            return _Failure(LLMConnectionError, reason, retry=retry)
        if response.status_code != 200:
            return _classify(response, self.auth_hint)
        with gc_paused():
            return _decode(response)

    async def _streamed(
        self,
        client: httpx.AsyncClient,
        url: str,
        body: dict[str, Any],
        headers: Mapping[str, str],
        timeout: float,
        stream: Callable[[], StreamAssembler],
    ) -> dict[str, Any] | _Failure:
        """Send once and read the answer as server-sent events (or as JSON, from a server that
        does not stream)."""
        request = client.stream("POST", url, json=body, headers=headers, timeout=timeout)
        async with request as response:
            if response.status_code != 200 or not is_event_stream(response):
                await response.aread()
                if response.status_code != 200:
                    return _classify(response, self.auth_hint)
                with gc_paused():
                    return _decode(response)
            events, done = await read_event_stream(response)
        try:
            with gc_paused():
                return assemble(events, done, stream())
        except StreamFailure as failure:
            return _Failure(failure.error, failure.reason, 200, retry=failure.retry)

    async def post(
        self,
        url: str,
        body: dict[str, Any],
        *,
        headers: Mapping[str, str],
        tokens: int = 0,
        secret: str | None = None,
        stream: Callable[[], StreamAssembler] | None = None,
    ) -> tuple[dict[str, Any], int]:
        """POST ``body`` as JSON to ``url``, retrying as `retry` says.

        Args:
            url: the full URL.
            body: the JSON object to send.
            headers: the request's headers.
            tokens: the tokens the request may use, for the tokens-per-minute limit.
            secret: a credential sent in ``headers``, replaced by ``***`` in every message.
            stream: makes the `StreamAssembler` that reads a streamed answer (the body must ask
                for one, e.g. ``"stream": true``); one per attempt. ``None``: a plain JSON
                answer.

        Returns:
            The JSON object answered (for a stream, what its events add up to) and the number
            of attempts it took.

        Raises:
            LLMError: the last attempt's failure as the module's table maps it
                (`AuthenticationError`, `BadRequestError`, `RateLimitError`, `ServerError`,
                `LLMTimeoutError`, `LLMConnectionError` or `InvalidResponseError`), with
                ``status_code`` and ``attempts`` set.
        """
        shown = public_url(url)
        attempts = self.retry.max_retries + 1
        timeout, timeouts = self.timeout, 0
        for attempt in range(1, attempts + 1):
            if self.limiter.active:
                await self.limiter.acquire(tokens)
            logger.debug("%s: POST %s (attempt %d of %d)", self.name, shown, attempt, attempts)
            outcome = await self._attempt(url, body, headers, timeout, stream)
            if not isinstance(outcome, _Failure):
                return outcome, attempt
            if outcome.error is LLMTimeoutError:
                timeouts += 1
                timeout *= 2  # never the same request with the same timeout again
            if not outcome.retry or attempt == attempts or timeouts > self.retry.timeout_retries:
                raise self._final(outcome, shown, attempt, timeouts, secret)
            wait = self.retry.wait(attempt, outcome.retry_after)
            logger.info(
                "%s: %s; retrying in %.2fs (attempt %d of %d)",
                self.name,
                _redact(outcome.reason, secret),
                wait,
                attempt + 1,
                attempts,
            )
            await self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _final(
        self, outcome: _Failure, shown: str, attempt: int, timeouts: int, secret: str | None
    ) -> Exception:
        """The error raised after the last attempt, ``outcome``."""
        tries = f"{attempt} attempt{'s' if attempt > 1 else ''}"
        why = "giving up" if outcome.retry else "not retried"
        if outcome.retry and timeouts > self.retry.timeout_retries and attempt > 1:
            tries += f", {timeouts} of them timed out, each with twice the time of the one before"
        message = f"{self.name}: POST {shown} failed: {outcome.reason} ({why} after {tries})"
        return outcome.error(_redact(message, secret), status_code=outcome.status, attempts=attempt)

    async def get_json(self, url: str, *, headers: Mapping[str, str], timeout: float) -> Any:
        """GET ``url`` once, through an HTTP client of its own (no retries, no limits, no
        concurrency slot), e.g. to ask a server about itself before the first request.

        Returns:
            The JSON answered, or ``None`` for any failure: an HTTP status other than 200, no
            answer within ``timeout`` seconds, no connection, a body that is not JSON.
        """
        with self._lock:
            client = self._new_client()
        try:
            response = await client.get(url, headers=headers, timeout=timeout)
            if response.status_code != 200:
                return None
            return response.json()
        except (httpx.HTTPError, httpx.InvalidURL, ValueError):
            return None
        finally:
            await client.aclose()


def client_setting(path: str, doc: str) -> Any:
    """A settable property of an LLM that sends through a `RetryingClient` held as ``.client``
    (`OpenAILLM`'s ``timeout``, ``max_retries``, ...): ``"timeout"`` is ``client.timeout``,
    ``"retry.max_retries"`` a field of its frozen `RetryPolicy`, which is replaced whole on
    assignment so that the policy's checks run again.

    Raises:
        InvalidInputError: (on assignment) a value the policy refuses.
    """
    owner, _, name = path.rpartition(".")

    def get(self: Any) -> Any:
        client = self.client
        return getattr(client.retry if owner else client, name)

    def set_(self: Any, value: Any) -> None:
        client = self.client
        if owner:
            client.retry = dataclasses.replace(client.retry, **{name: value})
        else:
            setattr(client, name, type(getattr(client, name))(value))

    return property(get, set_, doc=doc)
