"""Batch runs: index specs, a run over a collection, LLM runs over HTTP, failures, kill and
resume, the budget, dry runs, exports and re-scoring."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from _batch_worker import LLM_OPTIONS, MARK, unit_record, units
from gpt2_tokenizer import write_gpt2_tokenizer

from neuron_explainer import (
    ExplanationResult,
    InvalidInputError,
    SequenceSimulation,
    Simulator,
    UnitId,
    UsageError,
)
from neuron_explainer.formats import read_openai_explanations
from neuron_explainer.plugins import Registry
from neuron_explainer.results import Explanation
from neuron_explainer.runs import (
    RunEstimate,
    RunEvent,
    RunStore,
    RunSummary,
    aexplain_neurons,
    explain_neurons,
    parse_indices,
    rescore,
)
from neuron_explainer.simulators.json_output import JSONSimulator
from neuron_explainer.testing import MockSimulator, OpenAITestServer, OracleResponder

KEY = "sk-test-batch"
WORDS = (
    "the river city 1999 café report 42 green people shipped years of bridge under night "
    "market Paris quietly seven engines broke while a dog barked at 3 blue stars"
).split()


# --- parse_indices -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "limit", "expected"),
    [
        ("0-3", None, [0, 1, 2, 3]),
        ("0,5,9", 10, [0, 5, 9]),
        ("0-3,7,10-11", 12, [0, 1, 2, 3, 7, 10, 11]),
        (" 3 - 4 , 1 ", None, [1, 3, 4]),
        ("5,1-2,2,5", None, [1, 2, 5]),
        ("7", 8, [7]),
        ([3, 1, 3], 4, [1, 3]),
        ((0,), 1, [0]),
        (None, 3, [0, 1, 2]),
    ],
)
def test_parse_indices(spec: Any, limit: int | None, expected: list[int]) -> None:
    assert parse_indices(spec, limit=limit) == expected


@pytest.mark.parametrize(
    ("spec", "limit", "message"),
    [
        ("", 4, r"cannot read neurons ''.*0\.\.3"),
        ("1,,2", 4, "cannot read neurons"),
        ("a-3", 4, r"cannot read neurons 'a-3' at 'a-3'"),
        ("-1", 4, "cannot read neurons"),
        ("3-1", None, "runs backwards"),
        ("2-4", 4, r"neuron 4 is out of range: valid neurons are 0\.\.3"),
        ([4], 4, r"neuron 4 is out of range: valid neurons are 0\.\.3"),
        ([-1], 4, "neuron -1 is negative"),
        ([1.0], 4, "not an integer"),
        ([True], 4, "not an integer"),
        ([], 4, "no neurons given"),
        (None, None, "give the neurons"),
        (None, 0, "no neuron to choose"),
    ],
)
def test_parse_indices_errors(spec: Any, limit: int | None, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_indices(spec, limit=limit, what="neuron")


def test_parse_indices_names_what_it_reads() -> None:
    with pytest.raises(
        InvalidInputError, match=r"layer 12 is out of range: valid layers are 0\.\.11"
    ):
        parse_indices("10-12", limit=12, what="layer")


# --- a run over a collection, offline components -------------------------------------------


def texts(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) for _ in range(n)]


COLLECT: dict[str, Any] = {
    "device": "cpu",
    "window_length": 12,
    "batch_size": 32,
    "top_k": 8,
    "n_random": 6,
    "quantile_levels": (0.5,),
    "n_per_quantile": 2,
    "quantile_warmup": 40,
    "seed": 1,
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random GPT-2 and GPT-2's tokenizer saved in one folder."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder = write_gpt2_tokenizer(tmp_path_factory.mktemp("tiny-gpt2"))
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64)
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def collected(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run over a collection made by the batch itself (model + corpus): the db's folder."""
    folder = tmp_path_factory.mktemp("collected-run")
    summary = explain_neurons(
        model=model_dir,
        corpus=texts(),
        layers="0-1",
        neurons="0-5",
        db=folder / "run.sqlite",
        collect_options=COLLECT,
    )
    assert isinstance(summary, RunSummary)
    assert summary.collection == str((folder / "run.collection").resolve())
    return folder


def test_a_batch_over_a_collection_runs_every_unit(collected: Path) -> None:
    assert list(collected.rglob("*.lock")) == []  # neither the run nor the collection left one
    with RunStore(collected / "run.sqlite") as store:
        statuses = store.units()
        assert [(s.unit.layer, s.unit.index) for s in statuses] == [
            (layer, i) for layer in (0, 1) for i in range(6)
        ]
        assert all(s.status in ("done", "failed") for s in statuses)
        results = list(store.results())
        assert results, "no unit could be explained"
        assert [r.unit for r in results] == [s.unit for s in statuses if s.status == "done"]
        for result in results:
            assert result.explainer.name == result.simulator.name == "token-table"
            assert result.provenance.hook_point is not None
        for unit, reason in store.failures():
            assert reason.startswith(("ExplanationError: ", "SimulationError: ")), (unit, reason)
        meta = store.meta()
        assert meta["kind"] == "explain"
        assert meta["config"]["source"]["kind"] == "collection"
        assert meta["source_path"] == str((collected / "run.collection").resolve())
        summary = store.summary()
        assert summary["done"] == len(results) and summary["units"] == 12


def test_the_same_call_again_does_nothing_and_more_units_extend_the_run(
    collected: Path, model_dir: Path
) -> None:
    db = collected / "run.sqlite"
    again = explain_neurons(collected / "run.collection", layers="0-1", neurons="0-5", db=db)
    assert isinstance(again, RunSummary)
    assert (again.done, again.failed, again.total) == (0, 0, 12)
    assert again.skipped == again.already_done + again.pending == 12 and again.failed_before == 0
    # Positionally named model + corpus (the CLI's way): the collection is found finished.
    more = explain_neurons(
        model_dir, corpus=texts(), layers=[1], neurons=[6, 7], db=db, collect_options=COLLECT
    )
    assert isinstance(more, RunSummary) and more.total == 2 and more.done + more.failed == 2
    with RunStore(db) as store:
        assert len(store.units()) == 14


def test_a_run_refuses_another_config_on_the_same_db(collected: Path, tmp_path: Path) -> None:
    db = collected / "run.sqlite"
    source = collected / "run.collection"
    before = (db.stat().st_size, RunStore(db).counts())
    with pytest.raises(InvalidInputError, match=r"another configuration.*simulator"):
        explain_neurons(source, db=db, simulator=MockSimulator.from_keywords(["a"]))
    with pytest.raises(InvalidInputError, match=r"another configuration.*options"):
        explain_neurons(source, db=db, explain_options={"calibration": "none"})
    with pytest.raises(InvalidInputError, match=r"another configuration.*source"):
        explain_neurons(records={units(1)[0]: unit_record(units(1)[0])}, db=db)
    with RunStore(db) as store:
        assert store.counts() == before[1]
    with pytest.raises(InvalidInputError, match="unknown explain_options"):
        explain_neurons(source, db=tmp_path / "x.sqlite", explain_options={"budget_usd": 1})
    with pytest.raises(InvalidInputError, match=r"neuron 128 is out of range"):
        explain_neurons(source, db=tmp_path / "x.sqlite", neurons="120-128")
    with pytest.raises(InvalidInputError, match=r"layer 2 was not collected"):
        explain_neurons(source, db=tmp_path / "x.sqlite", layers=[2])
    assert not (tmp_path / "x.sqlite").exists()


def test_rescore_a_collection_run_with_another_simulator(collected: Path) -> None:
    db = collected / "run.sqlite"
    summary = rescore(db, MockSimulator.from_keywords(), out_db=collected / "mock.sqlite")
    with RunStore(db) as old, RunStore(collected / "mock.sqlite") as new:
        assert summary.done == old.counts()["done"] == new.counts()["done"]
        assert new.meta()["kind"] == "rescore"
        assert new.meta()["rescored_from"] == str(db.resolve())
        for before, after in zip(old.results(), new.results(), strict=True):
            assert after.unit == before.unit
            assert after.explanation == before.explanation  # never explained again
            assert after.simulator.name == "mock"
            assert after.split_plan == before.split_plan
            assert [s.record for s in after.scored.sequences] == [
                s.record for s in before.scored.sequences
            ]
    again = rescore(db, MockSimulator.from_keywords(), out_db=collected / "mock.sqlite")
    assert again.done == 0 and again.already_done == summary.done


# --- LLM components over HTTP --------------------------------------------------------------


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAITestServer]:
    with OpenAITestServer(api_key=KEY, responder=OracleResponder()) as running:
        monkeypatch.setenv("OPENAI_BASE_URL", running.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.delenv("NEURON_EXPLAINER_CACHE", raising=False)
        yield running


def llm_run(db: Path, chosen: Sequence[UnitId], **options: Any) -> RunSummary:
    arguments: dict[str, Any] = {
        "records": unit_record,
        "source_name": "numbers",
        "units": chosen,
        "db": db,
        "explainer": "openai:m",
        "simulator": "openai:m",
        "concurrency": 4,
        "explain_options": LLM_OPTIONS,
        "registry": Registry(entry_points=False),
        **options,
    }
    summary = explain_neurons(**arguments)
    assert isinstance(summary, RunSummary)
    return summary


def test_an_llm_batch_over_http(server: OpenAITestServer, tmp_path: Path) -> None:
    events: list[RunEvent] = []
    summary = llm_run(tmp_path / "run.sqlite", units(6), progress=events.append)
    assert (summary.done, summary.failed, summary.skipped) == (6, 0, 0)
    assert summary.usage.calls == server.request_count == 6 * 13
    assert sorted(e.completed for e in events) == list(range(1, 7))
    assert {e.kind for e in events} == {"done"} and all(e.total == 6 for e in events)
    with RunStore(tmp_path / "run.sqlite") as store:
        results = list(store.results())
        assert [r.unit for r in results] == units(6)
        assert all(r.explanation.text == "numbers" and (r.score or 0) > 0.9 for r in results)
        assert sum(r.usage.calls for r in results) == server.request_count
        spent = store.spent()
        assert spent.calls == server.request_count
        assert spent.cost_usd == pytest.approx(summary.usage.cost_usd)
        assert KEY.encode() not in (tmp_path / "run.sqlite").read_bytes()


def garbage_for_marked(oracle: OracleResponder) -> Any:
    """A responder that answers the simulations of `MARK`-ed records with a refusal (so those
    units fail with a SimulationError) and everything else with ``oracle``."""

    def respond(request: Any) -> Any:
        prompt = json.dumps(request.body)
        if json.dumps(MARK)[1:-1] in prompt and "Explanation of neuron behavior" not in prompt:
            return "I'm sorry, but I can't help with that."
        return oracle(request)

    return respond


def test_failed_units_are_recorded_and_retried_on_demand(
    server: OpenAITestServer, tmp_path: Path
) -> None:
    oracle = OracleResponder()
    broken = {UnitId(model="synthetic-numbers", layer=0, index=i) for i in (1, 4)}

    def records(unit: UnitId) -> Any:
        return unit_record(unit, marked=unit in broken)

    server.responder = garbage_for_marked(oracle)
    db = tmp_path / "run.sqlite"
    first = llm_run(db, units(6), records=records)
    assert (first.done, first.failed, first.skipped) == (4, 2, 0)
    assert (first.failed_now, first.failed_before) == (2, 0)
    assert [(f.unit, f.in_this_call) for f in first.failures] == [
        (u, True) for u in sorted(broken, key=lambda u: u.index)
    ]
    with RunStore(db) as store:
        failures = store.failures()
        assert {u for u, _ in failures} == broken
        assert all(r.startswith("SimulationError: ") and "usable" in r for _, r in failures)
        assert {s.unit for s in store.units("failed")} == broken
        done_calls = sum(r.usage.calls for r in store.results())
        assert done_calls < store.spent().calls <= server.request_count  # failures' calls too
    again = llm_run(db, units(6), records=records)
    # The earlier failures stay failed (not "skipped") until a call retries them.
    assert (again.done, again.failed, again.skipped, again.already_done) == (0, 2, 4, 4)
    assert (again.failed_now, again.failed_before, again.pending) == (0, 2, 0)
    assert [f.reason for f in again.failures] == [f.reason for f in first.failures]
    assert not any(f.in_this_call for f in again.failures)
    with pytest.warns(DeprecationWarning, match="failed_before"):
        assert again.not_retried == 2
    server.responder = oracle
    retried = llm_run(db, units(6), records=records, retry_failed=True)
    assert (retried.done, retried.failed, retried.already_done) == (2, 0, 4)
    assert retried.failures == ()
    with RunStore(db) as store:
        assert store.counts() == {"pending": 0, "done": 6, "failed": 0}


class Exploding(Simulator):
    """Simulates numbers, but has a bug on excerpts that hold `MARK`."""

    name = "exploding"

    async def asimulate(
        self, explanation: Explanation, tokens: Sequence[str]
    ) -> SequenceSimulation:
        if MARK in tokens:
            raise TypeError("a bug in the simulator")
        values = tuple(5.0 if t.strip().isdigit() else 0.0 for t in tokens)
        return SequenceSimulation(tokens=tuple(tokens), expected_activations=values)


def test_a_programming_error_stops_the_run_and_propagates(tmp_path: Path) -> None:
    chosen = units(4)
    db = tmp_path / "run.sqlite"
    with pytest.raises(TypeError, match="a bug"):
        explain_neurons(
            records=lambda u: unit_record(u, marked=u.index == 2),
            units=chosen,
            db=db,
            simulator=Exploding(),
            concurrency=1,
        )
    with RunStore(db) as store:
        assert [s.status for s in store.units()] == ["done", "done", "pending", "pending"]
        assert store.failures() == []


def test_a_killed_run_resumes_without_spending_again(
    server: OpenAITestServer, tmp_path: Path
) -> None:
    server.latency = 0.05
    # Requests per unit, from a reference run of one unit.
    reference = llm_run(tmp_path / "reference.sqlite", units(1))
    per_unit = server.request_count
    assert reference.usage.calls == per_unit == 13

    n_units = 30
    db = tmp_path / "run.sqlite"
    worker = Path(__file__).with_name("_batch_worker.py")
    log = tmp_path / "worker.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, str(worker), str(db), str(n_units), "2"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": KEY},
        )
    deadline = time.monotonic() + 120
    try:
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the worker finished no unit"
            if db.exists() and count_done(db) >= 2:
                break
            time.sleep(0.01)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    with RunStore(db) as store:
        done_before = {r.unit: r.model_dump_json() for r in store.results()}
        assert store.counts()["failed"] == 0
    assert 2 <= len(done_before) < n_units, "the worker was not killed midway"
    sent_before = server.request_count

    resumed = llm_run(db, units(n_units))
    assert resumed.done == n_units - len(done_before)
    assert resumed.already_done == len(done_before)
    # No request re-spent on a finished unit: only the unfinished units' requests were sent.
    assert server.request_count - sent_before == per_unit * resumed.done
    with RunStore(db) as store:
        assert store.counts() == {"pending": 0, "done": n_units, "failed": 0}
        results = list(store.results())
        assert [r.unit for r in results] == units(n_units)  # each unit once, none lost
        for result in results:  # the results finished before the kill are untouched
            if result.unit in done_before:
                assert result.model_dump_json() == done_before[result.unit]


def count_done(db: Path, status: str = "done") -> int:
    """How many units of ``db`` have ``status``, read without writing (0 before the schema)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            row = connection.execute(
                "SELECT COUNT(*) FROM units WHERE status = ?", (status,)
            ).fetchone()
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
    return int(row[0])


def kill_worker_when(
    db: Path, log: Path, n_units: int, marked: str, ready: Callable[[], bool]
) -> None:
    """Run `_batch_worker` on ``db`` (the units ``marked`` fail on a `garbage_for_marked`
    server) and kill it with SIGKILL as soon as ``ready()``."""
    worker = Path(__file__).with_name("_batch_worker.py")
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, str(worker), str(db), str(n_units), "2", marked],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OPENAI_API_KEY": KEY},
        )
    deadline = time.monotonic() + 120
    try:
        while not (db.exists() and ready()):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the worker never got there"
            time.sleep(0.01)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def test_a_failure_stays_failed_after_a_kill_and_a_resume(
    server: OpenAITestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.latency = 0.05
    server.responder = garbage_for_marked(OracleResponder())
    n_units, broken = 30, units(30)[1:3]
    db = tmp_path / "run.sqlite"
    kill_worker_when(
        db,
        tmp_path / "worker.log",
        n_units,
        "1,2",
        lambda: count_done(db, "failed") == 2 and count_done(db) >= 1,
    )
    with RunStore(db) as store:
        before = store.failures()
        done_before = store.counts()["done"]
    assert [unit for unit, _ in before] == broken
    assert done_before < n_units - 2, "the worker was not killed midway"

    resumed = llm_run(db, units(n_units), records=lambda u: unit_record(u, marked=u in broken))
    assert (resumed.done, resumed.failed, resumed.failed_now) == (n_units - 2 - done_before, 2, 0)
    assert (resumed.failed_before, resumed.already_done) == (2, done_before)
    assert resumed.skipped == done_before  # the failures are not among the skipped
    assert resumed.total == resumed.done + resumed.failed + resumed.skipped == n_units
    assert [(f.unit, f.reason, f.in_this_call) for f in resumed.failures] == [
        (unit, reason, False) for unit, reason in before
    ]
    assert all(f.reason.startswith("SimulationError: ") for f in resumed.failures)
    assert list(tmp_path.glob("*.lock")) == []  # the killed worker's, taken over and removed

    from neuron_explainer.cli._summary import print_summary
    from neuron_explainer.report import write_report

    capsys.readouterr()
    assert print_summary(resumed) == 1  # the run is not complete while units are failed
    shown = capsys.readouterr().out
    assert f"{resumed.done} done, 2 failed (0 in this call, 2 before it), " in shown
    for unit, reason in before:
        assert f"failed (before this call): {unit}: {' '.join(reason.split())[:80]}" in shown
    with RunStore(db) as store:
        page = write_report(store.results(), tmp_path / "r.html", failures=store.failures())
    html = page.read_text(encoding="utf-8")
    assert f"{n_units - 2} units explained, 2 failed" in html
    assert html.count("SimulationError: ") == 2


def test_a_budget_stops_the_run_cleanly_and_counts_what_was_spent(
    server: OpenAITestServer, tmp_path: Path
) -> None:
    priced = {"explainer": "openai:gpt-4o", "simulator": "openai:gpt-4o", "concurrency": 1}
    reference = llm_run(tmp_path / "reference.sqlite", units(1), **priced)
    per_unit = reference.usage.cost_usd
    assert per_unit > 0
    budget = 2.5 * per_unit
    db = tmp_path / "run.sqlite"
    first = llm_run(db, units(6), budget_usd=budget, **priced)
    assert first.stopped_reason == "budget"
    assert 1 <= first.done < 6 and first.failed == 0
    assert first.pending == 6 - first.done and first.skipped == first.pending
    with RunStore(db) as store:
        assert store.counts() == {"pending": 6 - first.done, "done": first.done, "failed": 0}
        assert store.spent().cost_usd == pytest.approx(first.spent_usd)
        assert first.spent_usd <= budget
    # The same budget again: what was spent counts, so little or nothing more is done.
    second = llm_run(db, units(6), budget_usd=budget, **priced)
    assert second.stopped_reason == "budget" and second.done == 0 and second.failed == 0
    assert second.spent_usd <= budget
    # A larger budget finishes the run.
    third = llm_run(db, units(6), budget_usd=10 * budget, **priced)
    assert third.stopped_reason is None
    assert third.done == 6 - first.done and third.failed == 0


def test_a_dry_run_estimates_without_sending(server: OpenAITestServer, tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"
    priced = {"explainer": "openai:gpt-4o-mini", "simulator": "openai:gpt-4o-mini"}
    estimate = explain_neurons(
        records=unit_record,
        source_name="numbers",
        units=units(4),
        db=db,
        dry_run=True,
        explain_options=LLM_OPTIONS,
        registry=Registry(entry_points=False),
        **priced,
    )
    assert isinstance(estimate, RunEstimate)
    assert server.request_count == 0 and not db.exists()
    assert estimate.units == 4
    assert estimate.per_neuron["explainer"]["requests"] == 1
    assert estimate.per_neuron["simulator"]["requests"] == 12
    assert estimate.cost_usd > 0 and estimate.notes

    actual = llm_run(db, units(4), **priced)
    assert estimate.requests == server.request_count == actual.usage.calls
    for field in ("prompt_tokens", "completion_tokens", "cost_usd"):
        ratio = getattr(estimate, field) / getattr(actual.usage, field)
        assert 0.5 < ratio < 2.5, (field, ratio)
    again = explain_neurons(
        records=unit_record,
        source_name="numbers",
        units=units(5),
        db=db,
        dry_run=True,
        explain_options=LLM_OPTIONS,
        registry=Registry(entry_points=False),
        **priced,
    )
    assert isinstance(again, RunEstimate) and again.units == 1  # the done ones are left out


def test_offline_components_cost_nothing_in_a_dry_run(tmp_path: Path) -> None:
    estimate = explain_neurons(
        records={u: unit_record(u) for u in units(3)}, db=tmp_path / "run.sqlite", dry_run=True
    )
    assert isinstance(estimate, RunEstimate)
    assert (estimate.units, estimate.requests, estimate.cost_usd) == (3, 0, 0.0)


def test_exports_round_trip(server: OpenAITestServer, tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"
    llm_run(db, units(3))
    with RunStore(db) as store:
        results = list(store.results())
        assert store.export_jsonl(tmp_path / "results.jsonl") == 3
        assert store.export_openai(tmp_path / "openai.jsonl") == 3
    lines = (tmp_path / "results.jsonl").read_text(encoding="utf-8").splitlines()
    assert [ExplanationResult.model_validate_json(line) for line in lines] == results
    exported = read_openai_explanations(tmp_path / "openai.jsonl", model="synthetic-numbers")
    assert [e.unit for e in exported] == [r.unit for r in results]
    for entry, result in zip(exported, results, strict=True):
        (scored,) = entry.scored_explanations
        assert scored is not None and scored.explanation == result.explanation.text
        assert scored.score == pytest.approx(result.score)


def test_rescore_over_http_never_explains_again(server: OpenAITestServer, tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"
    llm_run(db, units(3))
    before = server.request_count
    registry = Registry(entry_points=False)
    json_simulator = JSONSimulator(registry.llm("openai:m"))
    with pytest.raises(InvalidInputError, match="records="):
        rescore(db, json_simulator, registry=registry)
    summary = rescore(db, json_simulator, records=unit_record, registry=registry)
    assert summary.db == str(tmp_path / "run.rescore-openai-m.sqlite")
    assert summary.done == 3
    sent = server.requests[before:]
    assert len(sent) == 3 * 12  # simulations only
    assert not any("Explanation of neuron behavior" in json.dumps(r.body) for r in sent)
    with RunStore(db) as old, RunStore(summary.db) as new:
        for a, b in zip(old.results(), new.results(), strict=True):
            assert b.explanation == a.explanation
            assert b.simulator.name == "llm-json" and a.simulator.name == "llm-chat-logprob"
            assert b.scored.split == a.scored.split
            assert (b.score or 0) > 0.9
            assert b.usage.calls == 12


def test_the_run_lock_keeps_a_second_run_out(tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"
    with RunStore(db, create=True) as holder:
        holder.lock()
        with pytest.raises(UsageError, match="another run"):
            explain_neurons(records={u: unit_record(u) for u in units(2)}, db=db)
    summary = explain_neurons(records={u: unit_record(u) for u in units(2)}, db=db)
    assert isinstance(summary, RunSummary) and summary.done == 2


def test_bad_sources_and_stores(tmp_path: Path) -> None:
    one = units(1)[0]
    summary = explain_neurons(
        records=lambda u: unit_record(units(2)[1]), units=[one], db=tmp_path / "a"
    )
    assert isinstance(summary, RunSummary) and summary.failed == 1
    with RunStore(tmp_path / "a") as store:
        ((unit, reason),) = store.failures()
        assert unit == one and reason.startswith("InvalidRecordError: ")
        assert "is the record of" in reason
    with pytest.raises(InvalidInputError, match="exactly one source"):
        explain_neurons(db=tmp_path / "b")
    with pytest.raises(InvalidInputError, match="need units="):
        explain_neurons(records=unit_record, db=tmp_path / "b")
    with pytest.raises(InvalidInputError, match="no run database"):
        RunStore(tmp_path / "missing.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(InvalidInputError, match="not a run database"):
        RunStore(tmp_path / "junk.sqlite")


def test_the_async_twin_runs_in_a_loop(tmp_path: Path) -> None:
    async def main() -> Any:
        return await aexplain_neurons(
            records={u: unit_record(u) for u in units(2)}, db=tmp_path / "run.sqlite"
        )

    summary = asyncio.run(main())
    assert isinstance(summary, RunSummary) and summary.done == 2
    with pytest.raises(UsageError, match="event loop"):
        asyncio.run(sync_inside_a_loop(tmp_path))


async def sync_inside_a_loop(tmp_path: Path) -> None:
    explain_neurons(records={u: unit_record(u) for u in units(2)}, db=tmp_path / "x.sqlite")


def test_a_run_given_the_model_can_probe_new_text(model_dir: Path, collected: Path) -> None:
    from neuron_explainer.runs._sources import open_source

    async def probes() -> tuple[Any, Any]:
        given = await open_source(
            model=model_dir,
            corpus=texts(),
            collection_dir=collected / "run.collection",
            layers="0-1",
            collect_options=COLLECT,
        )
        alone = await open_source(collected / "run.collection")
        return given, alone

    given, alone = asyncio.run(probes())
    unit = given.collection.unit(1, 2)
    probe = given.probe(unit)
    assert probe is not None and alone.probe(unit) is None  # a bare collection has no model
    records = asyncio.run(probe(["the river city", "42 green people shipped"]))
    assert [len(r.tokens) for r in records] == [3, 4]
    # the same activations the collection recorded for a window with the same tokens
    collection = given.collection
    record = collection.neuron_record(1, 2)
    window = record.top_records[0]
    text = "".join(window.tokens)
    (again,) = asyncio.run(probe([text]))
    assert list(again.tokens) == list(window.tokens)  # the text re-tokenizes the same way
    assert again.activations == pytest.approx(window.activations, abs=1e-5)
