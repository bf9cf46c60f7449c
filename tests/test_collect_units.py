"""Collections of units beyond MLP neurons (issue 18, the batch side): every latent of an SAE
and attention heads in one pass, checked latent by latent against the single-unit records of
HFSubject (subjects/units.py) on the same corpus and seed; resuming; the Collection reader;
the run database at schema 4 (a schema-3 database migrates, its runs still report); CLI flags.

Equivalence, as tests/test_collect.py asserts it between collect and each window run alone:
the same top windows (ranked by max activation, earlier window first on ties) and the same
activations within atol 1e-5 (a collection keeps float32; HFSubject keeps the float64 of the
float32 SAE's output), and the same moments (rel 1e-4). Random and quantile samples are drawn
differently by design (docs/collection.md), so only their disjointness is checked.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
np = pytest.importorskip("numpy")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from gpt2_tokenizer import gpt2_tokenizer_fixture, write_gpt2_tokenizer  # noqa: E402, F401

from neuron_explainer import InvalidInputError, UnitId, explain_neurons  # noqa: E402
from neuron_explainer.models.loading import load_model  # noqa: E402
from neuron_explainer.runs.store import RunStore  # noqa: E402
from neuron_explainer.subjects.collect import collect  # noqa: E402
from neuron_explainer.subjects.collection import Collection, CollectionSubject  # noqa: E402
from neuron_explainer.subjects.hf import HFSubject  # noqa: E402

WORDS = (
    "the river city 1999 café report 42 green people shipped years of bridge under night "
    "market Paris quietly seven engines broke while a dog barked at 3 blue stars"
).split()
D_MODEL, D_SAE = 32, 12
BEFORE = Path(__file__).parent / "data" / "before_units"
SELECTION: dict[str, Any] = {"window_length": 8, "top_k": 5, "n_random": 3, "seed": 2}
COMMON: dict[str, Any] = {
    **SELECTION,
    "device": "cpu",
    "batch_size": 4,
    "quantile_levels": (0.5, 0.9),
    "n_per_quantile": 2,
    "quantile_warmup": 12,
    "checkpoint_every": 8,
}


def texts(n: int = 30, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 24))) for _ in range(n)]


def write_sae(folder: Path, seed: int = 1, architecture: str = "standard", **cfg: Any) -> Path:
    """An SAELens 6 folder: a random SAE of D_SAE latents at blocks.1.hook_resid_pre."""
    rng = np.random.default_rng(seed)
    w = {
        "W_enc": (rng.normal(size=(D_MODEL, D_SAE)) / np.sqrt(D_MODEL)).astype(np.float32),
        "b_enc": (0.1 * rng.normal(size=D_SAE)).astype(np.float32),
        "W_dec": (rng.normal(size=(D_SAE, D_MODEL)) / np.sqrt(D_SAE)).astype(np.float32),
        "b_dec": (0.2 * rng.normal(size=D_MODEL)).astype(np.float32),
    }
    config = {
        "d_in": D_MODEL,
        "d_sae": D_SAE,
        "dtype": "float32",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "architecture": architecture,
        "metadata": {
            "model_name": "tiny",
            "hook_name": "blocks.1.hook_resid_pre",
            "hook_head_index": None,
            "prepend_bos": True,
            "model_from_pretrained_kwargs": {"center_writing_weights": False},
        },
        **cfg,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(config))
    safetensors_numpy.save_file(w, folder / "sae_weights.safetensors")
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_gpt2_tokenizer(tmp_path_factory.mktemp("tiny-gpt2"))
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=D_MODEL, n_head=4, n_positions=64)
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def loaded(model_dir: Path) -> Any:
    return load_model(model_dir, device="cpu")


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sae(tmp_path_factory.mktemp("sae"))


@pytest.fixture(scope="module")
def latents(loaded: Any, sae_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Collection:
    # latent_chunk 5: the 12 latents lie in three parts (5, 5, 2)
    out = tmp_path_factory.mktemp("latents")
    return collect(loaded, texts(), out_dir=out, sae=sae_dir, latent_chunk=5, **COMMON)


def check_same(collected: Any, alone: Any) -> None:
    """A collection's record equals HFSubject's single-unit record as the module docstring
    states."""
    assert collected.unit == alone.unit
    assert [r.window_id for r in collected.top_records] == [r.window_id for r in alone.top_records]
    for a, b in zip(collected.top_records, alone.top_records, strict=True):
        assert a.token_ids == b.token_ids
        np.testing.assert_allclose(a.activations, b.activations, atol=1e-5)
        if b.attended is None:  # an attention head's top records say where it looked
            assert a.attended is None
        else:
            assert a.attended is not None
            got = (a.attended.position, a.attended.source, a.attended.source_token)
            assert got == (b.attended.position, b.attended.source, b.attended.source_token)
            assert a.attended.weight == pytest.approx(b.attended.weight, abs=1e-5)
    assert (collected.mean, collected.variance) == pytest.approx(
        (alone.mean, alone.variance), rel=1e-4, abs=1e-7
    )
    top = {r.window_id for r in collected.top_records}
    assert not top & {r.window_id for r in collected.random_sample}
    assert collected.provenance.hook_point == alone.provenance.hook_point
    assert collected.provenance.bos_policy == alone.provenance.bos_policy


def test_every_latent_equals_its_single_unit_record(
    latents: Collection, loaded: Any, sae_dir: Path
) -> None:
    subject = HFSubject(loaded, texts(), sae=sae_dir, batch_size=32, **SELECTION)
    assert latents.kind == "sae_latent"
    assert [g["name"] for g in latents.groups] == ["sae"]
    units = latents.units()
    assert [u.index for u in units] == list(range(D_SAE))
    for latent in range(D_SAE):
        unit = subject.latent_unit(latent)
        assert unit == units[latent]
        assert unit.site == "blocks.1.hook_resid_pre"
        check_same(latents.record(unit, allow_dead=True), subject.unit_record(unit))
    sae = latents.record(units[0], allow_dead=True).provenance.extra["unit"]["sae"]
    assert (sae["layout"], sae["d_sae"], sae["path"]) == ("saelens", D_SAE, str(sae_dir))
    assert len(sae["sha256"]) == 64 and sae["of"] == "cfg.json+sae_weights.safetensors"
    alive = units[int(np.flatnonzero(~latents.unit_stats().dead)[0])]
    assert CollectionSubject(latents.path).neuron_record(alive) == latents.record(alive)


def test_top_k_latents_and_heads_equal_their_single_unit_records(
    loaded: Any, tmp_path: Path
) -> None:
    sae = write_sae(tmp_path / "topk", seed=5, architecture="topk", k=4)
    some = range(3, 11)
    collection = collect(
        loaded, texts(), out_dir=tmp_path / "c", sae=sae, latents=some, latent_chunk=3, **COMMON
    )
    subject = HFSubject(loaded, texts(), sae=sae, batch_size=32, **SELECTION)
    assert [u.index for u in collection.units()] == list(some)
    for latent in (3, 5, 6, 10):
        unit = subject.latent_unit(latent)
        check_same(collection.record(unit, allow_dead=True), subject.unit_record(unit))
    with pytest.raises(InvalidInputError, match=r"index 2 was not collected.*3\.\.10"):
        collection.record(subject.latent_unit(2))

    heads = collect(
        loaded, texts(), out_dir=tmp_path / "h", heads=[(1, 3), (0, 1), (1, 0)], **COMMON
    )
    alone = HFSubject(loaded, texts(), batch_size=32, **SELECTION)
    assert heads.units() == [alone.head_unit(0, 1), alone.head_unit(1, 0), alone.head_unit(1, 3)]
    for unit in heads.units():
        record = heads.record(unit)
        assert all(r.attended is not None for r in record.top_records)
        check_same(record, alone.unit_record(unit))
    with pytest.raises(InvalidInputError, match="does not hold"):
        heads.record(
            alone.head_unit(0, 2).model_copy(update={"layer": 1, "index": 9, "kind": "sae_latent"})
        )


class _Stop(Exception):
    pass


def _stop_after(windows: int) -> Any:
    def progress(done: int) -> None:
        if done >= windows:
            raise _Stop  # as a kill after the checkpoint at 8 windows (checkpoint_every)

    return progress


def _states(folder: Path) -> dict[str, dict[str, Any]]:
    from safetensors.numpy import load_file

    files = sorted(folder.glob("sae/part_*/state-*.safetensors"))
    return {f.parent.name: load_file(str(f)) for f in files}


def test_an_interrupted_latent_collection_resumes_to_the_same_result(
    loaded: Any, sae_dir: Path, latents: Collection, tmp_path: Path
) -> None:
    options = {**COMMON, "sae": sae_dir, "latent_chunk": 5}
    with pytest.raises(_Stop):
        collect(loaded, texts(), out_dir=tmp_path, progress=_stop_after(10), **options)
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert (progress["windows_done"], progress["finished"]) == (8, False)
    partial = Collection(tmp_path)
    assert partial.kind == "sae_latent" and not partial.finished
    assert partial.record(partial.units()[5], allow_dead=True).top_records
    resumed = collect(loaded, texts(), out_dir=tmp_path, **options)
    assert resumed.finished and resumed.windows_done == latents.windows_done
    a, b = _states(tmp_path), _states(latents.path)
    assert sorted(a) == sorted(b) == ["part_00000", "part_00001", "part_00002"]
    for part in a:
        for key in a[part]:
            np.testing.assert_array_equal(a[part][key], b[part][key], err_msg=f"{part} {key}")
    again = collect(loaded, texts(), out_dir=tmp_path, progress=_stop_after(0), **options)
    assert again.windows_done == latents.windows_done  # finished: nothing redone
    with pytest.raises(InvalidInputError, match="another config"):
        collect(loaded, texts(), out_dir=tmp_path, **{**options, "latent_chunk": 4})


def test_a_collection_of_the_previous_format_reads_as_before(tmp_path: Path) -> None:
    folder = shutil.copytree(BEFORE / "collection", tmp_path / "collection")
    old = Collection(folder)
    assert (old.format_version, old.kind, old.groups, old.layers) == (2, "mlp_neuron", [], [1])
    units = old.units()
    assert len(units) == 128 and units[0] == UnitId(model="tiny-gpt2", layer=1, index=0)
    record = old.record(units[7])
    assert record == old.neuron_record(1, 7)
    assert record.top_records and record.top_records[0].window_id is not None
    with pytest.raises(InvalidInputError, match="does not hold"):
        old.record(UnitId(model="tiny-gpt2", layer=1, index=0, kind="sae_latent", site="x"))


def test_collect_refuses_units_named_wrongly(loaded: Any, sae_dir: Path, tmp_path: Path) -> None:
    for options, message in (
        ({}, "exactly one of layers="),
        ({"layers": [1], "sae": sae_dir}, r"got \['layers', 'sae'\]"),
        ({"heads": [(1, 0)], "latents": range(3)}, "latents= needs sae="),
        ({"sae": sae_dir, "latents": [0, 12]}, r"latents \[12\] out of range"),
        ({"heads": [(1, 4)]}, "head 4 out of range: layer 1 has heads 0..3"),
        ({"heads": [(2, 0)]}, "layer"),
        ({"sae": sae_dir, "bos": "none"}, "prepend_bos=True"),
        ({"sae": sae_dir, "latent_chunk": 0}, "latent_chunk must be at least 1"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            collect(loaded, texts(3), out_dir=tmp_path / "x", **{**COMMON, **options})


# --- the run database (schema 4) -----------------------------------------------------------


def cli(*args: Any) -> Any:
    typer_testing = pytest.importorskip("typer.testing")
    from neuron_explainer.cli import app

    return typer_testing.CliRunner().invoke(app, [str(a) for a in args])


def _schema(db: Path) -> tuple[Any, list[str]]:
    with sqlite3.connect(db) as connection:
        version = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        columns = [row[1] for row in connection.execute("PRAGMA table_info(units)")]
        return json.loads(version.fetchone()[0]), columns


def test_a_schema_3_run_reads_as_it_is_then_migrates_and_still_reports(tmp_path: Path) -> None:
    db = shutil.copy(BEFORE / "run.sqlite", tmp_path / "run.sqlite")
    shutil.copytree(BEFORE / "collection", tmp_path / "collection")
    assert _schema(db) == (3, [c for c in _schema(db)[1] if c != "site"])
    unit = UnitId(model="tiny-gpt2", layer=1, index=1)
    with RunStore(db) as store:  # read before migrating
        assert store.schema_version == 3
        assert [s.unit for s in store.units()] == [
            unit.model_copy(update={"index": i}) for i in range(3)
        ]
        assert store.status(unit) == "done" and store.result(unit) is not None
        assert store.status(unit.model_copy(update={"site": "blocks.1.hook_mlp_out"})) is None
        before = [r.model_dump_json() for r in store.results()]
        assert store.migrate() == tmp_path / "run.sqlite.v3.bak"
    version, columns = _schema(db)
    assert version >= 4 and "site" in columns
    with RunStore(db) as store:
        assert [r.model_dump_json() for r in store.results()] == before
        assert store.status(unit) == "done"
        assert store.summary()["done"] == 3
    # the migrated run resumes over its collection: 3 done, 2 more
    summary = explain_neurons(tmp_path / "collection", db=db, layers=[1], neurons="0-4")
    assert (summary.done, summary.skipped) == (2, 3)
    out = tmp_path / "report.html"
    result = cli("report", "--db", db, "--out", out)
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8").count("layer 1") >= 5


def test_runs_explain_latents_and_heads_from_a_model_and_from_a_collection(
    model_dir: Path, sae_dir: Path, latents: Collection, tmp_path: Path
) -> None:
    corpus = texts()
    options = {k: v for k, v in COMMON.items() if k != "device"}
    summary = explain_neurons(
        model=model_dir, corpus=corpus, sae=sae_dir, latents=range(2, 6), db=tmp_path / "a.db",
        collect_options=options,
    )  # fmt: skip
    assert (summary.total, summary.done, summary.failed) == (4, 2, 2)
    with RunStore(tmp_path / "a.db") as store:
        # latents 2 and 5 never fire on this corpus: failed as dead, the others went on
        assert [(u.index, why.split(" (")[0]) for u, why in store.failures()] == [
            (2, "DeadUnitError: dead: never activated on the corpus"),
            (5, "DeadUnitError: dead: never activated on the corpus"),
        ]
        assert [f.unit.index for f in summary.failures] == [2, 5]
        units = [s.unit for s in store.units()]
        assert [(u.kind, u.site, u.index) for u in units] == [
            ("sae_latent", "blocks.1.hook_resid_pre", i) for i in range(2, 6)
        ]
        result = store.result(units[1])
        assert result is not None and result.unit == units[1]
    heads = explain_neurons(
        model=model_dir, corpus=corpus, heads=[(0, 1), (1, 2)], db=tmp_path / "h.db",
        collect_options=options,
    )  # fmt: skip
    assert heads.done == 2
    with RunStore(tmp_path / "h.db") as store:
        assert {(s.unit.kind, s.unit.layer, s.unit.index) for s in store.units()} == {
            ("attention_head", 0, 1),
            ("attention_head", 1, 2),
        }
    # a latent collection, explained whole or some of its latents; a neuron is refused
    whole = explain_neurons(latents, db=tmp_path / "c.db", neurons="0-2")
    assert whole.total == 3
    neuron = UnitId(model=latents.meta["model"], layer=1, index=0)
    with pytest.raises(InvalidInputError, match="does not hold"):
        explain_neurons(latents, db=tmp_path / "d.db", units=[neuron])
    with pytest.raises(InvalidInputError, match="give model="):
        explain_neurons(latents, db=tmp_path / "e.db", sae=sae_dir)


# --- the command line ----------------------------------------------------------------------


def test_cli_collects_and_runs_latents_and_heads(
    model_dir: Path, sae_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEURON_EXPLAINER_DISABLE_PLUGINS", "1")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts()), encoding="utf-8")
    small = ("--corpus", corpus, "--split", "line", "--window-length", "8", "--quiet")
    out = tmp_path / "latents"
    result = cli("collect", model_dir, *small, "--out", out, "--sae", sae_dir, "--latents", "0-5")
    assert result.exit_code == 0, result.output
    assert "sae_latent units (6 at blocks.1.hook_resid_pre)" in result.stdout
    assert [u.index for u in Collection(out).units()] == list(range(6))
    result = cli("collect", model_dir, *small, "--out", tmp_path / "heads", "--heads", "1.3,0.1")
    assert result.exit_code == 0, result.output
    assert [(u.layer, u.index) for u in Collection(tmp_path / "heads").units()] == [(0, 1), (1, 3)]

    result = cli("run", out, "--db", tmp_path / "c.db", "--neurons", "3-4", "--quiet")
    assert result.exit_code in (0, 1), result.output
    with RunStore(tmp_path / "c.db") as store:
        assert [(s.unit.kind, s.unit.index) for s in store.units()] == [
            ("sae_latent", 3),
            ("sae_latent", 4),
        ]
    result = cli("run", model_dir, *small, "--db", tmp_path / "m.db", "--sae", sae_dir,
                 "--latents", "3,4")  # fmt: skip
    assert result.exit_code in (0, 1), result.output
    with RunStore(tmp_path / "m.db") as store:
        assert [s.unit.site for s in store.units()] == ["blocks.1.hook_resid_pre"] * 2
    result = cli("run", model_dir, *small, "--db", tmp_path / "h.db", "--heads", "1.2")
    assert result.exit_code in (0, 1), result.output
    with RunStore(tmp_path / "h.db") as store:
        assert [(s.unit.kind, s.unit.layer, s.unit.index) for s in store.units()] == [
            ("attention_head", 1, 2)
        ]


def test_cli_refuses_batch_units_named_wrongly(model_dir: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a b c", encoding="utf-8")
    for command, args, message in (
        ("collect", ["--layers", "1", "--sae", tmp_path], "got --layers, --sae"),
        ("collect", [], "give one of --layers"),
        ("collect", ["--heads", "1-3"], "--heads takes LAYER.HEAD"),
        ("collect", ["--layers", "1", "--latents", "0-3"], "--latents and --hook go with --sae"),
        ("run", ["--db", tmp_path / "x.db", "--heads", "1.x"], "--heads takes LAYER.HEAD"),
        ("run", ["--db", tmp_path / "x.db"], "give one of --layers"),
    ):
        out = ["--out", tmp_path / "out"] if command == "collect" else []
        result = cli(command, model_dir, "--corpus", corpus, *out, *args)
        assert result.exit_code == 2, result.output
        assert message in result.stderr
