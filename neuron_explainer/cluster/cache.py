"""Values a worker process keeps across the tasks it runs: `worker_cache`.

A task that needs a model loads it through ``worker_cache(key, factory)``: the first task on a
worker process calls ``factory()``, every later one (of any run) gets the same object. The cache
is per process, so it is per Dask worker when workers are processes (the default, and what
`neuron_explainer.cluster.open_cluster` starts); outside a worker it is simply a cache of this
process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

__all__ = ["forget_cached", "worker_cache"]

T = TypeVar("T")

_values: dict[Hashable, Any] = {}
_locks: dict[Hashable, threading.Lock] = {}
_guard = threading.Lock()


def worker_cache(key: Hashable, factory: Callable[[], T]) -> T:
    """The value this worker process holds under ``key``, made by ``factory()`` on first use.

    Concurrent first uses (threads of one worker) call ``factory`` once; the others wait for
    its value. A ``factory`` that raises caches nothing (the next use calls it again). Keys are
    shared by every caller in the process: qualify them (``("my-package", "model", path)``).

    Args:
        key: what the value is (hashable): e.g. a model's path and dtype.
        factory: makes the value; called with no arguments, at most once per process and key
            while it succeeds.

    Returns:
        The cached value.

    Raises:
        Whatever ``factory`` raises.
    """
    try:
        return _values[key]  # type: ignore[no-any-return]
    except KeyError:
        pass
    with _guard:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:
        if key in _values:
            return _values[key]  # type: ignore[no-any-return]
        value = factory()
        _values[key] = value
        return value


def forget_cached(key: Hashable) -> bool:
    """Drop the value held under ``key`` (the next `worker_cache` makes a new one); whether
    there was one."""
    with _guard:
        _locks.pop(key, None)
        return _values.pop(key, _missing) is not _missing


_missing = object()
