"""Connecting to a Dask cluster, or starting a local one: `open_cluster` and `aopen_cluster`.

A *cluster* argument is one of:

* an address string (``"tcp://10.0.0.5:8786"``, ``"10.0.0.5:8786"``, ``"tls://..."``): the
  scheduler of a cluster that is already running (started by ``dask scheduler`` and
  ``dask worker``, dask-jobqueue, dask-kubernetes, dask-gateway, ...); it is left running;
* an int ``N``: a local cluster of ``N`` worker processes (one thread each) started for the
  block and stopped at its end. Every socket it opens listens on 127.0.0.1 only and it serves
  no dashboard (each Dask server still answers its health and metrics routes on an ephemeral
  loopback port);
* a ``distributed.Client``: used as it is (its cluster is left running).

Dask distributed is an optional dependency (``pip install 'neuron-explainer[dask]'``); this
module imports it only when a cluster is opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

from neuron_explainer.errors import InvalidInputError, UsageError

if TYPE_CHECKING:
    import distributed

__all__ = ["LOCAL_HOST", "ClusterSpec", "aopen_cluster", "check_cluster", "open_cluster"]

ClusterSpec: TypeAlias = "str | int | distributed.Client"
"""What names a cluster: a scheduler's address, a number of local workers, or a Client."""

LOCAL_HOST = "127.0.0.1"
"""The only interface a local cluster listens on."""
DEFAULT_TIMEOUT = 30.0
LOCAL_RESTART_GRACE = "1 hour"
"""How long a local cluster waits for a dead worker's nanny to restart it (`_keep_workers`)."""
INSTALL = "pip install 'neuron-explainer[dask]'"
_ADDRESS = re.compile(
    r"^(?:(?P<scheme>[a-z][a-z0-9+]*)://)?(?P<host>\[[^\]]+\]|[^\s/:]+):(?P<port>\d+)$"
)


def dask_distributed() -> Any:
    """The ``distributed`` module.

    Raises:
        InvalidInputError: Dask distributed is not installed (the message says how to install
            it).
    """
    try:
        import distributed
    except ImportError as exc:
        raise InvalidInputError(
            f"running on a cluster needs Dask distributed, which is not installed: {INSTALL}"
        ) from exc
    return distributed


def check_cluster(cluster: Any) -> str | int | None:
    """Check the shape of a cluster argument without connecting: the address (with its
    scheme, ``tcp://`` by default) for a string, the worker count for an int, ``None`` for a
    ``distributed.Client``.

    Raises:
        InvalidInputError: anything else: an address without a port, a worker count below 1,
            another type.
    """
    if isinstance(cluster, bool):
        raise InvalidInputError(
            f"cluster must be an address, a worker count or a Client, not {cluster!r}"
        )
    if isinstance(cluster, int):
        if cluster < 1:
            raise InvalidInputError(f"a local cluster needs at least 1 worker, got {cluster}")
        return cluster
    if isinstance(cluster, str):
        found = _ADDRESS.match(cluster.strip())
        if found is None:
            raise InvalidInputError(
                f"{cluster!r} is not a scheduler address: give 'tcp://HOST:PORT' (e.g. "
                "'tcp://10.0.0.5:8786'), or a number of local workers"
            )
        return cluster.strip() if found["scheme"] else f"tcp://{cluster.strip()}"
    client_class: Any = None
    with contextlib.suppress(ImportError):
        from distributed import Client as client_class
    if client_class is not None and isinstance(cluster, client_class):
        return None
    raise InvalidInputError(
        "cluster must be a scheduler address ('tcp://HOST:PORT'), a number of local workers "
        f"or a distributed.Client, got {type(cluster).__name__}"
    )


def local_cluster_options(workers: int, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The keyword arguments of the ``distributed.LocalCluster`` `open_cluster` starts:
    ``workers`` processes of one thread, everything on 127.0.0.1, no dashboard, no memory
    limit (a model is as big as it is), ``env`` set in every worker process."""
    options: dict[str, Any] = {
        "n_workers": workers,
        "threads_per_worker": 1,
        "processes": True,
        "host": LOCAL_HOST,
        "protocol": "tcp://",
        "dashboard_address": None,
        "worker_dashboard_address": None,
        # With no dashboard address the scheduler's HTTP server (health, metrics) would still
        # try port 8787; an ephemeral loopback port never collides with another cluster.
        "scheduler_kwargs": {"dashboard": False, "dashboard_address": f"{LOCAL_HOST}:0"},
        "memory_limit": 0,
    }
    if env:
        options["env"] = dict(env)
    return options


def _worker_environ() -> Any:
    """Dask's configuration while a local cluster starts: its nannies do not set
    ``MALLOC_TRIM_THRESHOLD_`` in the workers they spawn (Dask's default sets 65536). With it
    set, glibc hands every large block back to the system at once, so each tensor of a forward
    pass is page-faulted in afresh: a shard folded 20-27 % slower on the CPU (GPT-2 small,
    256 windows, one thread: 47.3 s and 50.2 s in a Dask worker against 39.5 s). A variable
    this process has still passes to its workers, as every variable does."""
    import dask

    return dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})


def _keep_workers() -> Any:
    """Dask's configuration while a local cluster is open: a worker that dies (killed, out of
    memory) is restarted by its nanny, however long the restart takes. Dask's default
    ``distributed.deploy.lost-worker-timeout`` (15 s) closes the nanny of a worker that has not
    rejoined within that time, so on a loaded machine, where spawning a worker can take
    longer, the cluster would lose that worker for the rest of the run."""
    import dask

    return dask.config.set({"distributed.deploy.lost-worker-timeout": LOCAL_RESTART_GRACE})


def _unreachable(address: str, timeout: float, exc: BaseException) -> InvalidInputError:
    return InvalidInputError(
        f"cannot reach the Dask scheduler at {address} within {timeout:g}s "
        f"({type(exc).__name__}: {exc}); is it running, and is the address right?"
    )


def _start_failed(workers: int, exc: BaseException) -> UsageError:
    return UsageError(
        f"starting a local cluster of {workers} worker processes failed ({exc}); a script "
        "that starts one must run under `if __name__ == '__main__':` (its workers are spawned "
        "processes that import the script)"
    )


@contextlib.contextmanager
def open_cluster(
    cluster: ClusterSpec,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> Iterator[distributed.Client]:
    """Connect to a Dask cluster, or start a local one, for the block; yields a
    ``distributed.Client``.

    Args:
        cluster: a scheduler address (``"tcp://10.0.0.5:8786"``: a running cluster, left
            running), a number of local worker processes (started now, one thread each, on
            127.0.0.1 only, no dashboard; stopped at the end of the block; while it is open,
            Dask's ``distributed.deploy.lost-worker-timeout`` is an hour, so a worker that
            dies is always restarted), or a ``distributed.Client`` (yielded as it is, left
            open).
        timeout: seconds to wait for the scheduler to answer.
        env: environment variables of the worker processes of a local cluster (they inherit
            this process's environment, then these).

    Raises:
        InvalidInputError: Dask distributed is not installed (``pip install
            'neuron-explainer[dask]'``), the argument is none of the above, or the scheduler
            cannot be reached within ``timeout``.
        UsageError: the local workers could not start (e.g. a script without a
            ``__main__`` guard).
    """
    target = check_cluster(cluster)
    distributed = dask_distributed()
    if target is None:
        yield cluster  # type: ignore[misc]
        return
    if isinstance(target, int):
        try:
            with _worker_environ():
                local = distributed.LocalCluster(**local_cluster_options(target, env))
        except RuntimeError as exc:
            raise _start_failed(target, exc) from exc
        with _keep_workers(), local, distributed.Client(local, timeout=timeout) as client:
            yield client
        return
    try:
        client = distributed.Client(target, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise _unreachable(target, timeout, exc) from exc
    with client:
        yield client


@contextlib.asynccontextmanager
async def aopen_cluster(
    cluster: ClusterSpec,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[distributed.Client]:
    """`open_cluster` inside a running event loop: yields an asynchronous
    ``distributed.Client`` bound to this loop (a synchronous Client given is reached through a
    new asynchronous one to the same scheduler, closed at the end; the Client itself is left
    open).

    Raises:
        InvalidInputError, UsageError: as for `open_cluster`.
    """
    target = check_cluster(cluster)
    distributed = dask_distributed()
    if target is None:
        given: Any = cluster
        if given.asynchronous and given.loop.asyncio_loop is asyncio.get_running_loop():
            yield given
            return
        target = given.scheduler.address
        security = given.security
    else:
        security = None
    if isinstance(target, int):
        try:
            with _worker_environ():
                local = await distributed.LocalCluster(
                    asynchronous=True, **local_cluster_options(target, env)
                )
        except RuntimeError as exc:
            raise _start_failed(target, exc) from exc
        with _keep_workers():
            async with (
                local,
                distributed.Client(local, asynchronous=True, timeout=timeout) as client,
            ):
                yield client
        return
    try:
        client = await distributed.Client(
            target, asynchronous=True, timeout=timeout, security=security
        )
    except (OSError, TimeoutError) as exc:
        raise _unreachable(str(target), timeout, exc) from exc
    async with client:
        yield client
