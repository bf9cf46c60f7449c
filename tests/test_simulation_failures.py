"""Failure semantics of simulation (issue 15): an excerpt that cannot be simulated is counted,
never scored as zeros; a unit fails only past ``max_failed_fraction``; scores say what they
rest on; every run counts its simulations (attempted, failed by reason, constant, retried,
tokens) into the result, the run database, the CLI summary and the report."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import pytest
from chromium import Chromium, find_chromium

from neuron_explainer import (
    ExplanationResult,
    NeuronRecord,
    SimulationError,
    UnitId,
    explain_neuron,
)
from neuron_explainer.errors import (
    AuthenticationError,
    InvalidResponseError,
    LLMTimeoutError,
)
from neuron_explainer.interfaces import (
    FAILURE_REASONS,
    Simulator,
    failure_of,
    record_retry,
    track_simulations,
)
from neuron_explainer.llm.base import Usage
from neuron_explainer.llm.usage import record_usage
from neuron_explainer.records.splits import split_records
from neuron_explainer.report import write_report
from neuron_explainer.results import (
    RESULT_FORMAT_VERSION,
    ComponentInfo,
    Explanation,
    SequenceSimulation,
    SimulationFailure,
    SimulationStats,
)
from neuron_explainer.runs import RunEvent, RunStore, RunSummary, explain_neurons
from neuron_explainer.scorers.correlation import correlation
from neuron_explainer.testing import number_neuron_record

EXPLANATION = Explanation(text="numbers", explainer=ComponentInfo(name="test"))
PROMPT, COMPLETION = 11, 3


def predict(tokens: Sequence[str]) -> SequenceSimulation:
    """10 on number tokens, 0 elsewhere."""
    values = tuple(10.0 if t.strip().isdigit() else 0.0 for t in tokens)
    return SequenceSimulation(tokens=tuple(tokens), expected_activations=values)


class FlakySimulator(Simulator):
    """Predicts numbers (3 on every token of the excerpts in ``flat``); fails on the excerpts
    in ``fail_on`` after one retry (a `SimulationError` of class ``reason``, or ``error``).
    Every request "costs" `PROMPT` + `COMPLETION` tokens."""

    name = "flaky"

    def __init__(
        self,
        fail_on: Collection[tuple[str, ...]] = (),
        *,
        reason: str | None = "misaligned",
        error: Exception | None = None,
        flat: Collection[tuple[str, ...]] = (),
    ) -> None:
        self.fail_on, self.reason, self.error = set(fail_on), reason, error
        self.flat = set(flat)
        self.asked = 0

    async def asimulate(
        self, explanation: Explanation, tokens: Sequence[str]
    ) -> SequenceSimulation:
        self.asked += 1
        record_usage(Usage(prompt_tokens=PROMPT, completion_tokens=COMPLETION))
        if tuple(tokens) in self.fail_on:
            record_retry(self.reason or "other")
            record_usage(Usage(prompt_tokens=PROMPT, completion_tokens=COMPLETION))
            raise self.error or SimulationError("the lines do not match", reason=self.reason)
        if tuple(tokens) in self.flat:
            return SequenceSimulation(
                tokens=tuple(tokens), expected_activations=(3.0,) * len(tokens)
            )
        return predict(tokens)


class BatchingSimulator(FlakySimulator):
    """Simulates every excerpt in one request: one failing excerpt fails the whole batch."""

    name = "batching"

    async def asimulate_many(
        self, explanation: Explanation, sequences: Sequence[Sequence[str]]
    ) -> list[SequenceSimulation]:
        self.asked += 1
        if any(tuple(s) in self.fail_on for s in sequences):
            raise SimulationError("excerpt 2 of the batch did not parse", reason="unparseable")
        return [predict(s) for s in sequences]


class EachSimulator(FlakySimulator):
    """Says itself which excerpts failed (overrides `asimulate_each`)."""

    async def asimulate_each(
        self, explanation: Explanation, sequences: Sequence[Sequence[str]]
    ) -> list[SequenceSimulation | SimulationFailure]:
        return [
            SimulationFailure(reason="empty", message="no answer")
            if tuple(s) in self.fail_on
            else predict(s)
            for s in sequences
        ]


@pytest.fixture(scope="module")
def record() -> NeuronRecord:
    return number_neuron_record()


def held(record: NeuronRecord) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """The tokens of the calibration and valid excerpts, in split order."""
    splits = split_records(record)
    return [r.tokens for r in splits.calibration.records], [r.tokens for r in splits.valid.records]


# --- the contract: asimulate_each ----------------------------------------------------------


def test_default_asimulate_each_keeps_each_excerpt_apart() -> None:
    excerpts = [("1", " a"), ("bad",), (" b", "2")]
    simulator = FlakySimulator([("bad",)])
    with track_simulations() as meter:
        outcomes = asyncio.run(simulator.asimulate_each(EXPLANATION, excerpts))
    assert outcomes[0] == predict(excerpts[0]) and outcomes[2] == predict(excerpts[2])
    assert outcomes[1] == SimulationFailure(reason="misaligned", message="the lines do not match")
    assert meter.stats.retried == 1 and meter.stats.retry_reasons == {"misaligned": 1}


def test_errors_that_are_not_an_excerpts_failure_propagate() -> None:
    refused = FlakySimulator([("bad",)], error=AuthenticationError("key refused"))
    with pytest.raises(AuthenticationError, match="key refused"):
        asyncio.run(refused.asimulate_each(EXPLANATION, [("1",), ("bad",)]))
    buggy = FlakySimulator([("bad",)], error=TypeError("a bug"))
    with pytest.raises(TypeError, match="a bug"):
        asyncio.run(buggy.asimulate_each(EXPLANATION, [("bad",)]))


def test_a_batching_simulator_falls_back_to_one_excerpt_at_a_time() -> None:
    excerpts = [("1",), ("bad", "x"), ("2", " a")]
    simulator = BatchingSimulator([("bad", "x")])
    with track_simulations() as meter:
        outcomes = asyncio.run(simulator.asimulate_each(EXPLANATION, excerpts))
    assert [type(o).__name__ for o in outcomes] == [
        "SequenceSimulation",
        "SimulationFailure",
        "SequenceSimulation",
    ]
    assert simulator.asked == 1 + 3  # the batch, then each excerpt alone
    # Each excerpt asked again counts as a retry, and the failing one retried once inside.
    assert meter.stats.retry_reasons == {"batch_failed": 3, "misaligned": 1}
    fine = BatchingSimulator()
    assert asyncio.run(fine.asimulate_each(EXPLANATION, excerpts)) == [predict(e) for e in excerpts]
    assert fine.asked == 1  # batched


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (SimulationError("x", reason="misaligned"), "misaligned"),
        (SimulationError("x"), "other"),
        (SimulationError("x", reason="Bad JSON!"), "bad_json"),
        (SimulationError("x", reason="42"), "other"),
        (InvalidResponseError("not JSON"), "invalid_response"),
        (LLMTimeoutError("slow"), "timeout"),
    ],
)
def test_failure_of_classes_each_error(error: Exception, reason: str) -> None:
    assert failure_of(error) == SimulationFailure(reason=reason, message=str(error))


def test_the_builtin_reason_classes_are_labels() -> None:
    assert {"misaligned", "unparseable", "empty", "timeout", "other"} <= set(FAILURE_REASONS)
    for reason in FAILURE_REASONS:
        SimulationFailure(reason=reason)  # validates as a reason class
    with pytest.raises(ValueError, match="pattern"):
        SimulationFailure(reason="Not a label")


def test_a_simulation_error_keeps_its_reason_through_pickle() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(SimulationError("x", reason="empty")))
    assert (type(error), str(error), error.reason) == (SimulationError, "x", "empty")


def test_stats_must_add_up() -> None:
    with pytest.raises(ValueError, match="sum of failure_reasons"):
        SimulationStats(attempted=3, failed=2, failure_reasons={"empty": 1})
    with pytest.raises(ValueError, match="among the attempted"):
        SimulationStats(attempted=1, failed=1, failure_reasons={"empty": 1}, constant=1)
    total = SimulationStats(attempted=2, failed=1, failure_reasons={"empty": 1}) + SimulationStats(
        attempted=3, failed=1, failure_reasons={"timeout": 1}, retried=2, retry_reasons={"x": 2}
    )
    assert total.describe() == (
        "3 of 5 simulated (2 failed: empty 1, timeout 1), 0 constant, 2 retried (x 2), "
        "0 prompt + 0 completion tokens"
    )


# --- scoring: below and above the threshold --------------------------------------------------


def test_below_the_threshold_the_unit_is_scored_on_the_rest(record: NeuronRecord) -> None:
    calibration, valid = held(record)
    failing = [valid[3], calibration[12]]  # 2 of 40: 5 %
    flat = [valid[7], calibration[0], calibration[12]]  # the last one fails
    result = explain_neuron(record, simulator=FlakySimulator(failing, flat=flat))

    scored = result.scored
    assert scored.n_sequences == len(valid) - 1 and scored.n_failed == 1
    assert [(f.split, f.source, f.index, f.failure.reason) for f in scored.failed] == [
        ("calibration", "random", 2, "misaligned"),
        ("valid", "top", 3, "misaligned"),
    ]
    assert [f.record.tokens for f in scored.failed] == [calibration[12], valid[3]]
    assert scored.failed[1].failure.message == "the lines do not match"
    assert valid[3] not in {s.record.tokens for s in scored.sequences}
    assert [r.tokens for r in scored.held_out_records()] == valid
    assert scored.calibration.n_tokens == sum(len(t) for t in calibration) - len(calibration[12])

    # The score rests on the simulated excerpts only: never the failed one as zeros.
    truth = np.concatenate([s.record.activations for s in scored.sequences])
    simulated = np.concatenate([s.simulation.expected_activations for s in scored.sequences])
    assert result.score == pytest.approx(correlation(truth, simulated).value)
    splits = split_records(record)
    failed_truth = splits.valid.top[3].activations
    with_zeros = correlation(
        np.concatenate([truth, failed_truth]), np.concatenate([simulated, [0.0] * len(valid[3])])
    )
    assert result.score != pytest.approx(with_zeros.value)

    stats = result.simulation
    assert stats is not None
    assert (stats.attempted, stats.failed, stats.failure_reasons) == (40, 2, {"misaligned": 2})
    assert stats.constant == 2
    assert (stats.retried, stats.retry_reasons) == (2, {"misaligned": 2})
    assert stats.prompt_tokens == PROMPT * (40 + 2) and stats.completion_tokens == COMPLETION * 42
    assert result.usage.prompt_tokens == stats.prompt_tokens  # the explainer used none

    again = ExplanationResult.model_validate_json(result.model_dump_json())
    assert again == result and again.scored.failed == scored.failed


def test_above_the_threshold_the_unit_fails_with_the_counts(record: NeuronRecord) -> None:
    calibration, valid = held(record)
    failing = [valid[0], valid[5], calibration[1], calibration[15], valid[19]]  # 5 of 40
    with pytest.raises(SimulationError) as failed:
        explain_neuron(record, simulator=FlakySimulator(failing, reason="unparseable"))
    assert str(failed.value) == (
        "simulator 'flaky' could not simulate 5 of 40 excerpts (12%, more than "
        "max_failed_fraction 10%): unparseable 5; first: the lines do not match"
    )
    assert failed.value.reason == "unparseable"

    allowed = explain_neuron(
        record, simulator=FlakySimulator(failing), explain_options={"max_failed_fraction": 0.2}
    )
    assert allowed.scored.n_failed == 3 and allowed.score is not None
    with pytest.raises(SimulationError, match=r"1 of 40 excerpts .*max_failed_fraction 0%"):
        explain_neuron(record, simulator=FlakySimulator(failing[:1]), max_failed_fraction=0.0)


def test_a_split_without_one_simulated_excerpt_fails(record: NeuronRecord) -> None:
    calibration, _ = held(record)
    with pytest.raises(
        SimulationError,
        match=r"could not simulate any of the 20 excerpts of the calibration split: empty 20",
    ):
        explain_neuron(
            record,
            simulator=EachSimulator(calibration),
            explain_options={"max_failed_fraction": 1.0},
        )


def test_an_error_that_is_no_excerpts_failure_stops_the_unit(record: NeuronRecord) -> None:
    _, valid = held(record)
    simulator = FlakySimulator([valid[0]], error=AuthenticationError("key refused"))
    with pytest.raises(AuthenticationError, match="key refused"):
        explain_neuron(record, simulator=simulator)


def test_batching_and_self_reporting_simulators_score_the_same(record: NeuronRecord) -> None:
    _, valid = held(record)
    failing = [valid[2]]
    by_one = explain_neuron(record, simulator=FlakySimulator(failing))
    by_batch = explain_neuron(record, simulator=BatchingSimulator(failing))
    by_each = explain_neuron(record, simulator=EachSimulator(failing))
    assert by_one.score == by_batch.score == by_each.score
    assert by_each.scored.failed[0].failure == SimulationFailure(
        reason="empty", message="no answer"
    )
    assert by_batch.simulation is not None and by_batch.simulation.retry_reasons == {
        "batch_failed": 40,
        "misaligned": 1,
    }


# --- a batch run: the database, the summary, the report -------------------------------------


def unit_records() -> dict[UnitId, NeuronRecord]:
    found = {}
    for i in range(2):
        unit = UnitId(model="synthetic-numbers", layer=0, index=i)
        found[unit] = number_neuron_record(seed=i).model_copy(update={"unit": unit})
    return found


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunSummary, list[RunEvent]]:
    """Unit 0 with one failed excerpt (done), unit 1 with five (failed)."""
    records = unit_records()
    units = list(records)
    failing = [held(records[units[0]])[1][4]]
    calibration, valid = held(records[units[1]])
    failing += [*valid[:3], *calibration[:2]]
    db = tmp_path_factory.mktemp("run") / "run.sqlite"
    events: list[RunEvent] = []
    summary = explain_neurons(
        records=records,
        units=units,
        db=db,
        simulator=FlakySimulator(failing),
        concurrency=1,
        progress=events.append,
    )
    assert isinstance(summary, RunSummary)
    return db, summary, events


def test_a_run_counts_simulations_per_unit_and_in_total(
    run: tuple[Path, RunSummary, list[RunEvent]],
) -> None:
    db, summary, events = run
    assert (summary.done, summary.failed) == (1, 1)
    assert "could not simulate 5 of 40 excerpts" in summary.failures[0].reason
    with RunStore(db) as store:
        statuses = {s.unit.index: s for s in store.units()}
        done = store.result(statuses[0].unit)
        total = store.simulation()
        assert store.summary()["simulation"] == total.model_dump()
        run_id = store._db.execute("SELECT MAX(id) FROM runs").fetchone()[0]
        assert store.simulation(run_id) == total
    assert done is not None and done.simulation == statuses[0].simulation
    assert done.scored.n_failed == 1
    one, two = statuses[0].simulation, statuses[1].simulation
    assert one is not None and two is not None
    assert (one.attempted, one.failed) == (40, 1)
    assert (two.attempted, two.failed, two.failure_reasons) == (40, 5, {"misaligned": 5})
    assert two.prompt_tokens == PROMPT * 45
    assert total == one + two == summary.simulation
    assert [(e.kind, e.simulation) for e in events] == [("done", one), ("failed", two)]


def test_the_cli_summary_prints_the_simulations(
    run: tuple[Path, RunSummary, list[RunEvent]], capsys: pytest.CaptureFixture[str]
) -> None:
    from neuron_explainer.cli._summary import print_summary

    _, summary, _ = run
    assert print_summary(summary) == 1
    out = capsys.readouterr().out
    assert (
        "simulations: 74 of 80 simulated (6 failed: misaligned 6), "
        f"{summary.simulation.constant} constant, 6 retried (misaligned 6), "
        f"{PROMPT * 86} prompt + {COMPLETION * 86} completion tokens"
    ) in out.splitlines()


def test_print_result_says_what_the_score_rests_on(
    record: NeuronRecord, capsys: pytest.CaptureFixture[str]
) -> None:
    from neuron_explainer.cli._support import print_result

    _, valid = held(record)
    print_result(explain_neuron(record, simulator=FlakySimulator([valid[1]])), "corpus")
    lines = capsys.readouterr().out.splitlines()
    assert any(
        line.split() == ["scored", "on:", "19", "excerpts", "(1", "failed)"] for line in lines
    )
    assert any(line.startswith("simulations:") and "39 of 40 simulated" in line for line in lines)
    failed = [line for line in lines if line.startswith("failed (valid top 2):")]
    assert len(failed) == 1 and failed[0].split(":", 1)[1].split() == [
        "misaligned:",
        "the",
        "lines",
        "do",
        "not",
        "match",
    ]


def test_the_report_shows_the_simulations(
    run: tuple[Path, RunSummary, list[RunEvent]], tmp_path: Path
) -> None:
    db, _, _ = run
    with RunStore(db) as store:
        page = write_report(
            store.results(),
            tmp_path / "report.html",
            failures=store.failures(),
            simulation=store.simulation(),
        )
        (result,) = store.results()
    html = page.read_text(encoding="utf-8")
    assert '<dt>Simulations</dt><dd class="num">74 of 80</dd>' in html
    assert '<dt>Failed simulations</dt><dd class="num">6 (misaligned 6)</dd>' in html
    assert '<dt>Simulator retries</dt><dd class="num">6 (misaligned 6)</dd>' in html
    assert f"{(PROMPT + COMPLETION) * 86:,} ({PROMPT * 86:,} prompt" in html
    assert "valid split, 19 excerpts (1 more could not be simulated)" in html
    assert "39 of 40 excerpts simulated, 1 failed (misaligned 1)" in html
    failed = result.scored.failed[0]
    assert (
        f'<div class="failed-excerpt">valid {failed.source} {failed.index + 1}: '
        '<span class="reason">misaligned</span> '
        '<span class="dim" title="the lines do not match">'
    ) in html
    # Without the run's totals the overview sums the results' own (the done unit's).
    alone = write_report([result], tmp_path / "alone.html").read_text(encoding="utf-8")
    assert '<dt>Simulations</dt><dd class="num">39 of 40</dd>' in alone


# --- stored formats --------------------------------------------------------------------------


def test_result_json_of_format_2_loads_without_statistics(record: NeuronRecord) -> None:
    data = json.loads(explain_neuron(record).model_dump_json())
    data["format_version"] = 2
    del data["simulation"], data["scored"]["failed"]
    old = ExplanationResult.model_validate(data)
    assert old.simulation is None and old.scored.failed == ()
    assert old.format_version == RESULT_FORMAT_VERSION


def test_a_schema_2_database_reads_as_it_is_and_migrates_on_resume(tmp_path: Path) -> None:
    records = unit_records()
    units = list(records)
    db = tmp_path / "run.sqlite"
    explain_neurons(records=records, units=units[:1], db=db)
    raw = sqlite3.connect(db)
    with raw:
        raw.execute("ALTER TABLE units DROP COLUMN simulation")
        raw.execute("ALTER TABLE usage DROP COLUMN simulation")
        raw.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    raw.close()

    with RunStore(db) as store:
        assert store.schema_version == 2
        assert [s.simulation for s in store.units()] == [None]
        assert store.simulation() == SimulationStats()
        assert store.summary()["simulation"]["attempted"] == 0

    with pytest.warns(UserWarning, match="migrated to schema 5"):
        summary = explain_neurons(records=records, units=units, db=db)
    assert isinstance(summary, RunSummary)
    assert summary.done == 1 and summary.simulation.attempted == 40
    with RunStore(db) as store:
        assert store.schema_version == 5
        assert [s.simulation is None for s in store.units()] == [True, False]
        assert store.simulation() == summary.simulation
        steps = [(m["from"], m["to"]) for m in store.meta()["migrations"]]
        assert steps == [(2, 3), (3, 4), (4, 5)]


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium binary (see test_report.py)")
def test_a_browser_shows_the_simulations_and_the_failed_excerpts(
    run: tuple[Path, RunSummary, list[RunEvent]], tmp_path: Path
) -> None:
    db, _, _ = run
    with RunStore(db) as store:
        page = write_report(store.results(), tmp_path / "r.html", simulation=store.simulation())
    browser_path = find_chromium()
    assert browser_path is not None
    with Chromium(browser_path, width=1280, height=900) as browser:
        browser.open(page.as_uri())
        overview = browser.evaluate("document.getElementById('overview').innerText")
        assert "failed simulations\n6 (misaligned 6)" in overview.lower()  # dt in capitals
        browser.click("#units tbody tr:first-child td:nth-child(3) a")
        browser.wait_for("location.hash.length > 1")
        unit = f"document.getElementById({json.dumps(browser.evaluate('location.hash.slice(1)'))})"
        browser.wait_for(f"{unit}.open && {unit}.hasAttribute('data-drawn')")
        text = browser.evaluate(f"{unit}.innerText")
        assert "Failed excerpts" in text and "39 of 40 excerpts simulated" in text
        assert browser.evaluate(f"{unit}.querySelectorAll('.failed-excerpt').length") == 1
        assert browser.console_errors() == []
