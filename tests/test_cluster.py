"""Batch runs on a real local Dask cluster (2 worker processes, 127.0.0.1 only) against the
loopback OpenAI test server: the sockets it opens, the same results as one process, LLM limits
that hold across the cluster, a worker killed mid-run; the run service's bookkeeping alone;
`open_cluster`'s errors and the CLI's options."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("distributed")
import psutil

from neuron_explainer import InvalidInputError, NeuronRecord, UnitId
from neuron_explainer.cluster import open_cluster, worker_cache
from neuron_explainer.cluster.service import RunService
from neuron_explainer.explainers.llm import LLMExplainer
from neuron_explainer.llm.openai import OpenAILLM
from neuron_explainer.plugins import Registry
from neuron_explainer.runs import RunEvent, RunStore, RunSummary, explain_neurons
from neuron_explainer.simulators.chat_logprob import ChatLogprobSimulator
from neuron_explainer.testing import (
    MockExplainer,
    OpenAITestServer,
    OracleResponder,
    ReceivedRequest,
    number_neuron_record,
)

KEY = "sk-test-cluster"
OPTIONS = {"n_top_per_split": 3, "n_random_per_split": 3}
"""1 explanation + 12 simulations = 13 requests a unit."""
PER_UNIT = 13
_TAG = re.compile(r"tag(\d+)x")


def units(n: int, start: int = 0) -> list[UnitId]:
    return [UnitId(model="synthetic", layer=0, index=i) for i in range(start, start + n)]


def tagged_record(unit: UnitId) -> NeuronRecord:
    """The number record of ``unit`` whose every excerpt starts with the token ``tag<i>x``, so
    the server can tell which unit a request is for."""
    record = number_neuron_record(seed=unit.index)
    tag = f" tag{unit.index}x"

    def mark(excerpts: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(r.model_copy(update={"tokens": (tag, *r.tokens[1:])}) for r in excerpts)

    return record.model_copy(
        update={
            "unit": unit,
            "top_records": mark(record.top_records),
            "random_sample": mark(record.random_sample),
        }
    )


def unit_of(request: ReceivedRequest) -> int:
    found = {int(m) for m in _TAG.findall(json.dumps(request.body))}
    assert len(found) == 1, found
    return found.pop()


def per_unit(server: OpenAITestServer) -> Counter[int]:
    """Requests per unit index; -1: requests cut off mid-body (a worker killed as it sent)."""
    return Counter(unit_of(r) if r.body is not None else -1 for r in server.requests)


class Switchable:
    """The oracle, and a hook called with every request first (set per test)."""

    def __init__(self) -> None:
        self.oracle = OracleResponder()
        self.hook: Any = None

    def __call__(self, request: ReceivedRequest) -> Any:
        if self.hook is not None:
            self.hook(request)
        return self.oracle(request)


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAITestServer]:
    with OpenAITestServer(api_key=KEY, responder=Switchable()) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: OpenAITestServer) -> Iterator[Any]:
    """One local cluster for the module (startup is slow on 2 cores); its workers read the test
    server's address and key from their environment (kept across restarts)."""
    env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": KEY, "NEURON_EXPLAINER_CACHE": ""}
    with open_cluster(2, env=env) as started:
        yield started


@pytest.fixture
def fresh(server: OpenAITestServer, monkeypatch: pytest.MonkeyPatch) -> OpenAITestServer:
    server.reset()
    server.latency = 0.0
    responder = server.responder
    assert isinstance(responder, Switchable)
    responder.hook = None
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("NEURON_EXPLAINER_CACHE", raising=False)
    return server


def batch(db: Path, chosen: list[UnitId], **options: Any) -> RunSummary:
    arguments: dict[str, Any] = {
        "records": tagged_record,
        "source_name": "tagged",
        "units": chosen,
        "db": db,
        "explainer": "openai:m",
        "simulator": "openai:m",
        "concurrency": 4,
        "explain_options": OPTIONS,
        "registry": Registry(entry_points=False),
        **options,
    }
    summary = explain_neurons(**arguments)
    assert isinstance(summary, RunSummary)
    return summary


# --- the cluster itself ----------------------------------------------------------------------


def test_every_socket_of_a_local_cluster_listens_on_loopback_only(client: Any) -> None:
    scheduler = client.scheduler_info()
    workers = client.run(os.getpid)
    assert len(workers) == 2
    assert scheduler["address"].startswith("tcp://127.0.0.1:")
    assert all(address.startswith("tcp://127.0.0.1:") for address in workers)
    expected = {os.getpid(): {int(scheduler["address"].rsplit(":", 1)[1])}}
    for address, pid in workers.items():
        expected[pid] = {int(address.rsplit(":", 1)[1])}
    for pid, ports in expected.items():
        sockets = psutil.Process(pid).net_connections(kind="inet")
        listening = [s for s in sockets if s.status == psutil.CONN_LISTEN]
        bound_udp = [s for s in sockets if s.status == psutil.CONN_NONE and s.laddr]
        assert ports <= {s.laddr.port for s in listening}, (pid, listening)
        for sock in listening + bound_udp:
            assert sock.laddr.ip == "127.0.0.1", (pid, sock)  # never 0.0.0.0 or ::


OUTER_TRIM = os.environ.get("MALLOC_TRIM_THRESHOLD_")  # before any cluster started here


def _environ(names: tuple[str, ...]) -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in names}


def test_local_workers_keep_glibcs_own_trim_threshold(client: Any) -> None:
    """Dask's nannies set MALLOC_TRIM_THRESHOLD_=65536 by default, which made a torch shard
    fold 20-27 % slower; ours leave it as it was (and keep Dask's other settings and our env).
    The nannies run in this process, and Dask writes the variable here too."""
    names = ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "OPENAI_API_KEY")
    seen = client.run(_environ, names)
    assert len(seen) == 2
    assert os.environ.get("MALLOC_TRIM_THRESHOLD_") == OUTER_TRIM
    for environ in seen.values():
        assert environ["MALLOC_TRIM_THRESHOLD_"] == OUTER_TRIM
        assert environ["OMP_NUM_THREADS"] == "1"
        assert environ["OPENAI_API_KEY"] == KEY


def _pid() -> int:
    return worker_cache(("tests", "pid"), os.getpid)


def test_worker_cache_keeps_one_value_per_worker_process(client: Any) -> None:
    pids = client.gather([client.submit(_pid, pure=False) for _ in range(8)])
    assert set(pids) <= set(client.run(os.getpid).values())
    made = []
    assert worker_cache(("tests", "here"), lambda: made.append(1) or len(made)) == 1
    assert worker_cache(("tests", "here"), lambda: made.append(1) or len(made)) == 1
    assert made == [1]


def test_open_cluster_refuses_bad_arguments_and_unreachable_schedulers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for bad in (0, -2, True, "nonsense", "tcp://host-without-port", 2.5):
        with pytest.raises(InvalidInputError), open_cluster(bad):  # type: ignore[arg-type]
            pass
    with pytest.raises(InvalidInputError, match=r"cannot reach the Dask scheduler"):  # noqa: SIM117
        with open_cluster("tcp://127.0.0.1:9", timeout=0.5):
            pass
    with pytest.raises(InvalidInputError, match=r"not a scheduler address"):
        batch(tmp_path / "x.sqlite", units(1), cluster="nonsense")
    assert not (tmp_path / "x.sqlite").exists()
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if it were not installed
    with pytest.raises(InvalidInputError, match=r"pip install 'neuron-explainer\[dask\]'"):  # noqa: SIM117
        with open_cluster(2):
            pass


def test_a_component_that_cannot_travel_is_refused_before_anything_runs(
    client: Any, tmp_path: Path
) -> None:
    explainer = MockExplainer("numbers")
    explainer.lock = threading.Lock()  # type: ignore[attr-defined]
    with pytest.raises(InvalidInputError, match=r"the run's components cannot be sent.*lock"):
        batch(tmp_path / "x.sqlite", units(1), explainer=explainer, cluster=client)
    assert not (tmp_path / "x.sqlite").exists()


def test_components_travel_as_their_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from neuron_explainer.cluster.shipping import ship, unship
    from neuron_explainer.llm.usage import Price
    from neuron_explainer.runs._cluster import _registry

    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-driver-env")
    given = OpenAILLM(
        "m", api_key="sk-given", requests_per_minute=90, tokens_per_minute=9000, timeout=7,
        max_retries=1, price=Price(prompt=1, completion=2), context_window=512,
    )  # fmt: skip
    from_env = OpenAILLM("m", max_concurrency=3)
    data = ship((given, LLMExplainer(from_env)), what="the LLMs")
    assert b"sk-driver-env" not in data  # a key from the environment stays behind
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:10/v1")  # the worker's differs
    copy, explainer = unship(data)
    assert copy is not given and isinstance(copy, OpenAILLM)
    assert copy._key() == "sk-given" and copy.base_url == "http://127.0.0.1:9/v1"
    assert copy.limiter.requests is not None and copy.limiter.requests.rate_per_minute == 90
    assert copy.limiter.tokens is not None and copy.limiter.tokens.rate_per_minute == 9000
    assert (copy.timeout, copy.max_retries, copy.context_window) == (7.0, 1, 512)
    assert copy.price == Price(prompt=1, completion=2)
    moved = explainer.llm
    assert moved.base_url == "http://127.0.0.1:9/v1" and moved.max_concurrency == 3
    assert moved._key() == "sk-driver-env"  # read where it runs
    registry = unship(ship(Registry(entry_points=False), what="r", reducers={Registry: _registry}))
    assert isinstance(registry, Registry) and registry.explainer("token-table") is not None

    pytest.importorskip("transformers")
    from test_hf_provider import build_model_dir

    from neuron_explainer.llm.hf import HFLLM

    folder = build_model_dir(tmp_path_factory.mktemp("tiny-llama"), "llama")
    hf = HFLLM(folder, device="cpu", dtype="float32", max_new_tokens=8, seed=3, top_k=5)
    rebuilt = unship(ship(hf, what="the hf model"))
    assert isinstance(rebuilt, HFLLM) and rebuilt.hf_model is not hf.hf_model  # loaded anew
    assert (rebuilt.model, rebuilt.max_new_tokens, rebuilt.seed, rebuilt.top_k) == (
        str(folder), 8, 3, 5,
    )  # fmt: skip
    assert rebuilt.capabilities == hf.capabilities


# --- the run service on its own -------------------------------------------------------------


def test_the_run_service_hands_slots_over_frees_a_lost_workers_and_delivers_once() -> None:
    async def scenario() -> None:
        service = RunService()
        service._open("r", {"components": b"abc"})
        service._pool("r", "llm0", 120.0, None, 1)
        assert service._blob("r", "components") == b"abc"
        assert await service._slot("r", "llm0", "a1", "worker-a")
        waiting = asyncio.ensure_future(service._slot("r", "llm0", "b1", "worker-b"))
        await asyncio.sleep(0)
        assert not waiting.done()  # one slot: b waits for a
        service.remove_worker(None, "worker-a")  # a dies: its slot goes to b
        assert await waiting
        assert service._stats("r")["llm0"]["held"] == 1
        # 120 a minute = 2 a second, burst 2: the third request waits half a second
        assert [service._permit("r", "llm0", 0.0) for _ in range(2)] == [0.0, 0.0]
        assert service._permit("r", "llm0", 0.0) == pytest.approx(0.5, abs=0.05)
        assert service._deliver("r", "unit-1", b"outcome")
        assert not service._deliver("r", "unit-1", b"again")  # a task run again: dropped
        assert service._delivered("r", "unit-1")
        assert service._take("r", "unit-1") == b"outcome" and service._take("r", "u") is None
        assert service._delivered("r", "unit-1")  # still known after it was taken
        stats = service._close("r")
        assert stats["llm0"]["permits"] == 3 and stats["llm0"]["slot_waits"] == 1
        assert not service._delivered("r", "unit-1") and service._permit("r", "x", 1.0) == 0.0

    asyncio.run(scenario())


# --- batches on the cluster ------------------------------------------------------------------


def test_a_batch_on_the_cluster_gives_what_one_process_gives(
    client: Any, fresh: OpenAITestServer, tmp_path: Path
) -> None:
    chosen = units(6)
    events: list[RunEvent] = []
    on_cluster = batch(tmp_path / "cluster.sqlite", chosen, cluster=client, progress=events.append)
    assert (on_cluster.done, on_cluster.failed, on_cluster.total) == (6, 0, 6)
    assert on_cluster.usage.calls == fresh.request_count == 6 * PER_UNIT
    assert per_unit(fresh) == {u.index: PER_UNIT for u in chosen}
    assert sorted(e.completed for e in events) == list(range(1, 7))
    assert {e.kind for e in events} == {"done"} and all(e.total == 6 for e in events)

    fresh.reset()
    alone = batch(tmp_path / "alone.sqlite", chosen)
    assert alone.usage == on_cluster.usage and alone.simulation == on_cluster.simulation
    with RunStore(tmp_path / "cluster.sqlite") as a, RunStore(tmp_path / "alone.sqlite") as b:
        assert a.meta()["config"] == b.meta()["config"]
        assert a.spent() == b.spent()
        mine, theirs = list(a.results()), list(b.results())
        assert [r.unit for r in mine] == [r.unit for r in theirs] == chosen
        for x, y in zip(mine, theirs, strict=True):
            assert x.explanation.text == y.explanation.text == "numbers"
            assert x.score == y.score and x.score is not None and x.score > 0.5
            assert x.scored == y.scored
    again = batch(tmp_path / "cluster.sqlite", chosen, cluster=client)  # resumes: nothing left
    assert (again.done, again.already_done) == (0, 6)


@pytest.mark.slow  # each worker imports transformers and loads the model: ~30 s on 2 cores
def test_hf_models_are_loaded_by_each_worker_and_explain_as_here(
    client: Any, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    pytest.importorskip("transformers")
    from test_hf_provider import build_model_dir

    from neuron_explainer.llm.hf import HFLLM

    folder = build_model_dir(tmp_path_factory.mktemp("tiny-llama"), "llama")
    llm = HFLLM(folder, device="cpu", max_new_tokens=8)  # travels as its path and options
    components = {"explainer": LLMExplainer(llm), "simulator": ChatLogprobSimulator(llm)}
    on_cluster = batch(tmp_path / "cluster.sqlite", units(2), cluster=client, **components)
    alone = batch(tmp_path / "alone.sqlite", units(2), **components)
    assert on_cluster.usage.calls == alone.usage.calls > 0
    assert (on_cluster.done, on_cluster.failed) == (alone.done, alone.failed)
    with RunStore(tmp_path / "cluster.sqlite") as a, RunStore(tmp_path / "alone.sqlite") as b:
        assert a.meta()["config"] == b.meta()["config"]  # described by a worker as here
        assert a.failures() == b.failures()
        assert [r.model_dump(exclude={"created_at"}) for r in a.results()] == [
            r.model_dump(exclude={"created_at"}) for r in b.results()
        ]


def _llm(server: OpenAITestServer, **limits: Any) -> tuple[LLMExplainer, ChatLogprobSimulator]:
    llm = OpenAILLM("m", base_url=server.base_url, api_key=KEY, cache=False, **limits)
    return LLMExplainer(llm), ChatLogprobSimulator(llm)


def test_the_rate_limit_holds_across_the_cluster(
    client: Any, fresh: OpenAITestServer, tmp_path: Path
) -> None:
    rate = 1200.0  # a minute: 20 a second, a burst of 20
    explainer, simulator = _llm(fresh, requests_per_minute=rate)
    chosen = units(4)
    summary = batch(
        tmp_path / "run.sqlite",
        chosen,
        explainer=explainer,
        simulator=simulator,
        cluster=client,
    )
    assert summary.done == 4
    times = sorted(r.received_at for r in fresh.requests)
    n, per_second, burst = len(times), rate / 60, rate / 60
    assert n == 4 * PER_UNIT
    # Both workers' requests come out of one bucket: the whole run takes at least as long as
    # the one bucket allows (per-worker buckets would allow it in half the time) ...
    assert times[-1] - times[0] >= 0.95 * (n - burst) / per_second
    # ... and no second holds more than the burst plus a second's worth (+ jitter).
    for i, start in enumerate(times):
        in_window = sum(1 for t in times[i:] if t < start + 1.0)
        assert in_window <= burst + per_second + 3, (i, in_window)


def test_the_concurrency_cap_holds_across_the_cluster(
    client: Any, fresh: OpenAITestServer, tmp_path: Path
) -> None:
    fresh.latency = 0.02  # requests overlap unless something holds them apart
    explainer, simulator = _llm(fresh, max_concurrency=1)
    summary = batch(
        tmp_path / "run.sqlite",
        units(4),
        explainer=explainer,
        simulator=simulator,
        cluster=client,
    )
    assert summary.done == 4
    assert fresh.max_in_flight == 1  # 2 workers, 4 units in flight: one request at a time


def test_a_budget_holds_across_the_cluster(
    client: Any, fresh: OpenAITestServer, tmp_path: Path
) -> None:
    def same(unit: UnitId) -> NeuronRecord:  # one record for every unit: one cost a unit
        return tagged_record(UnitId(model="synthetic", layer=0, index=0)).model_copy(
            update={"unit": unit}
        )

    priced = {"records": same, "explainer": "openai:gpt-4o-mini", "simulator": "openai:gpt-4o-mini"}
    one = batch(tmp_path / "one.sqlite", units(1), cluster=client, **priced)
    cost = one.usage.cost_usd
    assert one.done == 1 and cost > 0
    db = tmp_path / "run.sqlite"
    budget = 2.5 * cost
    stopped = batch(db, units(6), cluster=client, budget_usd=budget, **priced)
    assert stopped.stopped_reason == "budget"
    assert stopped.done == 2 and stopped.pending == 4 and stopped.failed == 0
    assert stopped.usage.cost_usd <= budget and stopped.spent_usd <= budget
    resumed = batch(db, units(6), cluster=client, budget_usd=10 * cost, **priced)
    assert (resumed.done, resumed.already_done, resumed.stopped_reason) == (4, 2, None)


def test_a_worker_killed_mid_run_loses_no_unit_and_spends_no_finished_one_twice(
    client: Any, fresh: OpenAITestServer, tmp_path: Path
) -> None:
    fresh.latency = 0.01
    pids = client.run(os.getpid)
    killed: dict[str, Any] = {}
    lock = threading.Lock()

    def kill_on_the_40th(request: ReceivedRequest) -> None:
        with lock:
            if killed or fresh.request_count < 40:
                return
            unit = unit_of(request)  # in flight: its task is running now
            for address, keys in client.processing().items():
                if address in pids and any(str(k).endswith(f"-I{unit}") for k in keys):
                    killed.update(unit=unit, address=address)
                    os.kill(pids[address], signal.SIGKILL)
                    return

    responder = fresh.responder
    assert isinstance(responder, Switchable)
    responder.hook = kill_on_the_40th
    db = tmp_path / "run.sqlite"
    chosen = units(10)
    summary = batch(db, chosen, cluster=client, concurrency=2)
    assert killed, "no worker was killed"
    assert (summary.done, summary.failed, summary.pending) == (10, 0, 0)
    counts = per_unit(fresh)
    cut_off = counts.pop(-1, 0)  # the killed worker's requests it was still sending
    # The unit in flight on the killed worker ran again from the start; every other unit was
    # sent exactly once (none finished before the kill was redone).
    assert counts[killed["unit"]] > PER_UNIT
    assert {u: c for u, c in counts.items() if u != killed["unit"]} == {
        u.index: PER_UNIT for u in chosen if u.index != killed["unit"]
    }
    spent_before_the_kill = counts[killed["unit"]] - PER_UNIT + cut_off
    assert summary.usage.calls == fresh.request_count - spent_before_the_kill
    with RunStore(db) as store:
        assert store.counts() == {"pending": 0, "done": 10, "failed": 0}
        assert [r.unit for r in store.results()] == chosen  # each unit once, none lost
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed one


# --- the command line ------------------------------------------------------------------------


def test_the_cli_runs_on_a_cluster_and_refuses_two_clusters(client: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from neuron_explainer.cli import app

    records = tmp_path / "records.jsonl"
    records.write_text("".join(tagged_record(u).model_dump_json() + "\n" for u in units(4)))

    def run(db: Path, *more: str) -> Any:
        argv = ["run", "--records", str(records), "--db", str(db), *more, "--quiet"]
        return CliRunner().invoke(app, argv)

    address = client.scheduler.address
    on_cluster = run(tmp_path / "cluster.sqlite", "--cluster", address)
    alone = run(tmp_path / "alone.sqlite")
    assert on_cluster.exit_code == alone.exit_code == 0, on_cluster.output
    with RunStore(tmp_path / "cluster.sqlite") as a, RunStore(tmp_path / "alone.sqlite") as b:
        assert a.counts() == b.counts() == {"pending": 0, "done": 4, "failed": 0}
        assert [r.model_dump(exclude={"created_at"}) for r in a.results()] == [
            r.model_dump(exclude={"created_at"}) for r in b.results()
        ]
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    local = run(tmp_path / "local.sqlite", "--workers", "1")  # started and stopped for the run
    assert local.exit_code == 0, local.output
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before
    with RunStore(tmp_path / "local.sqlite") as c, RunStore(tmp_path / "alone.sqlite") as b:
        assert [r.explanation for r in c.results()] == [r.explanation for r in b.results()]
    both = run(tmp_path / "x.sqlite", "--cluster", address, "--workers", "2")
    assert both.exit_code == 2 and "not both" in both.output
    assert run(tmp_path / "x.sqlite", "--workers", "0").exit_code == 2
    assert not (tmp_path / "x.sqlite").exists()
