"""LLM limits that hold across a cluster: `share_limits` points every HTTP LLM client of a
worker's components at the run's pools on the scheduler (`neuron_explainer.cluster.service`).

Each `neuron_explainer.llm.transport.RetryingClient` found (the one inside every `OpenAILLM`,
`LlamaCppLLM` and any provider built on it) gets:

* a `SharedLimiter` instead of its own rate limiter: before each attempt it asks the scheduler
  for a permit (one round trip), which reserves the request and its tokens in the pool's
  token buckets and says how long to wait; so the requests- and tokens-per-minute limits count
  every worker's requests together;
* a `SharedSlots` gate: each attempt holds one of the pool's slots while it is in flight, so
  at most ``max_concurrency`` requests are in flight in the whole cluster.

The pool's limits are the LLM's own: its ``requests_per_minute``, ``tokens_per_minute`` and
``max_concurrency`` (given, else ``NEURON_EXPLAINER_LLM_CONCURRENCY``, else the default 16).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from neuron_explainer.cluster.service import WorkerLink
from neuron_explainer.interfaces import Explainer, Simulator
from neuron_explainer.llm.base import LLM
from neuron_explainer.llm.limits import RateLimiter, Sleep
from neuron_explainer.llm.transport import RetryingClient

__all__ = ["PoolLimits", "SharedLimiter", "SharedSlots", "find_clients", "share_limits"]

ENV_CONCURRENCY = "NEURON_EXPLAINER_LLM_CONCURRENCY"
_DEPTH = 6
_counter = itertools.count()

PoolLimits = tuple[float | None, float | None, int | None]
"""A pool's (requests per minute, tokens per minute, slots)."""


class SharedLimiter(RateLimiter):
    """A `RateLimiter` whose buckets are a pool on the scheduler: `acquire` asks for a permit
    and sleeps the wait it is told (refunded if cancelled while waiting).

    Args:
        link: the worker's link to the run.
        pool: the pool's key.
        sleep: awaited with the wait (default ``asyncio.sleep``).
    """

    def __init__(self, link: WorkerLink, pool: str, sleep: Sleep | None = None) -> None:
        super().__init__(sleep=sleep if sleep is not None else asyncio.sleep)
        self.link = link
        self.pool = pool

    @property
    def active(self) -> bool:
        """Always: the pool decides."""
        return True

    async def acquire(self, tokens: float = 0.0) -> float:
        """Reserve one request and ``tokens`` tokens in the pool; sleep until they may be
        used; returns the seconds waited."""
        wait = float(await self.link.call("permit", pool=self.pool, tokens=float(tokens)))
        if wait > 0:
            try:
                await self._sleep(wait)
            except BaseException:
                self.link.later("refund", pool=self.pool, tokens=float(tokens))
                raise
        return wait


class SharedSlots:
    """The gate of a `RetryingClient` (its ``gate``): each attempt holds one slot of the pool
    while it is in flight; released when it ends, however it ends."""

    def __init__(self, link: WorkerLink, pool: str) -> None:
        self.link = link
        self.pool = pool

    def __call__(self) -> contextlib.AbstractAsyncContextManager[object]:
        return self._held()

    @contextlib.asynccontextmanager
    async def _held(self) -> AsyncIterator[object]:
        lease = f"{self.link.address}/{next(_counter)}/{uuid.uuid4().hex[:8]}"
        try:
            await self.link.call("slot", pool=self.pool, lease=lease, worker=self.link.address)
            yield lease
        finally:
            self.link.later("unslot", pool=self.pool, lease=lease)


def _children(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        yield from value.values()
    elif isinstance(value, list | tuple | set | frozenset):
        yield from value
    elif _walked(value):
        yield from vars(value).values()


def _walked(value: Any) -> bool:
    """Whether to look inside ``value``: our objects and any component (not models, arrays or
    modules)."""
    if not hasattr(value, "__dict__") or isinstance(value, type):
        return False
    module = type(value).__module__ or ""
    return module.startswith("neuron_explainer") or isinstance(value, Explainer | Simulator | LLM)


def find_clients(root: Any) -> list[tuple[Any, RetryingClient]]:
    """Every `RetryingClient` reachable from ``root`` (components, their LLMs, containers), with
    the object holding it, each once, in a fixed order."""
    found: list[tuple[Any, RetryingClient]] = []
    seen: set[int] = set()
    level: list[tuple[Any, Any]] = [(None, root)]
    for _ in range(_DEPTH):
        below: list[tuple[Any, Any]] = []
        for owner, value in level:
            if id(value) in seen:
                continue
            seen.add(id(value))
            if isinstance(value, RetryingClient):
                found.append((owner, value))
                continue
            holder = value if _walked(value) else owner
            below.extend((holder, child) for child in _children(value))
        level = below
    return found


def pool_limits(owner: Any, client: RetryingClient) -> PoolLimits:
    """The limits of the pool an LLM's client gets: its rates and its concurrency (given,
    else from ``NEURON_EXPLAINER_LLM_CONCURRENCY``, else its default)."""
    limiter = client.limiter
    rpm = limiter.requests.rate_per_minute if limiter.requests is not None else None
    tpm = limiter.tokens.rate_per_minute if limiter.tokens is not None else None
    slots = client.max_concurrency
    settings = getattr(owner, "settings", None)
    given: set[str] = getattr(settings, "given", set())
    raw = os.environ.get(ENV_CONCURRENCY, "").strip()
    if "max_concurrency" not in given and raw.isdigit() and int(raw) > 0:
        slots = int(raw)
    return rpm, tpm, slots


def share_limits(root: Any, link: WorkerLink) -> dict[str, PoolLimits]:
    """Point every `RetryingClient` reachable from ``root`` at the run's pools: pool
    ``"llm<i>"`` for the i-th one found. Returns each pool's limits (the caller opens the
    pools on the scheduler)."""
    pools: dict[str, PoolLimits] = {}
    for i, (owner, client) in enumerate(find_clients(root)):
        key = f"llm{i}"
        pools[key] = pool_limits(owner, client)
        shared = SharedLimiter(link, key, client.sleep)
        if getattr(owner, "limiter", None) is client.limiter:
            owner.limiter = shared
        client.limiter = shared
        client.gate = SharedSlots(link, key)
        client.max_concurrency = max(client.max_concurrency, pools[key][2] or 1)
    return pools
