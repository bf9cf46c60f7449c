"""A local cluster keeps its workers: a killed worker is restarted by its nanny and rejoins,
even when the restart is slower than Dask's ``lost-worker-timeout`` (issue 19: on a loaded
machine Dask closed the nanny after 15 s and the cluster ran on with one worker)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

from neuron_explainer.cluster import open_cluster  # noqa: E402
from neuron_explainer.cluster.engine import LOCAL_RESTART_GRACE, aopen_cluster  # noqa: E402

LOST = "distributed.deploy.lost-worker-timeout"


def _kill_one_and_wait(client: Any) -> None:
    pids = client.run(os.getpid)
    address, victim = next(iter(pids.items()))
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 120  # deadlines, not timing asserts
    while address in client.scheduler_info()["workers"]:  # the scheduler sees it die
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # the replacement arrives in seconds when the nanny is kept, never when Dask closes it
    client.wait_for_workers(2, timeout=120)
    now = client.run(os.getpid).values()
    assert len(now) == 2 and victim not in now


def test_a_killed_worker_rejoins_however_slow_its_restart() -> None:
    # a timeout far shorter than any restart stands in for a machine where the restart takes
    # longer than Dask's 15 s; with Dask's setting in force the nanny is closed and
    # wait_for_workers gives up
    with dask.config.set({LOST: "10ms"}):
        with open_cluster(2) as client:
            assert dask.config.get(LOST) == LOCAL_RESTART_GRACE
            _kill_one_and_wait(client)
        assert dask.config.get(LOST) == "10ms"  # the user's setting is back after the block


def test_the_async_local_cluster_keeps_its_workers_too() -> None:
    # the asynchronous cluster holds the same setting for its block (without it this test
    # still passed here: Dask's check did not close this cluster's nanny, so the setting is
    # what the test pins down; the synchronous test shows what it prevents)
    async def run() -> None:
        async with aopen_cluster(2) as client:
            assert dask.config.get(LOST) == LOCAL_RESTART_GRACE
            pids = await client.run(os.getpid)
            address, victim = next(iter(pids.items()))
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 120
            while address in (await client.scheduler.identity())["workers"]:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            await client.wait_for_workers(2, timeout=120)
            now = (await client.run(os.getpid)).values()
            assert len(now) == 2 and victim not in now

    with dask.config.set({LOST: "10ms"}):
        asyncio.run(run())
        assert dask.config.get(LOST) == "10ms"
