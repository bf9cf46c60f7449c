"""What a run keeps on the Dask scheduler: shared limits, a mailbox of results, the run's blobs.

`RunService` is a scheduler plugin (registered once per scheduler by `RunChannel.attach`). It
keeps, per run id:

* **pools**: a requests/tokens-per-minute `neuron_explainer.llm.limits.RateLimiter` and a cap on
  requests in flight, per LLM of the run. Workers ask them for permits before every request
  (`WorkerLink`), so a limit holds across the whole cluster, not per worker. A slot held by a
  worker that leaves the cluster (killed, lost) is freed at once.
* **a mailbox**: a worker delivers a unit's outcome here before its task ends; the driver takes
  it out. Delivery is remembered for the run, so a task that Dask runs again (its worker died
  after delivering) finds its unit delivered and spends nothing.
* **blobs**: bytes the driver puts once (the run's pickled components) for every worker to read,
  workers that join later included.

The scheduler must be able to import neuron_explainer (the same version as the driver and the
workers); a local cluster's scheduler runs in the driver's process.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from neuron_explainer.llm.limits import RateLimiter

__all__ = ["PLUGIN_NAME", "RunChannel", "RunService", "WorkerLink"]

PLUGIN_NAME = "neuron-explainer"
_OP = "neuron_explainer_"
_HANDLERS = (
    "open",
    "close",
    "blob",
    "pool",
    "permit",
    "refund",
    "slot",
    "unslot",
    "deliver",
    "delivered",
    "take",
    "stats",
)

logger = logging.getLogger(__name__)


class _Pool:
    """One LLM's limits: a rate limiter and at most ``slots`` requests in flight."""

    def __init__(self, rpm: float | None, tpm: float | None, slots: int | None) -> None:
        self.limiter = RateLimiter(rpm, tpm)
        self.slots = slots
        self.leases: dict[str, str] = {}  # lease -> worker address
        self.waiting: collections.OrderedDict[str, tuple[asyncio.Future[None], str]] = (
            collections.OrderedDict()
        )
        self.permits = 0
        self.tokens = 0.0
        self.most_held = 0
        self.slot_waits = 0

    def permit(self, tokens: float) -> float:
        self.permits += 1
        self.tokens += tokens
        return self.limiter.reserve(tokens) if self.limiter.active else 0.0

    async def slot(self, lease: str, worker: str) -> None:
        if self.slots is None:
            return
        if len(self.leases) < self.slots and not self.waiting:
            self._grant(lease, worker)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting[lease] = (waiter, worker)
        self.slot_waits += 1
        try:
            await waiter
        finally:
            self.waiting.pop(lease, None)

    def _grant(self, lease: str, worker: str) -> None:
        self.leases[lease] = worker
        self.most_held = max(self.most_held, len(self.leases))

    def unslot(self, lease: str) -> None:
        self.leases.pop(lease, None)
        waiting = self.waiting.pop(lease, None)
        if waiting is not None and not waiting[0].done():
            waiting[0].cancel()  # given up before it was granted
        self._hand_over()

    def _hand_over(self) -> None:
        while self.waiting and self.slots is not None and len(self.leases) < self.slots:
            lease, (waiter, worker) = self.waiting.popitem(last=False)
            if not waiter.done():
                self._grant(lease, worker)
                waiter.set_result(None)

    def drop_worker(self, worker: str) -> None:
        for lease in [k for k, w in self.leases.items() if w == worker]:
            del self.leases[lease]
        for lease in [k for k, (_, w) in self.waiting.items() if w == worker]:
            waiter, _ = self.waiting.pop(lease)
            waiter.cancel()
        self._hand_over()

    def stats(self) -> dict[str, Any]:
        return {
            "permits": self.permits,
            "tokens": self.tokens,
            "slots": self.slots,
            "most_held": self.most_held,
            "slot_waits": self.slot_waits,
            "held": len(self.leases),
        }


@dataclass
class _Run:
    blobs: dict[str, bytes]
    pools: dict[str, _Pool] = field(default_factory=dict)
    mailbox: dict[str, bytes] = field(default_factory=dict)
    delivered: set[str] = field(default_factory=set)


class RunService(SchedulerPlugin):
    """The scheduler plugin keeping runs' pools, mailboxes and blobs (see the module)."""

    name = PLUGIN_NAME
    idempotent = True

    def __init__(self) -> None:
        self.runs: dict[str, _Run] = {}

    async def start(self, scheduler: Any) -> None:
        """Install the handlers (``neuron_explainer_<name>``) on ``scheduler``."""
        for name in _HANDLERS:
            scheduler.handlers[_OP + name] = getattr(self, "_" + name)

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        """Free every slot the leaving ``worker`` held or waited for."""
        for run in self.runs.values():
            for pool in run.pools.values():
                pool.drop_worker(worker)

    # -- handlers (each takes the run id; an unknown run is a finished one: nothing to do) --

    def _open(self, run: str, blobs: dict[str, bytes]) -> None:
        self.runs.setdefault(run, _Run(dict(blobs)))

    def _close(self, run: str) -> dict[str, Any]:
        state = self.runs.pop(run, None)
        if state is None:
            return {}
        for pool in state.pools.values():
            for waiter, _ in pool.waiting.values():
                waiter.cancel()
        return {key: pool.stats() for key, pool in state.pools.items()}

    def _blob(self, run: str, name: str) -> bytes | None:
        state = self.runs.get(run)
        return None if state is None else state.blobs.get(name)

    def _pool(
        self, run: str, pool: str, rpm: float | None, tpm: float | None, slots: int | None
    ) -> None:
        state = self.runs.get(run)
        if state is not None and pool not in state.pools:
            state.pools[pool] = _Pool(rpm, tpm, slots)

    def _found(self, run: str, pool: str) -> _Pool | None:
        state = self.runs.get(run)
        return None if state is None else state.pools.get(pool)

    def _permit(self, run: str, pool: str, tokens: float) -> float:
        found = self._found(run, pool)
        return 0.0 if found is None else found.permit(tokens)

    def _refund(self, run: str, pool: str, tokens: float) -> None:
        found = self._found(run, pool)
        if found is not None and found.limiter.active:
            found.limiter.refund(tokens)

    async def _slot(self, run: str, pool: str, lease: str, worker: str) -> bool:
        found = self._found(run, pool)
        if found is None:
            return False
        try:
            await found.slot(lease, worker)
        except asyncio.CancelledError:
            return False  # the worker left, gave up, or the run closed
        return True

    def _unslot(self, run: str, pool: str, lease: str) -> None:
        found = self._found(run, pool)
        if found is not None:
            found.unslot(lease)

    def _deliver(self, run: str, key: str, payload: bytes) -> bool:
        state = self.runs.get(run)
        if state is None or key in state.delivered:
            return False
        state.delivered.add(key)
        state.mailbox[key] = payload
        return True

    def _delivered(self, run: str, key: str) -> bool:
        state = self.runs.get(run)
        return state is not None and key in state.delivered

    def _take(self, run: str, key: str) -> bytes | None:
        state = self.runs.get(run)
        return None if state is None else state.mailbox.pop(key, None)

    def _stats(self, run: str) -> dict[str, Any]:
        state = self.runs.get(run)
        if state is None:
            return {}
        return {key: pool.stats() for key, pool in state.pools.items()}


class RunChannel:
    """The driver's side of a run on the scheduler: open it with blobs, take results, close it.

    Args:
        client: an asynchronous ``distributed.Client``.
        run: the run id.
    """

    def __init__(self, client: Any, run: str) -> None:
        self.client = client
        self.run = run

    @staticmethod
    async def attach(client: Any) -> None:
        """Register `RunService` on the client's scheduler (once: later calls do nothing).

        Raises:
            Exception: the scheduler cannot import neuron_explainer (it is not installed
                where the scheduler runs), as Dask reports it.
        """
        await client.register_plugin(RunService(), name=PLUGIN_NAME)

    async def call(self, op: str, /, **arguments: Any) -> Any:
        """Call the service's handler ``op`` for this run."""
        handler = getattr(self.client.scheduler, _OP + op)
        return await handler(run=self.run, **arguments)

    async def open(self, blobs: dict[str, bytes]) -> None:
        """Start the run on the scheduler with ``blobs`` for the workers to read."""
        await self.call("open", blobs=blobs)

    async def take(self, key: str) -> bytes | None:
        """The outcome delivered for ``key`` (removed from the mailbox), or ``None``."""
        payload: bytes | None = await self.call("take", key=key)
        return payload

    async def stats(self) -> dict[str, Any]:
        """Per pool: permits granted, tokens asked for, the slot cap and the most slots held
        at once, how many requests waited for a slot."""
        stats: dict[str, Any] = await self.call("stats")
        return stats

    async def close(self) -> dict[str, Any]:
        """End the run on the scheduler (its pools, mailbox and blobs are dropped); returns
        the pools' final `stats`."""
        stats: dict[str, Any] = await self.call("close")
        return stats


class WorkerLink:
    """A worker's side of a run: permits, slots, delivery, blobs. Calls go to the scheduler
    over the worker's own connection, from the worker's event loop or any other.

    Args:
        worker: the ``distributed.Worker`` this runs in.
        run: the run id.
    """

    def __init__(self, worker: Any, run: str) -> None:
        self.worker = worker
        self.run = run
        self.address: str = worker.address
        self._background: set[asyncio.Future[Any]] = set()

    async def call(self, op: str, /, **arguments: Any) -> Any:
        """Call the service's handler ``op`` for this run."""
        handler: Callable[..., Coroutine[Any, Any, Any]] = getattr(self.worker.scheduler, _OP + op)
        home = self.worker.loop.asyncio_loop
        call = handler(run=self.run, **arguments)
        if asyncio.get_running_loop() is home:
            return await call
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call, home))

    def later(self, op: str, /, **arguments: Any) -> None:
        """Call ``op`` without waiting for it (releases, refunds: also from a cancelled
        task); a failure is logged."""
        task = asyncio.ensure_future(self._logged(self.call(op, **arguments)))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _logged(call: Awaitable[Any]) -> None:
        try:
            await call
        except Exception as exc:  # the scheduler frees a lost worker's slots anyway
            logger.debug("a call to the run service failed: %s", exc)
