"""Files written by previous versions still open, resume, report and migrate; files claiming a
newer version are refused. tests/data/v1 was written by 0.1.0, tests/data/before_window_ids by
the last commit before window ids (collection format 1, result format 4), each with its
make_fixtures.py."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _batch_worker import unit_record, units
from pydantic import ValidationError

from neuron_explainer import (
    ExplanationResult,
    FormatError,
    InvalidInputError,
    UsageError,
    WindowId,
)
from neuron_explainer.report import write_report
from neuron_explainer.results import RESULT_FORMAT_VERSION
from neuron_explainer.runs import RunStore, explain_neurons
from neuron_explainer.runs import _schema as schema
from neuron_explainer.runs.migration import migrate
from neuron_explainer.runs.store import SCHEMA_VERSION
from neuron_explainer.subjects.collection import FORMAT_VERSION, Collection, CollectionSubject

V1 = Path(__file__).parent / "data" / "v1"
BEFORE_IDS = Path(__file__).parent / "data" / "before_window_ids"


@pytest.fixture
def v1(tmp_path: Path) -> Path:
    """A copy of the fixtures (opening the database in place would write beside it)."""
    folder = tmp_path / "v1"
    shutil.copytree(V1, folder, ignore=shutil.ignore_patterns("*.py", "*-wal", "*-shm"))
    return folder


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def raw_schema_version(path: Path) -> object:
    db = sqlite3.connect(path)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    finally:
        db.close()
    return json.loads(row[0])


def set_meta(path: Path, key: str, value: object) -> None:
    db = sqlite3.connect(path)
    try:
        with db:
            db.execute("UPDATE meta SET value = ? WHERE key = ?", (json.dumps(value), key))
    finally:
        db.close()


def test_the_fixtures_are_of_the_previous_version() -> None:
    assert SCHEMA_VERSION >= 2 and RESULT_FORMAT_VERSION >= 5 and FORMAT_VERSION >= 2
    raw = json.loads((V1 / "result.json").read_text(encoding="utf-8"))
    assert "format_version" not in raw and raw["library_version"] == "0.1.0"
    assert json.loads((V1 / "collection" / "meta.json").read_text(encoding="utf-8"))["format"] == 1
    raw = json.loads((BEFORE_IDS / "result.json").read_text(encoding="utf-8"))
    assert raw["format_version"] == 4 and "quantile" not in raw["split_plan"]
    meta = json.loads((BEFORE_IDS / "collection" / "meta.json").read_text(encoding="utf-8"))
    assert meta["format"] == 1 and not (BEFORE_IDS / "collection" / "window_positions.i64").exists()


# --- run database ---------------------------------------------------------------------------


def test_a_v1_run_database_is_read_as_it_is(v1: Path) -> None:
    db = v1 / "run.sqlite"
    with RunStore(db) as store:
        assert store.schema_version == 1
        assert store.counts() == {"pending": 5, "done": 3, "failed": 0}
        results = list(store.results())
        assert [r.unit.index for r in results] == [0, 1, 2]
        assert all(r.format_version == RESULT_FORMAT_VERSION for r in results)
        assert all(r.library_version == "0.1.0" for r in results)
        assert store.result(results[1].unit) == results[1]
        assert store.summary()["scored"] == 3
        assert store.meta()["source_path"].endswith("tests/data/v1/collection")
        assert store.export_jsonl(v1 / "out.jsonl") == 3
    lines = (v1 / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["format_version"] for line in lines] == [RESULT_FORMAT_VERSION] * 3
    assert raw_schema_version(db) == 1  # reading wrote nothing
    assert sorted(p.name for p in v1.glob("run.sqlite.v*")) == []


def test_a_v1_run_resumes_from_a_moved_collection_and_is_migrated(v1: Path) -> None:
    db = v1 / "run.sqlite"
    with RunStore(db) as store:
        before = {r.unit: r for r in store.results()}

    with pytest.warns(
        UserWarning, match=rf"migrated to schema {SCHEMA_VERSION} .* kept as .*run\.sqlite\.v1\.bak"
    ):
        summary = explain_neurons(
            v1 / "collection",
            layers=[0],
            neurons="0-7",
            db=db,
            explainer="token-table",
            simulator="token-table",
        )

    assert (summary.done, summary.failed, summary.skipped) == (5, 0, 3)
    with RunStore(db) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.counts() == {"pending": 0, "done": 8, "failed": 0}
        after = {r.unit: r for r in store.results()}
        meta = store.meta()
    assert {u: after[u] for u in before} == before  # the 3 done units were not redone
    with RunStore(db) as store:
        measured = {s.unit: s.simulation for s in store.units()}
        total = store.simulation()
    assert all(measured[u] is None for u in before)  # 0.1.0 did not measure them
    assert all(after[u].simulation == measured[u] for u in after if u not in before)
    assert [measured[u].attempted > 0 for u in after if u not in before] == [True] * 5  # type: ignore[union-attr]
    assert total == summary.simulation and total.failed == 0
    assert [after[u].format_version for u in after] == [RESULT_FORMAT_VERSION] * 8
    assert meta["source_path"] == str(v1 / "collection")
    assert [(m["from"], m["to"]) for m in meta["migrations"]] == [
        (v, v + 1) for v in range(1, SCHEMA_VERSION)
    ]

    backup = v1 / "run.sqlite.v1.bak"
    assert raw_schema_version(backup) == 1
    with RunStore(backup) as old:
        assert old.counts() == {"pending": 5, "done": 3, "failed": 0}


def test_a_v1_run_database_is_reported_without_migrating(v1: Path) -> None:
    db = v1 / "run.sqlite"
    with RunStore(db) as store:
        texts = [r.explanation.text for r in store.results()]
        page = write_report(store.results(), v1 / "report.html", failures=store.failures())
    html = page.read_text(encoding="utf-8")
    assert len(texts) == 3
    for text in texts:
        assert text.split('"')[0] in html
    assert raw_schema_version(db) == 1


def test_the_report_command_reads_a_resumed_v1_run(v1: Path) -> None:
    typer_testing = pytest.importorskip("typer.testing")
    from neuron_explainer.cli import app

    db = v1 / "run.sqlite"
    with pytest.warns(UserWarning, match="migrated"):
        explain_neurons(v1 / "collection", layers=[0], neurons="0-7", db=db)
    out = v1 / "report.html"
    result = typer_testing.CliRunner().invoke(app, ["report", "--db", str(db), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    assert out.read_text(encoding="utf-8").count("layer 0") >= 8


def test_a_run_database_of_a_newer_schema_is_refused(v1: Path) -> None:
    db = v1 / "run.sqlite"
    set_meta(db, "schema_version", SCHEMA_VERSION + 1)
    newer = (
        rf"run\.sqlite: run-database schema {SCHEMA_VERSION + 1} was written by a newer "
        rf"neuron_explainer; this version reads 1 to {SCHEMA_VERSION}: upgrade neuron_explainer$"
    )
    before = digest(db)
    with pytest.raises(FormatError, match=newer):
        RunStore(db)
    with pytest.raises(FormatError, match=newer):
        migrate(db)
    with pytest.raises(FormatError, match=newer):
        explain_neurons(v1 / "collection", layers=[0], neurons="0-7", db=db)
    assert digest(db) == before  # refused without a write (no WAL switch, no lock file)
    assert sorted(p.name for p in v1.glob("run.sqlite*")) == ["run.sqlite"]
    assert raw_schema_version(db) == SCHEMA_VERSION + 1


def sqlite_file(path: Path, *, wal: bool) -> Path:
    """An SQLite file that is not a run database (one table), in WAL mode or not."""
    db = sqlite3.connect(path)
    try:
        if wal:
            db.execute("PRAGMA journal_mode=WAL")
        with db:
            db.execute("CREATE TABLE notes (text TEXT)")
            db.execute("INSERT INTO notes VALUES ('mine')")
    finally:
        db.close()
    return path


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("empty.sqlite", lambda p: p.write_bytes(b""), r"empty\.sqlite is an empty file"),
        ("notes.sqlite", lambda p: sqlite_file(p, wal=False), "SQLite file but not a run"),
        ("wal.sqlite", lambda p: sqlite_file(p, wal=True), "SQLite file but not a run"),
        ("junk.sqlite", lambda p: p.write_bytes(b"\x00junk" * 999), "not an SQLite file"),
    ],
)
def test_a_file_that_is_not_a_run_database_is_refused_untouched(
    tmp_path: Path, name: str, make: Any, message: str
) -> None:
    path = tmp_path / name
    make(path)
    before = digest(path)
    journal = path.read_bytes()[18:20]  # the header's WAL flag (2, 2) or not (1, 1)
    for attempt in (
        lambda: RunStore(path),  # what the report and every reader open
        lambda: migrate(path),
        lambda: write_report(RunStore(path).results(), tmp_path / "r.html"),
    ):
        with pytest.raises((FormatError, InvalidInputError)) as refused:
            attempt()
        assert str(path) in str(refused.value)
        assert digest(path) == before and path.read_bytes()[18:20] == journal
        assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no -wal, -shm, .lock
    if name != "empty.sqlite":  # an empty file is where a new run may begin: see below
        with pytest.raises(FormatError, match=message):
            RunStore(path, create=True)
        with pytest.raises(FormatError, match=message):
            explain_neurons(records={u: unit_record(u) for u in units(1)}, db=path)
        assert digest(path) == before and sorted(p.name for p in tmp_path.iterdir()) == [name]
    else:
        with pytest.raises(FormatError, match=message):
            RunStore(path)


def test_the_report_command_refuses_an_empty_file_and_leaves_it_empty(tmp_path: Path) -> None:
    empty = tmp_path / "run.sqlite"
    empty.write_bytes(b"")
    ran = subprocess.run(
        [sys.executable, "-m", "neuron_explainer", "report", "--db", str(empty),
         "--out", str(tmp_path / "report.html")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ran.returncode == 2, ran.stderr
    assert ran.stderr.strip() == f"error: {empty} is an empty file (0 bytes), not a run database"
    assert empty.read_bytes() == b"" and sorted(tmp_path.iterdir()) == [empty]


def test_an_empty_file_becomes_a_new_run_only_when_asked_to_create(tmp_path: Path) -> None:
    """An empty file holds nothing to lose (and a process killed right after SQLite created
    the file leaves one): a run (``create=True``) starts a new database in it."""
    db = tmp_path / "run.sqlite"
    db.write_bytes(b"")
    summary = explain_neurons(records={u: unit_record(u) for u in units(2)}, db=db)
    assert summary.done == 2
    with RunStore(db) as store:
        assert store.counts()["done"] == 2 and store.schema_version == SCHEMA_VERSION


@pytest.mark.parametrize(
    ("value", "message"),
    [(0, r"run-database schema 0 is not a version"), (None, r"meta has no schema_version")],
)
def test_a_run_database_without_a_valid_schema_is_refused(
    v1: Path, value: object, message: str
) -> None:
    set_meta(v1 / "run.sqlite", "schema_version", value)
    with pytest.raises(FormatError, match=message):
        RunStore(v1 / "run.sqlite")
    with pytest.raises(FormatError, match=message):
        migrate(v1 / "run.sqlite")


def test_a_schema_that_cannot_be_read_as_it_is_names_the_migrate_command(
    v1: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = v1 / "run.sqlite"
    step = dataclasses.replace(schema.MIGRATIONS[1], reads_as_is=False)
    monkeypatch.setitem(schema.MIGRATIONS, 1, step)
    with pytest.raises(FormatError, match=r"run `neuron-explainer migrate .*run\.sqlite`") as info:
        RunStore(db)
    assert not isinstance(info.value, UsageError)
    assert migrate(db).to_version == SCHEMA_VERSION
    with RunStore(db) as store:
        assert store.counts()["done"] == 3


def test_a_failed_migration_step_leaves_the_database_as_it_was(
    v1: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM units")
        raise sqlite3.OperationalError("disk on fire")

    db = v1 / "run.sqlite"
    monkeypatch.setitem(schema.MIGRATIONS, 1, schema.Migration("broken", broken))
    with pytest.raises(sqlite3.OperationalError, match="disk on fire"):
        migrate(db)
    with RunStore(db) as store:
        assert store.schema_version == 1
        assert store.counts() == {"pending": 5, "done": 3, "failed": 0}
        assert "migrations" not in store.meta()
    assert list(v1.glob("run.sqlite.v*")) == []  # no copy of an unchanged file


def test_migrating_refuses_a_database_a_run_is_writing(v1: Path) -> None:
    db = v1 / "run.sqlite"
    with RunStore(db) as store:
        store.lock()
        with pytest.raises(UsageError, match="another run is using"):
            migrate(db)
    assert raw_schema_version(db) == 1


# --- collection -----------------------------------------------------------------------------


def test_a_v1_collection_reads_a_neuron_record(v1: Path) -> None:
    collection = Collection(v1 / "collection")
    assert collection.format_version == 1
    record = collection.neuron_record(0, 3)
    assert (record.unit.layer, record.unit.index) == (0, 3)
    assert record.unit.model == collection.meta["model"]
    assert 0 < len(record.top_records) <= 12
    assert record.top_records[0].max_activation >= record.top_records[-1].max_activation
    assert record.provenance.hook_point == "transformer.h.0.mlp.act:output"
    assert CollectionSubject(collection).neuron_record(record.unit) == record
    # format 1 did not record where windows lie: no window ids, and nothing made up
    every = [*record.top_records, *record.random_sample, *itertools.chain(*record.quantile_samples)]
    assert len(every) > len(record.top_records)
    assert [r.window_id for r in every] == [None] * len(every)
    assert collection.window_id(0) is None


def test_a_collection_of_a_newer_format_is_refused(v1: Path) -> None:
    meta_path = v1 / "collection" / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta_path.write_text(json.dumps({**meta, "format": FORMAT_VERSION + 1}), encoding="utf-8")
    newer = (
        rf"collection: collection format {FORMAT_VERSION + 1} was written by a newer "
        rf"neuron_explainer; this version reads 1 to {FORMAT_VERSION}: upgrade neuron_explainer$"
    )
    with pytest.raises(FormatError, match=newer):
        Collection(v1 / "collection")
    with pytest.raises(FormatError, match=newer):
        migrate(v1 / "collection")
    meta_path.write_text(json.dumps({**meta, "format": "one"}), encoding="utf-8")
    with pytest.raises(FormatError, match=r"collection format 'one' is not a version"):
        Collection(v1 / "collection")


def _fixture_settings() -> Any:
    """tests/data/before_window_ids/make_fixtures.py as a module (for its settings)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_fixtures", BEFORE_IDS / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_gpt2(folder: Path, name: str) -> Any:
    """The model make_fixtures.py collected with, loaded and named as it was."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from gpt2_tokenizer import write_gpt2_tokenizer

    from neuron_explainer.models.loading import load_model

    write_gpt2_tokenizer(folder)
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64)
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(folder)
    return dataclasses.replace(load_model(folder, device="cpu"), name=name)


@pytest.mark.parametrize("migrated_first", [False, True])
def test_an_unfinished_format_1_collection_resumes_with_window_ids(
    tmp_path: Path, migrated_first: bool
) -> None:
    from neuron_explainer.subjects.collect import collect
    from neuron_explainer.subjects.corpus import corpus_from, iter_windows

    fixture = _fixture_settings()
    folder = tmp_path / "collection"
    shutil.copytree(BEFORE_IDS / "collection", folder)
    old = Collection(folder)
    assert (old.format_version, old.windows_done, old.finished) == (1, 20, False)
    assert {r.window_id for r in old.neuron_record(1, 5).top_records} == {None}
    if migrated_first:
        assert migrate(folder).to_version == FORMAT_VERSION
        assert Collection(folder).window_id(19) is None
    texts = (BEFORE_IDS / "corpus.txt").read_text(encoding="utf-8").splitlines()
    loaded = _tiny_gpt2(tmp_path / "model", fixture.MODEL_NAME)

    def corpus() -> Any:
        return corpus_from(texts, name=fixture.CORPUS_NAME)

    resumed = collect(loaded, corpus(), out_dir=folder, **fixture.COLLECT)  # same config: resumes
    whole = collect(loaded, corpus(), out_dir=tmp_path / "whole", **fixture.COLLECT)

    assert resumed.finished and resumed.format_version == FORMAT_VERSION
    assert resumed.windows_done == whole.windows_done > 20
    for name in ("window_ids.u32", "window_lengths.u32", "window_positions.i64"):
        assert (folder / name).read_bytes() == (whole.path / name).read_bytes(), name
    windows = list(iter_windows(corpus(), loaded.tokenizer, length=8))
    assert [resumed.window_id(w) for w in range(resumed.windows_done)] == [
        WindowId(document=w.document, start=w.start) for w in windows
    ]
    record = resumed.neuron_record(1, 5)
    assert None not in {r.window_id for r in (*record.top_records, *record.random_sample)}


def test_a_v1_run_is_rescored_over_its_v1_collection(v1: Path) -> None:
    """Its results hold split plans without a quantile part and records without window ids."""
    from neuron_explainer.runs import rescore

    collection = Collection(v1 / "collection")
    summary = rescore(
        v1 / "run.sqlite", "token-table", out_db=v1 / "again.sqlite", source=collection
    )
    assert (summary.done, summary.failed) == (3, 0)

    # The source now gives window ids (a collection made again, say): the same records still.
    def with_ids(unit: Any) -> Any:
        record = collection.neuron_record(unit.layer, unit.index)

        def named(records: Any) -> Any:
            return tuple(
                r.model_copy(update={"window_id": WindowId(document=i, start=8 * i)})
                for i, r in enumerate(records)
            )

        return record.model_copy(
            update={
                "top_records": named(record.top_records),
                "random_sample": named(record.random_sample),
            }
        )

    summary = rescore(
        v1 / "run.sqlite", "token-table", out_db=v1 / "named.sqlite", records=with_ids
    )
    assert (summary.done, summary.failed) == (3, 0)
    with RunStore(v1 / "named.sqlite") as store:
        results = list(store.results())
    assert results and all(r.split_plan.quantile is None for r in results)
    assert all(s.record.window_id is not None for r in results for s in r.scored.sequences)


# --- result JSON ----------------------------------------------------------------------------


def test_a_v1_result_loads_and_is_upgraded() -> None:
    text = (V1 / "result.json").read_text(encoding="utf-8")
    raw = json.loads(text)
    result = ExplanationResult.model_validate_json(text)
    assert result.format_version == RESULT_FORMAT_VERSION
    assert result.score == raw["scored"]["correlation"]["value"]
    assert result.explanation.text == raw["explanation"]["text"]
    assert result.simulation is None  # not measured by 0.1.0
    assert result.scored.failed == () and result.scored.n_sequences == len(
        raw["scored"]["sequences"]
    )
    assert result.split_plan.quantile is None  # 0.1.0 did not split quantile samples
    dumped = json.loads(result.model_dump_json())
    assert dumped.pop("format_version") == RESULT_FORMAT_VERSION
    assert dumped.pop("simulation") is None
    assert dumped["scored"].pop("failed") == []
    assert dumped["scored"].pop("scoring") == "plain"  # 0.1.0 scored plainly
    assert dumped["scored"].pop("sensitivity") is None  # and did not measure it
    assert dumped["scored"].pop("neutral_explanation") is None
    assert dumped["split_plan"].pop("quantile") is None
    scores = dumped.pop("scores")  # the correlation score alone, from ``scored``
    assert list(scores) == ["correlation"]
    assert scores["correlation"]["value"] == raw["scored"]["correlation"]
    for sequence in dumped["scored"]["sequences"]:
        assert sequence.pop("neutral") is None and sequence.pop("contrastive") is False
        assert sequence["record"].pop("window_id") is None
    assert dumped == raw  # nothing else changed


def test_a_format_4_result_loads_without_window_ids_or_a_quantile_plan() -> None:
    text = (BEFORE_IDS / "result.json").read_text(encoding="utf-8")
    raw = json.loads(text)
    result = ExplanationResult.model_validate_json(text)
    assert result.format_version == RESULT_FORMAT_VERSION
    assert result.split_plan.quantile is None
    assert result.split_plan.top == {k: tuple(v) for k, v in raw["split_plan"]["top"].items()}
    assert result.scored.n_sequences == len(raw["scored"]["sequences"]) > 0
    assert {s.record.window_id for s in result.scored.sequences} == {None}
    dumped = json.loads(result.model_dump_json())
    assert (dumped.pop("format_version"), raw.pop("format_version")) == (RESULT_FORMAT_VERSION, 4)
    assert dumped["split_plan"].pop("quantile") is None
    assert list(dumped.pop("scores")) == ["correlation"]
    for sequence in dumped["scored"]["sequences"]:
        assert sequence["record"].pop("window_id") is None
    assert dumped == raw  # nothing else changed
    assert ExplanationResult.model_validate_json(result.model_dump_json()) == result


def test_a_format_5_result_loads_with_its_correlation_score() -> None:
    text = (BEFORE_IDS.parent / "result_format_5" / "result.json").read_text(encoding="utf-8")
    raw = json.loads(text)
    result = ExplanationResult.model_validate_json(text)
    assert raw["format_version"] == 5 and "scores" not in raw
    assert result.format_version == RESULT_FORMAT_VERSION
    assert list(result.scores) == ["correlation"]
    assert result.scores["correlation"].value.value == raw["scored"]["correlation"]["value"]
    assert result.score == raw["scored"]["correlation"]["value"]
    assert result.scored is not None and result.scored.n_sequences > 0
    dumped = json.loads(result.model_dump_json())
    assert (dumped.pop("format_version"), raw.pop("format_version")) == (RESULT_FORMAT_VERSION, 5)
    dumped.pop("scores")
    assert dumped == raw  # nothing else changed
    assert ExplanationResult.model_validate_json(result.model_dump_json()) == result
    assert ExplanationResult.model_validate_json(result.model_dump_json()) == result


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (
            RESULT_FORMAT_VERSION + 1,
            f"result format {RESULT_FORMAT_VERSION + 1} was written by a newer neuron_explainer",
        ),
        (0, r"result format 0 is not a version \(a positive integer\)"),
        ("2", r"result format '2' is not a version \(a positive integer\)"),
    ],
)
def test_a_result_of_an_unknown_version_is_refused(v1: Path, version: object, message: str) -> None:
    path = v1 / "result.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**data, "format_version": version}), encoding="utf-8")
    with pytest.raises(ValidationError, match=message):
        ExplanationResult.model_validate_json(path.read_text(encoding="utf-8"))
    with pytest.raises(FormatError, match=rf"result\.json is not a readable result: .*{message}"):
        migrate(path)


# --- the migrate command --------------------------------------------------------------------


def test_migrate_upgrades_each_format_and_a_second_run_changes_nothing(v1: Path) -> None:
    db, collection, result = v1 / "run.sqlite", v1 / "collection", v1 / "result.json"
    original = digest(result)

    first = [migrate(db), migrate(collection), migrate(result)]

    assert [(m.kind, m.from_version, m.to_version, m.changed) for m in first] == [
        ("run database", 1, SCHEMA_VERSION, True),
        ("collection", 1, FORMAT_VERSION, True),
        ("result", 1, RESULT_FORMAT_VERSION, True),
    ]
    assert first[0].backup == v1 / "run.sqlite.v1.bak"
    assert first[1].backup == collection / "meta.json.v1.bak"
    assert first[2].backup == v1 / "result.json.v1.bak"
    migrated = Collection(collection)  # positions unknown: still no window ids
    assert migrated.format_version == FORMAT_VERSION
    assert migrated.neuron_record(0, 3) == Collection(V1 / "collection").neuron_record(0, 3)
    assert {migrated.window_id(w) for w in range(migrated.windows_done)} == {None}
    assert digest(v1 / "result.json.v1.bak") == original
    assert raw_schema_version(db) == SCHEMA_VERSION
    assert raw_schema_version(v1 / "run.sqlite.v1.bak") == 1
    assert json.loads(result.read_text(encoding="utf-8"))["format_version"] == RESULT_FORMAT_VERSION
    assert ExplanationResult.model_validate_json(result.read_text(encoding="utf-8")) == (
        ExplanationResult.model_validate_json((V1 / "result.json").read_text(encoding="utf-8"))
    )
    with RunStore(db) as store:
        assert store.counts() == {"pending": 5, "done": 3, "failed": 0}

    files = {p: digest(p) for p in v1.rglob("*") if p.is_file() and not p.name.endswith("lock")}
    second = [migrate(db), migrate(collection), migrate(result)]
    assert [(m.from_version, m.to_version, m.changed, m.backup) for m in second] == [
        (SCHEMA_VERSION, SCHEMA_VERSION, False, None),
        (FORMAT_VERSION, FORMAT_VERSION, False, None),
        (RESULT_FORMAT_VERSION, RESULT_FORMAT_VERSION, False, None),
    ]
    after = {p: digest(p) for p in v1.rglob("*") if p.is_file() and not p.name.endswith("lock")}
    assert after == files  # no file rewritten, no backup added


def test_a_second_backup_does_not_overwrite_the_first(v1: Path) -> None:
    (v1 / "result.json.v1.bak").write_text("kept", encoding="utf-8")
    assert migrate(v1 / "result.json").backup == v1 / "result.json.v1.bak-2"
    assert (v1 / "result.json.v1.bak").read_text(encoding="utf-8") == "kept"


def test_migrate_refuses_what_it_does_not_know(v1: Path) -> None:
    with pytest.raises(InvalidInputError, match="no such file or folder"):
        migrate(v1 / "missing.sqlite")
    (v1 / "notes.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="neither a run database, a collection folder"):
        migrate(v1 / "notes.txt")
    with pytest.raises(InvalidInputError, match=r"is not a collection: no meta\.json"):
        migrate(v1)


def test_the_migrate_command_prints_versions_and_exits_2_on_a_newer_file(v1: Path) -> None:
    typer_testing = pytest.importorskip("typer.testing")
    from neuron_explainer.cli import app

    runner = typer_testing.CliRunner()
    paths = [str(v1 / "run.sqlite"), str(v1 / "collection"), str(v1 / "result.json")]
    first = runner.invoke(app, ["migrate", *paths])
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == [
        f"{paths[0]}: run database 1 -> {SCHEMA_VERSION} (previous file kept as {paths[0]}.v1.bak)",
        f"{paths[1]}: collection 1 -> {FORMAT_VERSION} (previous file kept as "
        f"{paths[1]}/meta.json.v1.bak)",
        f"{paths[2]}: result 1 -> {RESULT_FORMAT_VERSION} (previous file kept as "
        f"{paths[2]}.v1.bak)",
    ]
    second = runner.invoke(app, ["migrate", *paths])
    assert second.exit_code == 0, second.output
    assert [line.endswith("current (nothing to do)") for line in second.stdout.splitlines()] == [
        True
    ] * 3

    set_meta(v1 / "run.sqlite", "schema_version", 99)
    refused = runner.invoke(app, ["migrate", paths[0]])
    assert refused.exit_code == 2
    assert refused.stderr.startswith("error: ") and "written by a newer neuron_explainer" in (
        refused.stderr
    )
    assert len(refused.stderr.strip().splitlines()) == 1
