"""`UnitId.source`: two SAEs at one hook site give different units (named by their files'
sha256), kept apart in a run database (schema 5) and in results (format 8); the files the
previous library wrote (tests/data/before_unit_sources: schema 4, format 7, records JSONL)
still read, and migrate with the sources a collection's results name."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
np = pytest.importorskip("numpy")

from gpt2_tokenizer import gpt2_tokenizer_fixture  # noqa: E402, F401
from test_units import D_MODEL, sae_weights, texts, tiny, write_saelens  # noqa: E402

from neuron_explainer import ExplanationResult, InvalidInputError, UnitId  # noqa: E402
from neuron_explainer.formats import RecordsFile, read_records_jsonl  # noqa: E402
from neuron_explainer.runs import RunStore, explain_neurons  # noqa: E402
from neuron_explainer.runs._schema import SCHEMA_VERSION  # noqa: E402
from neuron_explainer.subjects.hf import HFSubject  # noqa: E402
from neuron_explainer.subjects.units import sae_sha256, source_of  # noqa: E402
from neuron_explainer.testing import number_neuron_record  # noqa: E402

BEFORE = Path(__file__).parent / "data" / "before_unit_sources"
SITE = "blocks.1.hook_resid_pre"
SAE_SHA256 = "5ae" + "0123456789abcdef" * 3 + "0123456789abc"  # make_fixtures.py's


def test_source_is_written_only_when_set_and_named_by_content() -> None:
    latent = UnitId(model="m", layer=1, index=3, kind="sae_latent", site=SITE)
    assert "source" not in json.loads(latent.model_dump_json())
    named = latent.model_copy(update={"source": UnitId.content_source("AB" * 32)})
    assert named.source == "sha256:abababababababab"
    assert json.loads(named.model_dump_json())["source"] == named.source
    assert UnitId.model_validate_json(named.model_dump_json()) == named != latent
    assert str(named) == f"m layer 1 sae_latent 3 at {SITE} of sha256:abababababababab"
    with pytest.raises(InvalidInputError, match="not a hex sha256"):
        UnitId.content_source("xyz")
    with pytest.raises(ValueError, match="pattern"):
        UnitId(model="m", layer=0, index=0, source="two words")
    # what a record's provenance says of its unit names its source
    assert source_of({"sae": {"sha256": "cd" * 32, "path": "/x"}}) == "sha256:cdcdcdcdcdcdcdcd"
    rows = {"direction": {"sha256": "01" * 32, "array_sha256": "ef" * 32, "row": 2}}
    assert source_of(rows) == "sha256:efefefefefefefef"
    assert source_of({"sae": {"path": "/x"}}) is None and source_of(None) is None


@pytest.fixture(scope="module")
def two_saes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two SAELens SAEs of the same shape at the same site (a "16k" and a "65k" stand-in)."""
    root = tmp_path_factory.mktemp("saes")
    return (
        write_saelens(root / "res-16k", sae_weights(1)),
        write_saelens(root / "res-65k", sae_weights(2)),
    )


def test_two_saes_at_one_site_give_two_units_kept_apart_in_a_run(
    two_saes: tuple[Path, Path], gpt2_tokenizer: Any, tmp_path: Path
) -> None:
    model = tiny("gpt2")
    options = {"tokenizer": gpt2_tokenizer, "window_length": 8, "top_k": 12, "n_random": 8}
    subjects = [HFSubject(model, corpus=texts(60), sae=sae, **options) for sae in two_saes]
    units = [s.latent_unit(2) for s in subjects]
    assert units[0].site == units[1].site == SITE and units[0] != units[1]
    for unit, subject, sae in zip(units, subjects, two_saes, strict=True):
        assert subject.sources.sae is not None
        digest = sae_sha256(subject.sources.sae, str(sae))["sha256"]
        assert unit.source == UnitId.content_source(digest)
        assert unit.model_copy(update={"source": None}) == units[0].model_copy(
            update={"source": None}
        )
    records = [s.neuron_record(u) for s, u in zip(subjects, units, strict=True)]
    for record, unit in zip(records, units, strict=True):
        assert record.unit == unit
        assert source_of(record.provenance.extra["unit"]) == unit.source  # the same name
    # a unit of the 16k SAE is not read through the 65k one; a unit naming none is
    with pytest.raises(InvalidInputError, match="give the SAE or direction it was recorded"):
        subjects[1].neuron_record(units[0])
    bare = subjects[1].neuron_record(units[0].model_copy(update={"source": None}))
    assert bare.top_records == records[1].top_records

    db = tmp_path / "run.sqlite"
    summary = explain_neurons(records=dict(zip(units, records, strict=True)), db=db)
    assert summary.done == 2
    with RunStore(db) as store:
        assert store.schema_version == SCHEMA_VERSION == 5
        assert [s.unit for s in store.units()] == sorted(units, key=lambda u: u.source or "")
        kept = {u: store.result(u) for u in units}
        assert all(r is not None and r.unit == u for u, r in kept.items())
        assert store.result(units[0].model_copy(update={"source": None})) is None
        assert len(list(store.results())) == 2
    results = [r for r in kept.values() if r is not None]
    assert {json.loads(r.model_dump_json())["unit"]["source"] for r in results} == {
        u.source for u in units
    }
    assert all(json.loads(r.model_dump_json())["format_version"] == 8 for r in results)


def test_a_direction_is_named_by_its_vector(gpt2_tokenizer: Any, tmp_path: Path) -> None:
    vector = np.random.default_rng(0).normal(size=D_MODEL)
    np.save(tmp_path / "d.npy", vector)
    subject = HFSubject(
        tiny("gpt2"), corpus=texts(40), direction=tmp_path / "d.npy", hook=SITE,
        tokenizer=gpt2_tokenizer, window_length=8,
    )  # fmt: skip
    unit = subject.direction_unit()
    assert unit.source == UnitId.content_source(subject.sources.direction.sha256)  # type: ignore[union-attr]
    other = unit.model_copy(update={"source": UnitId.content_source("00" * 32)})
    with pytest.raises(InvalidInputError, match="is sha256:"):
        subject.neuron_record(other)


# --- files the previous library wrote --------------------------------------------------------


def test_a_format_7_result_and_old_records_still_read() -> None:
    text = (BEFORE / "result.json").read_text(encoding="utf-8")
    assert json.loads(text)["format_version"] == 7
    result = ExplanationResult.model_validate_json(text)
    assert result.unit.site == SITE and result.unit.source is None
    assert result.format_version == 8
    records = read_records_jsonl(BEFORE)
    lazily = RecordsFile(BEFORE / "records.jsonl")
    assert list(records) == list(lazily) and len(records) == 5
    assert all(u.source is None for u in records)
    assert lazily[result.unit] == records[result.unit]


def _columns(db: Path, table: str) -> list[str]:
    with sqlite3.connect(db) as connection:
        return [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]


def test_a_schema_4_run_reads_as_it_is_then_migrates_with_its_sources(tmp_path: Path) -> None:
    db = Path(shutil.copy(BEFORE / "run.sqlite", tmp_path / "run.sqlite"))
    assert "source" not in _columns(db, "units")
    latent3 = UnitId(model="tiny-gpt2", layer=1, index=3, kind="sae_latent", site=SITE)
    named = UnitId.content_source(SAE_SHA256)
    with RunStore(db) as store:  # read before migrating
        assert store.schema_version == 4
        before = {s.unit: s.status for s in store.units()}
        assert len(before) == 5 and all(u.source is None for u in before)
        assert store.status(latent3) == "done" and store.result(latent3) is not None
        assert store.status(latent3.model_copy(update={"source": named})) is None
        results = [r.model_dump_json() for r in store.results()]
        assert store.migrate() == tmp_path / "run.sqlite.v4.bak"
    assert "source" in _columns(db, "units") and "source" in _columns(db, "usage")
    with RunStore(db) as store:
        after = {s.unit: s.status for s in store.units()}
        # the latents of the collected SAE take its source; the rest keep none
        renamed = {
            u.model_copy(update={"source": named})
            if u.kind == "sae_latent" and u.site == SITE
            else u: status
            for u, status in before.items()
        }
        assert after == renamed
        assert after[latent3.model_copy(update={"source": named, "index": 4})] == "failed"
        moved = store.result(latent3.model_copy(update={"source": named}))
        assert moved is not None and moved.unit.source == named
        assert store.status(latent3) is None
        now = [r.model_dump_json() for r in store.results()]
        assert len(now) == len(results)
        assert sorted(json.loads(r)["unit"].get("source", "") for r in now) == sorted(
            ["", "", "", named]
        )
    with sqlite3.connect(db) as connection:
        spent = connection.execute(
            "SELECT idx, source FROM usage WHERE kind = 'sae_latent' ORDER BY idx"
        ).fetchall()
    assert spent == [(1, ""), (3, named), (4, named)]

    # the migrated run resumes with units that name their SAE: nothing is explained again
    records = read_records_jsonl(BEFORE)
    given = {
        u.model_copy(update={"source": named}) if u.site == SITE else u: r.model_copy(
            update={"unit": u.model_copy(update={"source": named}) if u.site == SITE else u}
        )
        for u, r in records.items()
    }
    summary = explain_neurons(records=given, db=db, source_name="before-unit-sources")
    assert (summary.total, summary.done, summary.skipped) == (5, 0, 4)
    assert summary.failed == 1 and summary.failed_now == 0


def test_a_new_run_holds_one_latent_of_two_saes_and_of_none(tmp_path: Path) -> None:
    base = UnitId(model="m", layer=1, index=3, kind="sae_latent", site=SITE)
    units = [
        base,
        base.model_copy(update={"source": UnitId.content_source("aa" * 32)}),
        base.model_copy(update={"source": UnitId.content_source("bb" * 32)}),
    ]
    record = number_neuron_record()
    records = {u: record.model_copy(update={"unit": u}) for u in units}
    summary = explain_neurons(records=records, db=tmp_path / "run.sqlite")
    assert summary.done == 3
    with RunStore(tmp_path / "run.sqlite") as store:
        assert [s.unit.source for s in store.units()] == [None, *(u.source for u in units[1:])]
        for unit in units:
            found = store.result(unit)
            assert found is not None and found.unit == unit
