"""Batch runs on a Dask cluster (issue 19): (a) the LLM stage on a 2-worker local cluster against
a rate limit, (b) the coordinator's CPU time per 1,000 units with 64 lightweight workers.

(a) ``explain_neurons(..., cluster=2 workers)`` explains ``--units`` number records with one
    `OpenAILLM` limited to ``--rpm`` requests a minute, against our OpenAI-protocol server in its
    own process. Every request of both workers takes a permit from the one bucket on the
    scheduler, so the cluster can at best send the bucket's burst at once and then ``rpm / 60``
    a second. The achieved rate is read from the server's own timestamps: after the burst,
    ``(requests - burst) / (last - first)``, as a ratio of the limit (target >= 0.9). It also
    times the permits themselves from a worker: a rate permit, and a concurrency slot taken and
    given back, in round trips to the scheduler.
(b) 64 workers that load no model (``distributed.Worker`` objects, one thread each, all in one
    separate process connected to this process's scheduler) explain ``--fake-units`` units with
    the offline token-table components. This process is the coordinator: driver (records read,
    tasks submitted, outcomes taken and written to SQLite) and scheduler (task placement, the
    run service). Its CPU time per 1,000 units says whether it would be the bottleneck.

Run:  python benchmarks/bench_cluster_batch.py [--units 40] [--rpm 1800] [--fake-units 1000]
          [--fake-workers 64] [--skip-a] [--skip-b]
Writes benchmarks/results/cluster_batch_<UTC time>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from neuron_explainer import NeuronRecord, UnitId
from neuron_explainer.cluster import open_cluster
from neuron_explainer.explainers.llm import LLMExplainer
from neuron_explainer.llm.openai import OpenAILLM
from neuron_explainer.runs import RunSummary, explain_neurons
from neuron_explainer.simulators.chat_logprob import ChatLogprobSimulator
from neuron_explainer.testing import OpenAITestServer, OracleResponder, number_neuron_record

OPTIONS = {"n_top_per_split": 3, "n_random_per_split": 3}  # 13 requests a unit
RESULTS = Path(__file__).with_name("results")


def record(unit: UnitId) -> NeuronRecord:
    return number_neuron_record(seed=unit.index).model_copy(update={"unit": unit})


def records(units: list[UnitId]) -> dict[UnitId, NeuronRecord]:
    """Records made before the clock starts (`number_neuron_record` takes ~15 ms: a real run
    reads its records from a collection), 16 distinct ones named after each unit."""
    made = [number_neuron_record(seed=i) for i in range(16)]
    return {u: made[u.index % 16].model_copy(update={"unit": u}) for u in units}


def serve(pipe: Any) -> None:
    """The server in its own process (its threads do not compete with the driver's GIL)."""
    with OpenAITestServer(responder=OracleResponder()) as server:
        pipe.send(server.base_url)
        pipe.recv()
        pipe.send([r.received_at for r in server.requests])


async def _permit_round_trips(n: int) -> dict[str, float]:
    """On a worker: the time of ``n`` rate permits, and of ``n`` slots taken and given back."""
    from distributed import get_worker

    from neuron_explainer.cluster.service import WorkerLink

    link = WorkerLink(get_worker(), "bench-permits")
    await link.call("pool", pool="p", rpm=None, tpm=None, slots=4)
    started = time.perf_counter()
    for _ in range(n):
        await link.call("permit", pool="p", tokens=100.0)
    permit = (time.perf_counter() - started) / n
    started = time.perf_counter()
    for i in range(n):
        await link.call("slot", pool="p", lease=f"l{i}", worker=link.address)
        await link.call("unslot", pool="p", lease=f"l{i}")
    slot = (time.perf_counter() - started) / n
    return {"permit_ms": permit * 1e3, "slot_and_release_ms": slot * 1e3}


def rate_limited(n_units: int, rpm: float) -> dict[str, Any]:
    """(a): the achieved request rate of a 2-worker cluster under ``rpm``."""
    here, there = multiprocessing.Pipe()
    server = multiprocessing.Process(target=serve, args=(there,), daemon=True)
    server.start()
    base_url = here.recv()
    llm = OpenAILLM("m", base_url=base_url, api_key="local", requests_per_minute=rpm, cache=False)
    units = [UnitId(model="bench", layer=0, index=i) for i in range(n_units)]
    with tempfile.TemporaryDirectory() as folder, open_cluster(2) as client:
        from neuron_explainer.cluster.service import RunService

        client.register_plugin(RunService())
        client.sync(client.scheduler.neuron_explainer_open, run="bench-permits", blobs={})
        round_trips = client.submit(_permit_round_trips, 500, pure=False).result()
        started = time.perf_counter()
        summary = explain_neurons(
            records=record,
            source_name="bench",
            units=units,
            db=Path(folder) / "run.sqlite",
            explainer=LLMExplainer(llm),
            simulator=ChatLogprobSimulator(llm),
            explain_options=OPTIONS,
            concurrency=4,
            cluster=client,
        )
        wall = time.perf_counter() - started
    here.send("done")
    times = sorted(here.recv())
    server.join(timeout=10)
    assert isinstance(summary, RunSummary) and summary.done == n_units, summary
    per_second = rpm / 60
    burst = max(1.0, per_second)  # the bucket's capacity: one second's worth
    span = times[-1] - times[0]
    steady = (len(times) - burst) / span
    return {
        "units": n_units,
        "requests": len(times),
        "rpm": rpm,
        "limit_per_s": per_second,
        "server_span_s": span,
        "run_wall_s": wall,
        "achieved_after_burst_per_s": steady,
        "ratio_after_burst": steady / per_second,
        "ratio_whole_span": len(times) / span / per_second,
        **round_trips,
    }


WORKERS_SCRIPT = """
import asyncio, sys
from distributed import Worker

async def main(address, n):
    workers = [Worker(address, nthreads=1, host="127.0.0.1", dashboard=False, memory_limit=0,
                      silence_logs=40) for _ in range(n)]
    await asyncio.gather(*workers)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await asyncio.gather(*(w.close() for w in workers))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def coordinator_cost(n_units: int, n_workers: int) -> dict[str, Any]:
    """(b): this process's CPU time per 1,000 units with ``n_workers`` lightweight workers."""
    from distributed import LocalCluster

    from neuron_explainer.cluster.engine import local_cluster_options

    options = local_cluster_options(1)
    options["n_workers"] = 0  # only the scheduler here; the workers come from the subprocess
    units = [UnitId(model="bench", layer=0, index=i) for i in range(n_units)]
    given = records(units)
    with LocalCluster(**options) as cluster, tempfile.TemporaryDirectory() as folder:
        workers = subprocess.Popen(
            [sys.executable, "-c", WORKERS_SCRIPT, cluster.scheduler_address, str(n_workers)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert workers.stdout is not None and workers.stdout.readline().strip() == "ready"
            from distributed import Client

            with Client(cluster) as client:
                client.wait_for_workers(n_workers, timeout=120)
                warm = explain_neurons(  # every worker imports the pipeline once
                    records=given,
                    source_name="warm",
                    units=units[: 2 * n_workers],
                    db=Path(folder) / "warm.sqlite",
                    concurrency=2 * n_workers,
                    cluster=client,
                )
                assert isinstance(warm, RunSummary)
                cpu, wall = time.process_time(), time.perf_counter()
                summary = explain_neurons(
                    records=given,
                    source_name="bench",
                    units=units,
                    db=Path(folder) / "run.sqlite",
                    concurrency=2 * n_workers,
                    cluster=client,
                )
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                seen = len(client.scheduler_info()["workers"])
        finally:
            if workers.stdin is not None:
                workers.stdin.close()
            workers.wait(timeout=60)
    assert isinstance(summary, RunSummary) and summary.done + summary.failed == n_units, summary
    return {
        "units": n_units,
        "workers": n_workers,
        "done": summary.done,
        "failed": summary.failed,
        "wall_s": wall,
        "units_per_s": n_units / wall,
        "coordinator_cpu_s": cpu,
        "coordinator_cpu_s_per_1000_units": cpu / n_units * 1000,
        "coordinator_cpu_share_of_wall": cpu / wall,
        "workers_seen": seen,
    }


def runner_alone(n_units: int) -> dict[str, Any]:
    """The same runner in one process with the pipeline taken out (each unit's result made
    beforehand): what recording outcomes costs anyway (the run database's commits, events),
    to set the coordinator's CPU time against."""
    from neuron_explainer import explain_neuron
    from neuron_explainer.options import RunOptions
    from neuron_explainer.runs import RunStore
    from neuron_explainer.runs._runner import run_units
    from neuron_explainer.runs._sources import open_source

    units = [UnitId(model="bench", layer=0, index=i) for i in range(n_units)]
    given = records(units)
    done = {u: explain_neuron(r) for u, r in list(given.items())[:16]}

    async def work(unit: UnitId) -> Any:
        return done[units[unit.index % 16]].model_copy(update={"unit": unit})

    async def go(db: Path) -> float:
        src = await open_source(
            None, model=None, corpus=None, records=given, source_name="bench",
            collection_dir=db.with_suffix(".collection"), layers=None, collect_options=None,
        )  # fmt: skip
        with RunStore(db, create=True) as store:
            store.lock()
            store.check_config("explain", {"source": src.identity}, {"source_path": src.path})
            cpu = time.process_time()
            await run_units(
                store, "explain", units, work, run=RunOptions.build(concurrency=128),
                progress=None, started=time.perf_counter(), source=src,
            )  # fmt: skip
            return time.process_time() - cpu

    with tempfile.TemporaryDirectory() as folder:
        import asyncio

        cpu = asyncio.run(go(Path(folder) / "run.sqlite"))
    return {"units": n_units, "cpu_s_per_1000_units": cpu / n_units * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=40)
    parser.add_argument("--rpm", type=float, default=1800.0)
    parser.add_argument("--fake-units", type=int, default=1000)
    parser.add_argument("--fake-workers", type=int, default=64)
    parser.add_argument("--skip-a", action="store_true")
    parser.add_argument("--skip-b", action="store_true")
    args = parser.parse_args()
    os.environ.pop("NEURON_EXPLAINER_CACHE", None)
    report: dict[str, Any] = {"cpus": os.cpu_count()}
    if not args.skip_a:
        report["rate_limited"] = rate_limited(args.units, args.rpm)
        print(json.dumps(report["rate_limited"], indent=2), flush=True)
    if not args.skip_b:
        report["coordinator"] = coordinator_cost(args.fake_units, args.fake_workers)
        report["runner_alone"] = runner_alone(args.fake_units)
        print(json.dumps(report["coordinator"], indent=2), flush=True)
        print(json.dumps(report["runner_alone"], indent=2), flush=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"cluster_batch_{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
