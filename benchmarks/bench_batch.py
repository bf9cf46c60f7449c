"""Batch run: 1,000 neurons explained and scored into a run database against our own
OpenAI-protocol server with injected latency and faults, timed against the theoretical minimum.

The server runs in its own process with ``--latency`` seconds per request and a random fault
(HTTP 500, HTTP 429, a dropped connection) on a ``--fault-rate`` share of requests; the client
retries them. `explain_neurons` runs ``--neurons-in-flight`` units at a time over records made
by `number_neuron_record` (no model), with one `OpenAILLM` whose ``max_concurrency`` bounds the
requests in flight. No client can do better than ``requests * latency / concurrency`` seconds
(every request, faulted ones included, waits ``latency`` at the server), so the report is the
wall time against that minimum, and the lost units: every unit must end done or failed with a
reason (with retries, all done).

Run:  python benchmarks/bench_batch.py [--neurons 1000] [--concurrency 32] [--latency 0.1]
          [--fault-rate 0.05] [--neurons-in-flight 16] [--db PATH]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from neuron_explainer import NeuronRecord, UnitId
from neuron_explainer.explainers.llm import LLMExplainer
from neuron_explainer.llm.openai import OpenAILLM
from neuron_explainer.runs import RunStore, RunSummary, explain_neurons
from neuron_explainer.simulators.chat_logprob import ChatLogprobSimulator
from neuron_explainer.testing import OpenAITestServer, OracleResponder, number_neuron_record


def record(unit: UnitId) -> NeuronRecord:
    """Unit ``i``'s record: the number record seeded with ``i``, named after the unit."""
    return number_neuron_record(seed=unit.index).model_copy(update={"unit": unit})


def serve(latency: float, fault_rate: float, pipe: Any) -> None:
    """The server in its own process, so its CPU time does not compete with the client's GIL."""
    with OpenAITestServer(
        latency=latency, fault_rate=fault_rate, seed=1, responder=OracleResponder()
    ) as server:
        pipe.send(server.base_url)
        pipe.recv()  # wait until the client is done
        pipe.send(server.request_count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--neurons-in-flight", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--db", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args()
    os.environ.pop("NEURON_EXPLAINER_CACHE", None)
    folder = None if args.db else tempfile.TemporaryDirectory()
    db = args.db or Path(folder.name) / "bench.sqlite"  # type: ignore[union-attr]
    here, there = multiprocessing.Pipe()
    process = multiprocessing.Process(target=serve, args=(args.latency, args.fault_rate, there))
    process.start()
    try:
        llm = OpenAILLM(
            "bench-model",
            base_url=here.recv(),
            api_key="sk-bench",
            max_concurrency=args.concurrency,
        )
        units = [UnitId(model="synthetic-numbers", layer=0, index=i) for i in range(args.neurons)]
        start = time.perf_counter()
        summary = explain_neurons(
            records=record,
            source_name="bench",
            units=units,
            db=db,
            explainer=LLMExplainer(llm),
            simulator=ChatLogprobSimulator(llm),
            concurrency=args.neurons_in_flight,
        )
        elapsed = time.perf_counter() - start
        here.send("done")
        requests = here.recv()
    finally:
        process.join(timeout=30)
    assert isinstance(summary, RunSummary)
    with RunStore(db) as store:
        counts = store.counts()
        reasons = store.failures()
        scores = [s.score for s in store.units("done")]
        size = db.stat().st_size
    lost = args.neurons - counts["done"] - len(reasons)
    minimum = requests * args.latency / args.concurrency
    answered = summary.usage.calls
    print(f"neurons {args.neurons}: done {counts['done']}, failed {len(reasons)}, lost {lost}")
    print(
        f"requests {requests} at the server ({answered} answered, {requests - answered} faulted "
        f"and retried; {answered / args.neurons:.1f} answered per neuron)"
    )
    print(
        f"concurrency {args.concurrency} requests, {args.neurons_in_flight} neurons in flight, "
        f"latency {args.latency * 1e3:.0f} ms, fault rate {args.fault_rate:.0%}"
    )
    print(f"wall time {elapsed:8.1f} s ({args.neurons / elapsed * 60:.0f} neurons/min)")
    print(f"minimum   {minimum:8.1f} s (requests x latency / concurrency)")
    print(f"ratio     {minimum / elapsed:.3f} of the theoretical maximum throughput")
    print(f"scores    min {min(s or 0 for s in scores):.3f}; database {size / 1e6:.1f} MB")
    for unit, reason in reasons[:5]:
        print(f"  failed {unit}: {reason[:200]}")
    if folder is not None:
        folder.cleanup()


if __name__ == "__main__":
    main()
