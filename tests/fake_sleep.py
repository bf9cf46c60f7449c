"""`Sleeps`: an injected ``sleep=`` for the LLM backends' tests that records each wait and
yields to the event loop without waiting, so backoff is asserted on the waits asked for."""

from __future__ import annotations

import asyncio


class Sleeps:
    """An injected sleep: records each wait and yields to the loop without waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)
