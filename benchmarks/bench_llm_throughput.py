"""LLM pipeline throughput: neurons explained and scored per minute against our own
OpenAI-protocol server with a fixed injected latency, as a ratio to the theoretical maximum of the
configured concurrency.

Every neuron runs the whole pipeline concurrently with the others (`aexplain_neuron` under one
`asyncio.gather`), sharing one `OpenAILLM` whose ``max_concurrency`` bounds the requests in flight.
With a latency of ``L`` seconds per request and ``C`` requests in flight at most, no client can
answer more than ``C / L`` requests per second; a neuron needs ``R`` requests (1 explanation +
one per simulated excerpt, counted from the server's log), so the theoretical maximum is
``60 * C / (L * R)`` neurons per minute. Target (issue 5): measured / maximum >= 0.9.

Run:  python benchmarks/bench_llm_throughput.py [--neurons 200] [--concurrency 16] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import time
from typing import Any

from neuron_explainer import aexplain_neuron
from neuron_explainer.explainers.llm import LLMExplainer
from neuron_explainer.llm.openai import OpenAILLM
from neuron_explainer.simulators.chat_logprob import ChatLogprobSimulator
from neuron_explainer.testing import OpenAITestServer, OracleResponder, number_neuron_record

CLIENT: dict[str, float] = {"cpu_s": 0.0, "gc_s": 0.0}
"""The client's CPU time during the run, and the part of it Python's garbage collector took."""


def _time_gc() -> None:
    started: list[float] = []

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            CLIENT["gc_s"] += time.perf_counter() - started[0]

    gc.callbacks.append(callback)


async def run(neurons: int, concurrency: int, base_url: str, per_request: int = 1) -> float:
    llm = OpenAILLM(
        "bench-model", base_url=base_url, api_key="sk-bench", max_concurrency=concurrency
    )
    explainer = LLMExplainer(llm)
    simulator = ChatLogprobSimulator(llm, excerpts_per_request=per_request)
    records = [number_neuron_record(seed=i) for i in range(neurons)]
    start, cpu = time.perf_counter(), time.process_time()
    results = await asyncio.gather(
        *(aexplain_neuron(r, explainer=explainer, simulator=simulator) for r in records)
    )
    elapsed = time.perf_counter() - start
    CLIENT["cpu_s"] = time.process_time() - cpu
    await llm.aclose()
    assert all(r.score is not None and r.score > 0.9 for r in results)
    return elapsed


def serve(latency: float, pipe: Any) -> None:
    """The server in its own process, so its CPU time does not compete with the client's GIL."""
    with OpenAITestServer(latency=latency, responder=OracleResponder()) as server:
        pipe.send(server.base_url)
        pipe.recv()  # wait until the client is done
        pipe.send(server.request_count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument(
        "--excerpts-per-request", type=int, default=1, help="excerpts the simulator sends at once"
    )
    args = parser.parse_args()
    os.environ.pop("NEURON_EXPLAINER_CACHE", None)
    here, there = multiprocessing.Pipe()
    process = multiprocessing.Process(target=serve, args=(args.latency, there))
    process.start()
    try:
        _time_gc()
        elapsed = asyncio.run(
            run(args.neurons, args.concurrency, here.recv(), args.excerpts_per_request)
        )
        here.send("done")
        requests = here.recv()
    finally:
        process.join(timeout=30)
    per_neuron = requests / args.neurons
    measured = args.neurons / elapsed * 60
    maximum = 60 * args.concurrency / (args.latency * per_neuron)
    print(f"neurons {args.neurons}, requests {requests} ({per_neuron:.1f} per neuron)")
    print(f"concurrency {args.concurrency}, latency {args.latency * 1e3:.0f} ms")
    print(f"measured  {measured:8.1f} neurons/min ({elapsed:.1f} s)")
    print(f"maximum   {maximum:8.1f} neurons/min")
    print(f"ratio     {measured / maximum:.3f} (target >= 0.9)")
    print(
        f"client CPU {CLIENT['cpu_s'] / requests * 1e3:.2f} ms per request "
        f"(garbage collector {CLIENT['gc_s'] / requests * 1e3:.2f} ms); one event loop "
        f"can start at most {1e3 / (CLIENT['cpu_s'] / requests * 1e3):.0f} requests/s, the "
        f"concurrency allows {args.concurrency / args.latency:.0f}"
    )


if __name__ == "__main__":
    main()
