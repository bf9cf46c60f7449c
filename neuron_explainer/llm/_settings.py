"""The settings `neuron_explainer.llm.openai.OpenAILLM` reads from the environment, and the ones
it settles at its first request: the timeout and concurrency from the environment, and a local
server's slot count (llama.cpp's ``GET /props``)."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import weakref
from collections.abc import Mapping
from typing import Any

import httpx

from neuron_explainer._version import __version__
from neuron_explainer.errors import AuthenticationError, InvalidInputError
from neuron_explainer.llm.cache import public_url
from neuron_explainer.llm.transport import RetryingClient, is_local_url
from neuron_explainer.llm.urls import check_base_url, is_private_url

ENV_API_KEY = "OPENAI_API_KEY"
ENV_BASE_URL = "OPENAI_BASE_URL"
ENV_CACHE = "NEURON_EXPLAINER_CACHE"
ENV_TIMEOUT = "NEURON_EXPLAINER_LLM_TIMEOUT"
ENV_CONCURRENCY = "NEURON_EXPLAINER_LLM_CONCURRENCY"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_TIMEOUT = 60.0
DEFAULT_CONCURRENCY = 16
PROBE_TIMEOUT = 2.0  # seconds a server may take to say how many slots it has

logger = logging.getLogger("neuron_explainer.llm.openai")


class Secret:
    """A string that never shows itself in a repr."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<secret>"


def check_options(
    *,
    requests_per_minute: float | None,
    tokens_per_minute: float | None,
    context_window: int | None,
    prompt_logprobs_style: str,
    prompt_logprobs_max_tokens: int | None,
) -> None:
    """Check the backend's options that need no server.

    Raises:
        InvalidInputError: the first option out of range, named.
    """
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


def request_headers(llm: Any, base_url: str, key: str | None) -> dict[str, str]:
    """The headers of a request of ``llm`` (an `OpenAILLM`) to ``base_url`` with API ``key``.

    Raises:
        AuthenticationError: no key, and the server is not on this machine.
    """
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
            f"no API key for {llm.name} at {public_url(base_url)}: set the {ENV_API_KEY} "
            "environment variable or pass api_key= (servers on localhost need none)",
            attempts=0,
        )
    if llm.organization:
        headers["OpenAI-Organization"] = llm.organization
    headers.update(llm.extra_headers)
    return headers


def environment_base_url() -> str | None:
    """``OPENAI_BASE_URL``, checked; ``None`` when it is unset, empty or only white space.

    Raises:
        InvalidInputError: the variable holds an unusable URL (the message names it).
    """
    value = os.environ.get(ENV_BASE_URL, "")
    return check_base_url(value, ENV_BASE_URL) if value.strip() else None


def environment_number(name: str, kind: type[int] | type[float]) -> float | None:
    """The positive number (an integer for ``kind=int``) in environment variable ``name``;
    ``None`` when it is unset or empty.

    Raises:
        InvalidInputError: the value is not such a number (the message names the variable).
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    what = "a whole number >= 1" if kind is int else "a number of seconds > 0"
    try:
        value = kind(raw)
    except ValueError:
        raise InvalidInputError(f"{name}={raw!r} is not {what}") from None
    if not (math.isfinite(value) and value > 0):
        raise InvalidInputError(f"{name}={raw!r} is not {what}")
    return value


def check_environment() -> str:
    """Check the environment variables the ``openai`` provider reads (``OPENAI_BASE_URL``,
    ``NEURON_EXPLAINER_LLM_TIMEOUT``, ``NEURON_EXPLAINER_LLM_CONCURRENCY``) before any work,
    and return the base URL a backend built without ``base_url=`` will use.

    Raises:
        InvalidInputError: one of them holds an unusable value (the message names it).
    """
    base_url = environment_base_url()
    environment_number(ENV_TIMEOUT, float)
    environment_number(ENV_CONCURRENCY, int)
    return base_url or DEFAULT_BASE_URL


def server_root(base_url: str) -> str:
    """The server's root URL: ``base_url`` without its query and a final ``/v1``."""
    url = httpx.URL(base_url)
    path = url.path.rstrip("/")
    path = path.removesuffix("/v1")
    return str(url.copy_with(path=path or "/", query=None)).rstrip("/")


async def probe_slots(client: RetryingClient, base_url: str, headers: Mapping[str, str]) -> int:
    """How many requests the server at ``base_url`` generates at once, as llama.cpp's
    ``GET /props`` (``total_slots``) says; ``0`` when it does not say (another server, an
    error, no answer within `PROBE_TIMEOUT` seconds)."""
    url = server_root(base_url) + "/props"
    answer: Any = await client.get_json(
        url, headers=headers, timeout=min(PROBE_TIMEOUT, client.timeout)
    )
    slots = answer.get("total_slots") if isinstance(answer, dict) else None
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        logger.debug("%s: %s gave no slot count", client.name, public_url(url))
        return 0
    return slots


class LazySettings:
    """The timeout and concurrency of one backend: given ones win; the others are settled once,
    at the first request that is sent: from ``NEURON_EXPLAINER_LLM_TIMEOUT`` and
    ``NEURON_EXPLAINER_LLM_CONCURRENCY``, then, for the concurrency, from the server's slot
    count when ``detect_slots`` says to ask (``None``: servers on private addresses).

    Attributes:
        given: the settings given explicitly (``"timeout"``, ``"max_concurrency"``).
        detect_slots: ask the server for its slot count: ``True``, ``False``, or ``None``
            (when its base URL is on this machine or a private network).
        slots: the slot count the server reported (``None``: not asked, or it did not say).
    """

    def __init__(self, client: RetryingClient, given: set[str], detect_slots: bool | None) -> None:
        self.client = client
        self.given = given
        self.detect_slots = detect_slots
        self.slots: int | None = None
        self._settled = False
        self._lock = threading.Lock()
        self._loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def _loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._lock:
            return self._loop_locks.setdefault(loop, asyncio.Lock())

    async def settle(self, base_url: str, headers: Mapping[str, str]) -> None:
        """Settle the timeout and concurrency, once (later calls return at once).

        Raises:
            InvalidInputError: an environment variable holds an unusable value (nothing is
                settled, so the next request raises it again).
        """
        if self._settled:
            return
        async with self._loop_lock():
            if self._settled:
                return
            timeout = environment_number(ENV_TIMEOUT, float)
            concurrency = environment_number(ENV_CONCURRENCY, int)
            if "timeout" not in self.given and timeout is not None:
                self.client.timeout = float(timeout)
            if "max_concurrency" not in self.given:
                if concurrency is not None:
                    self.client.max_concurrency = int(concurrency)
                elif self._ask(base_url):
                    await self._ask_slots(base_url, headers)
            self._settled = True

    def _ask(self, base_url: str) -> bool:
        return self.detect_slots is True or (self.detect_slots is None and is_private_url(base_url))

    async def _ask_slots(self, base_url: str, headers: Mapping[str, str]) -> None:
        slots = await probe_slots(self.client, base_url, headers)
        if slots:
            self.slots = slots
            self.client.max_concurrency = slots
            logger.info(
                "%s: the server at %s generates %d request(s) at once: max_concurrency %d",
                self.client.name,
                public_url(base_url),
                slots,
                slots,
            )


def explicit_setting(name: str, doc: str) -> Any:
    """A settable property of an `OpenAILLM` for its client's ``name`` (``"timeout"``,
    ``"max_concurrency"``): assigning it counts as giving it, so the environment and the
    server's slot count no longer decide it.

    Raises:
        InvalidInputError: (on assignment) a value that is not positive.
    """

    def get(self: Any) -> Any:
        return getattr(self.client, name)

    def set_(self: Any, value: Any) -> None:
        kind = type(getattr(self.client, name))
        converted = kind(value)
        if not converted > 0:
            raise InvalidInputError(f"{name} must be > 0, got {value}")
        setattr(self.client, name, converted)
        self.settings.given.add(name)

    return property(get, set_, doc=doc)
