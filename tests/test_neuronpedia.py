"""Neuronpedia export: upload batches from a run database, the upload route's limits (128
features a batch, 1,024 tokens an excerpt, 512 characters an explanation), sources, scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer import testing as typer_testing

from neuron_explainer import ExplanationResult, UnitId, explain_neuron
from neuron_explainer.cli import app
from neuron_explainer.errors import FormatError, InvalidInputError
from neuron_explainer.formats import (
    NEURONPEDIA_MAX_FEATURES,
    neuronpedia_batches,
    neuronpedia_source,
    write_neuronpedia,
)
from neuron_explainer.records import ActivationRecord
from neuron_explainer.runs import RunStore, explain_neurons, export_neuronpedia
from neuron_explainer.scorers.classification import DetectionScorer
from neuron_explainer.testing import (
    MockExplainer,
    MockSimulator,
    ScriptedLLM,
    number_neuron_record,
)
from neuron_explainer.testing.judges import OracleJudge


@pytest.fixture(scope="module")
def run_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    record = number_neuron_record()
    records = {}
    for index in (0, 4, 9):
        unit = record.unit.model_copy(update={"index": index})
        records[unit] = record.model_copy(update={"unit": unit})
    db = tmp_path_factory.mktemp("np") / "run.db"
    summary = explain_neurons(records=records, db=db)
    assert summary.done == 3
    return db


@pytest.fixture(scope="module")
def result() -> ExplanationResult:
    return explain_neuron(
        number_neuron_record(),
        explainer=MockExplainer("numbers"),
        simulator=MockSimulator.from_keywords(["7", "42"]),
    )


def test_a_run_exports_one_batch_with_explanations_excerpts_and_scores(
    run_db: Path, tmp_path: Path
) -> None:
    paths = export_neuronpedia(run_db, tmp_path, model_id="GPT2-Small")
    assert [p.name for p in paths] == ["gpt2-small_0_0000.json"]
    body = json.loads(paths[0].read_text(encoding="utf-8"))
    assert body["modelId"] == "gpt2-small" and body["source"] == "0"  # MLP neurons: the layer
    with RunStore(run_db) as store:
        results = list(store.results())
    assert [f["index"] for f in body["features"]] == [0, 4, 9]
    for feature, res in zip(body["features"], results, strict=True):
        assert feature["explanations"] == [
            {"text": res.explanation.text, "methodName": None, "modelName": None}
        ]
        assert res.scored is not None
        held_out = res.scored.held_out_records()
        assert [a["tokens"] for a in feature["activations"]] == [list(r.tokens) for r in held_out]
        assert feature["activations"][0]["values"] == pytest.approx(held_out[0].activations)
    scores = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert [s["index"] for s in scores] == [0, 4, 9]
    assert scores[0]["explainer"]["name"] == "token-table"
    assert scores[0]["scores"][0]["name"] == "correlation"
    assert scores[0]["scores"][0]["value"] == pytest.approx(results[0].score)


def test_129_features_make_two_files_of_128_and_1(
    result: ExplanationResult, tmp_path: Path
) -> None:
    many = [
        result.model_copy(update={"unit": result.unit.model_copy(update={"index": i})})
        for i in range(129)
    ]
    paths = write_neuronpedia(many, tmp_path, model_id="m", source="{layer}-res-test")
    bodies = [json.loads(p.read_text()) for p in paths]
    assert [len(b["features"]) for b in bodies] == [NEURONPEDIA_MAX_FEATURES, 1]
    assert [p.name for p in paths] == ["m_0-res-test_0000.json", "m_0-res-test_0001.json"]
    assert bodies[1]["features"][0]["index"] == 128
    assert len((tmp_path / "scores.jsonl").read_text().splitlines()) == 129


def test_an_excerpt_over_1024_tokens_is_refused_naming_the_unit(
    result: ExplanationResult, tmp_path: Path
) -> None:
    long = ActivationRecord(tokens=["a"] * 1025, activations=[0.0] * 1025)
    ok = ActivationRecord(tokens=["a"] * 1024, activations=[0.0] * 1024)
    assert neuronpedia_batches([result], model_id="m", excerpts={result.unit: [ok]})
    with pytest.raises(
        FormatError,
        match=r"layer 0 mlp_neuron 0: excerpt 1 has 1025 tokens.*"
        r"at most 1024.*window length",
    ):
        write_neuronpedia([result], tmp_path, model_id="m", excerpts={result.unit: [ok, long]})
    assert not list(tmp_path.iterdir())  # nothing written


def test_an_explanation_over_512_characters_is_refused_naming_the_unit(
    result: ExplanationResult,
) -> None:
    text = "x" * 513
    wordy = result.model_copy(
        update={"explanation": result.explanation.model_copy(update={"text": text})}
    )
    with pytest.raises(
        FormatError,
        match=r"mlp_neuron 0: the explanation has 513 characters.*"
        r"at most 512: shorten it",
    ):
        neuronpedia_batches([wordy], model_id="m")
    fits = wordy.model_copy(
        update={"explanation": result.explanation.model_copy(update={"text": "x" * 512})}
    )
    assert neuronpedia_batches([fits], model_id="m")[0]["features"][0]["explanations"]


def test_sources_of_units() -> None:
    neuron = UnitId(model="gpt2", layer=5, index=131)
    latent = UnitId(model="gpt2", layer=6, index=3, kind="sae_latent")
    assert neuronpedia_source(neuron) == "5"
    assert neuronpedia_source(latent, "{layer}-RES-jb") == "6-res-jb"
    with pytest.raises(InvalidInputError, match=r"'sae_latent'.*give source="):
        neuronpedia_source(latent)


def test_two_units_on_one_feature_and_several_models_are_refused(
    result: ExplanationResult,
) -> None:
    other_layer = result.model_copy(update={"unit": result.unit.model_copy(update={"layer": 1})})
    with pytest.raises(InvalidInputError, match=r"both be feature 0 of source 'same'"):
        neuronpedia_batches([result, other_layer], model_id="m", source="same")
    latent = result.unit.model_copy(
        update={"kind": "sae_latent", "site": "blocks.0.hook_resid_post"}
    )
    saes = [
        result.model_copy(update={"unit": latent.model_copy(update={"source": f"sha256:{c * 16}"})})
        for c in "ab"
    ]
    with pytest.raises(InvalidInputError, match=r"export the latents of each SAE"):
        neuronpedia_batches(saes, model_id="m", source="0-res")
    assert len(neuronpedia_batches(saes[:1], model_id="m", source="0-res")) == 1
    other_model = result.model_copy(
        update={"unit": result.unit.model_copy(update={"model": "other"})}
    )
    with pytest.raises(InvalidInputError, match="several models"):
        neuronpedia_batches([result, other_model], model_id="m")


def test_classification_scores_are_exported() -> None:
    judged = explain_neuron(
        number_neuron_record(silent_fraction=0.5),
        explainer=MockExplainer("numbers"),
        simulator=MockSimulator.from_keywords(["7"]),
        scorers=[DetectionScorer(ScriptedLLM(default=OracleJudge())), "correlation"],
    )
    from neuron_explainer.formats import neuronpedia_scores

    [entry] = neuronpedia_scores([judged], model_id="m")
    assert [(s["name"], s["kind"]) for s in entry["scores"]] == [
        ("detection", "detection"),
        ("correlation", "correlation"),
    ]
    assert entry["scores"][0]["value"] == pytest.approx(judged.scores["detection"].value.value)


def test_cli_export_neuronpedia(run_db: Path, tmp_path: Path) -> None:
    runner = typer_testing.CliRunner()
    out = tmp_path / "np"
    done = runner.invoke(
        app, ["export", "neuronpedia", str(run_db), "--out", str(out), "--model-id", "gpt2-small"]
    )
    assert done.exit_code == 0, done.output
    assert "gpt2-small_0_0000.json" in done.stdout
    assert (out / "gpt2-small_0_0000.json").is_file() and (out / "scores.jsonl").is_file()
    missing = runner.invoke(
        app,
        ["export", "neuronpedia", str(tmp_path / "none.db"), "--out", str(out), "--model-id", "x"],
    )
    assert missing.exit_code == 2, missing.output
