"""Running async code from sync code, and gathering awaitables so that one failure cancels the
rest. Used by every layer; imports only `neuron_explainer.errors`."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from neuron_explainer.errors import UsageError

__all__ = ["gather_or_cancel", "run_sync", "sync_twin"]

T = TypeVar("T")
P = ParamSpec("P")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code.

    Raises:
        UsageError: when called from inside a running event loop (await the async twin instead).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise UsageError(
        "a synchronous neuron_explainer call was made inside a running event loop; "
        "await its async twin instead (e.g. `await aexplain_neuron(...)`)"
    )


async def gather_or_cancel(*awaitables: Awaitable[T]) -> list[T]:
    """Like ``asyncio.gather``, but the first failure cancels the others, and waits for them
    to end, before it propagates: no request of a failed unit goes on in the background.

    Raises:
        BaseException: the first exception raised by one of ``awaitables``.
    """
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def sync_twin(afunc: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """The synchronous twin of the coroutine function ``afunc`` (``aexplain_neuron`` →
    ``explain_neuron``): the same parameters, docstring and return value, run with `run_sync`.

    The docs build gives the twin ``afunc``'s signature too (docs/_griffe_twins.py), so a
    public function and its async twin are written once.

    Raises:
        UsageError: (from the twin) when called inside a running event loop.
    """

    @functools.wraps(afunc)
    def twin(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(afunc(*args, **kwargs))

    twin.__name__ = afunc.__name__.removeprefix("a")
    owner, dot, _ = afunc.__qualname__.rpartition(".")
    twin.__qualname__ = owner + dot + twin.__name__
    return twin
