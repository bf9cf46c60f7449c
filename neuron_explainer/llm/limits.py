"""Client-side rate limits: token buckets for requests and tokens per minute.

`RateLimiter` paces the requests of one backend object so that they stay under a requests-per-
minute and a tokens-per-minute limit, whichever event loop or thread they come from. Each limit
is a `TokenBucket` that *reserves*: a caller takes what it needs at once (the balance may go
negative) and is told how long to wait until the debt is repaid. Callers are therefore served in
the order they asked, and nobody polls.

The clock and the sleep are injectable, so tests drive the limiter with a fake clock and never
wait.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

__all__ = ["RateLimiter", "TokenBucket"]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class TokenBucket:
    """A bucket refilled at ``rate_per_minute`` up to ``burst``, from which callers reserve.

    Thread-safe and independent of any event loop: `reserve` only does arithmetic under a lock
    and returns the wait; `acquire` sleeps it in the caller's loop.

    Args:
        rate_per_minute: units added per minute (> 0).
        burst: the most units that can accumulate (how many can go at once after a quiet
            spell); by default one second's worth, and at least 1.
        clock: seconds as a float, monotonic (default `time.monotonic`).

    Raises:
        ValueError: a rate or burst that is not positive.
    """

    def __init__(
        self, rate_per_minute: float, *, burst: float | None = None, clock: Clock = time.monotonic
    ) -> None:
        if not rate_per_minute > 0:
            raise ValueError(f"rate_per_minute must be > 0, got {rate_per_minute}")
        if burst is not None and not burst > 0:
            raise ValueError(f"burst must be > 0, got {burst}")
        self.rate_per_minute = float(rate_per_minute)
        self.capacity = float(burst) if burst is not None else max(1.0, rate_per_minute / 60.0)
        self._per_second = self.rate_per_minute / 60.0
        self._clock = clock
        self._level = self.capacity
        self._updated = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._level = min(self.capacity, self._level + elapsed * self._per_second)
        self._updated = now

    @property
    def level(self) -> float:
        """Units available now (negative while reservations are waiting)."""
        with self._lock:
            self._refill()
            return self._level

    def reserve(self, amount: float = 1.0) -> float:
        """Take ``amount`` now and return the seconds to wait before using it (0 if none).

        An amount larger than the burst is allowed: its caller simply waits longer.
        """
        if amount < 0:
            raise ValueError(f"amount must be >= 0, got {amount}")
        with self._lock:
            self._refill()
            self._level -= amount
            return 0.0 if self._level >= 0 else -self._level / self._per_second

    def refund(self, amount: float) -> None:
        """Give back ``amount`` (a reservation that was not used), up to the burst."""
        with self._lock:
            self._refill()
            self._level = min(self.capacity, self._level + amount)

    async def acquire(self, amount: float = 1.0, *, sleep: Sleep = asyncio.sleep) -> float:
        """Reserve ``amount`` and sleep until it may be used; returns the seconds waited.

        Cancelled while waiting, the reservation is refunded.
        """
        wait = self.reserve(amount)
        if wait > 0:
            try:
                await sleep(wait)
            except BaseException:
                self.refund(amount)
                raise
        return wait


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits shared by every caller of a backend.

    Args:
        requests_per_minute: the request limit, or ``None`` for none.
        tokens_per_minute: the token limit (prompt and completion tokens together, estimated
            before sending), or ``None`` for none.
        clock: seconds as a float, monotonic (default `time.monotonic`).
        sleep: awaited with the seconds to wait (default `asyncio.sleep`).
    """

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.requests = (
            TokenBucket(requests_per_minute, clock=clock) if requests_per_minute else None
        )
        self.tokens = TokenBucket(tokens_per_minute, clock=clock) if tokens_per_minute else None
        self._sleep = sleep

    @property
    def active(self) -> bool:
        """Whether any limit is set."""
        return self.requests is not None or self.tokens is not None

    def reserve(self, tokens: float = 0.0) -> float:
        """Reserve one request and ``tokens`` tokens; return the seconds to wait."""
        wait = 0.0
        if self.requests is not None:
            wait = max(wait, self.requests.reserve(1.0))
        if self.tokens is not None:
            wait = max(wait, self.tokens.reserve(tokens))
        return wait

    def refund(self, tokens: float = 0.0) -> None:
        """Give back one request and ``tokens`` tokens."""
        if self.requests is not None:
            self.requests.refund(1.0)
        if self.tokens is not None:
            self.tokens.refund(tokens)

    async def acquire(self, tokens: float = 0.0) -> float:
        """Wait until one more request of about ``tokens`` tokens fits both limits; returns the
        seconds waited. Cancelled while waiting, the reservation is refunded."""
        wait = self.reserve(tokens)
        if wait > 0:
            try:
                await self._sleep(wait)
            except BaseException:
                self.refund(tokens)
                raise
        return wait
