"""delphi interop: our records written in delphi's latent cache layout and read back, a cache
written by hand the way delphi v0.1.1 writes it, explanation and score files, the import into
records a run explains, and errors that name the file and what to fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gpt2_tokenizer import write_gpt2_tokenizer
from safetensors.numpy import load_file, save_file
from typer import testing as typer_testing

from neuron_explainer.cli import app
from neuron_explainer.errors import FormatError, InvalidInputError
from neuron_explainer.formats import (
    read_delphi_cache,
    read_delphi_explanations,
    read_delphi_scores,
    read_records_jsonl,
    write_delphi_cache,
)
from neuron_explainer.records import ActivationRecord, NeuronRecord, Provenance, UnitId, WindowId
from neuron_explainer.runs import explain_neurons, import_delphi

WORDS = [f"w{i}" for i in range(20)]
MODULE = "layers.2.mlp"


def excerpt(seed: int, fire: float) -> ActivationRecord:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, len(WORDS), 8).tolist()
    values = [fire if i % 3 == 0 else 0.0 for i in ids]  # exact in float32
    return ActivationRecord(
        tokens=[WORDS[i] for i in ids],
        activations=values,
        token_ids=ids,
        window_id=WindowId(document=seed, start=0),
    )


def record(index: int) -> NeuronRecord:
    unit = UnitId(model="tiny-model", layer=2, index=index, kind="sae_latent")
    top = [excerpt(100 * index + k, 8.0 - k) for k in range(3)]
    rnd = [excerpt(100 * index + 50 + k, 0.0) for k in range(4)]
    provenance = Provenance(model="tiny-model", hook_point=MODULE, window_length=8)
    return NeuronRecord(unit=unit, top_records=top, random_sample=rnd, provenance=provenance)


def test_records_round_trip_through_delphis_layout(tmp_path: Path) -> None:
    ours = [record(0), record(5)]
    [path] = write_delphi_cache(ours, tmp_path)
    assert path == tmp_path / MODULE / "0_5.safetensors"
    arrays = load_file(str(path))
    assert arrays["locations"].dtype == np.uint16 and arrays["locations"].shape[1] == 3
    assert arrays["tokens"].shape == (14, 8)  # 7 distinct excerpts a latent
    config = json.loads((tmp_path / MODULE / "config.json").read_text())
    assert config["model_name"] == "tiny-model" and config["cache_ctx_len"] == 8
    back = read_delphi_cache(tmp_path, token_strings=WORDS, top_k=3, n_random=4)
    assert list(back) == [r.unit for r in ours]
    for mine, theirs in zip(ours, back.values(), strict=True):
        assert theirs.provenance.hook_point == MODULE
        strip = {"window_id": None}
        assert [r.model_copy(update=strip) for r in theirs.top_records] == [
            r.model_copy(update=strip) for r in mine.top_records
        ]
        # the random sample is re-drawn from the module's other rows (other latents' too)
        assert len(theirs.random_sample) == 4
        assert not {r.tokens for r in theirs.random_sample} & {r.tokens for r in mine.top_records}
        # lost: the window ids (a row of delphi's table replaces them) and the moments
        assert all(r.window_id is not None and r.window_id.start == 0 for r in theirs.top_records)
    write_delphi_cache([ours[0]], tmp_path / "one")
    [alone] = read_delphi_cache(tmp_path / "one", token_strings=WORDS, n_random=4).values()
    assert {r.tokens for r in alone.random_sample} == {r.tokens for r in ours[0].random_sample}


def write_split(
    folder: Path,
    start: int,
    end: int,
    entries: list[tuple[int, int, int, float]],
    tokens: np.ndarray,
) -> None:
    """A split file exactly as delphi's LatentCache.save_splits writes it."""
    locations = np.array([e[:3] for e in entries], dtype=np.int64).reshape(-1, 3)
    locations[:, 2] -= start
    save_file(
        {
            "locations": locations.astype(np.uint16),
            "activations": np.array([e[3] for e in entries], dtype=np.float16),
            "tokens": tokens,
        },
        str(folder / f"{start}_{end}.safetensors"),
    )


@pytest.fixture
def delphi_cache(tmp_path: Path) -> Path:
    root = tmp_path / "latents"
    folder = root / "layers.3"
    folder.mkdir(parents=True)
    tokens = np.arange(4 * 8, dtype=np.int64).reshape(4, 8) % len(WORDS)
    write_split(folder, 0, 1, [(0, 1, 0, 2.0), (2, 6, 0, 5.0), (3, 6, 1, 1.5)], tokens)
    write_split(folder, 2, 3, [(1, 0, 3, 0.5)], tokens)
    config = {
        "dataset_repo": "EleutherAI/x",
        "dataset_split": "train[:1%]",
        "dataset_name": "",
        "dataset_column": "text",
        "batch_size": 4,
        "cache_ctx_len": 8,
        "n_tokens": 32,
        "n_splits": 2,
        "model_name": "gpt2",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=4))
    return root


def test_a_cache_as_delphi_writes_it_reads_as_records(delphi_cache: Path) -> None:
    records = read_delphi_cache(delphi_cache, token_strings=WORDS, window_length=4, n_random=3)
    assert [(u.layer, u.index, u.kind, u.model) for u in records] == [
        (3, 0, "sae_latent", "gpt2"),
        (3, 1, "sae_latent", "gpt2"),
        (3, 3, "sae_latent", "gpt2"),
    ]
    latent0 = records[UnitId(model="gpt2", layer=3, index=0, kind="sae_latent")]
    assert [r.window_id for r in latent0.top_records] == [
        WindowId(document=2, start=4),
        WindowId(document=0, start=0),
    ]
    top = latent0.top_records[0]
    assert top.activations == (0.0, 0.0, 5.0, 0.0) and top.token_ids == (0, 1, 2, 3)
    assert top.tokens == tuple(WORDS[i] for i in (0, 1, 2, 3))
    assert len(latent0.random_sample) == 3
    assert not {r.window_id for r in latent0.random_sample} & {
        r.window_id for r in latent0.top_records
    }
    values = np.zeros(32)
    values[[1, 22]] = [2.0, 5.0]
    assert latent0.mean == pytest.approx(values.mean())
    assert latent0.variance == pytest.approx(values.var())
    assert latent0.provenance.dataset == "EleutherAI/x (default, train[:1%])"


def test_malformed_caches_name_the_file_and_the_fix(delphi_cache: Path, tmp_path: Path) -> None:
    folder = delphi_cache / "layers.3"
    with pytest.raises(InvalidInputError, match="window_length 3 does not divide"):
        read_delphi_cache(delphi_cache, token_strings=WORDS, window_length=3)
    save_file(
        {"locations": np.zeros((2, 2), np.uint16), "activations": np.zeros(2, np.float16)},
        str(folder / "4_5.safetensors"),
    )
    with pytest.raises(
        FormatError,
        match=r"4_5.safetensors: locations: expected integers of "
        r"shape \[n, 3\]",
    ):
        read_delphi_cache(delphi_cache, token_strings=WORDS)
    (folder / "4_5.safetensors").unlink()
    (folder / "config.json").unlink()
    (folder / "config.json").mkdir()
    with pytest.raises(InvalidInputError, match="holds no delphi module folder"):
        read_delphi_cache(delphi_cache, token_strings=WORDS)
    (folder / "config.json").rmdir()
    (folder / "config.json").write_text('{"model_name": "gpt2"}')
    with pytest.raises(InvalidInputError, match=r"token id 19 is not in the vocabulary"):
        read_delphi_cache(delphi_cache, token_strings=WORDS[:5])


def test_writing_needs_token_ids_and_one_excerpt_length(tmp_path: Path) -> None:
    plain = record(0)
    no_ids = plain.model_copy(
        update={
            "top_records": tuple(
                r.model_copy(update={"token_ids": None}) for r in plain.top_records
            )
        }
    )
    with pytest.raises(
        InvalidInputError, match=r"layer 2 sae_latent 0: .*no token ids.*vocabulary="
    ):
        write_delphi_cache([no_ids], tmp_path)
    assert write_delphi_cache([no_ids], tmp_path, vocabulary={w: i for i, w in enumerate(WORDS)})
    short = ActivationRecord(tokens=["w1"], activations=[1.0], token_ids=[1])
    uneven = plain.model_copy(update={"random_sample": (short,)})
    with pytest.raises(InvalidInputError, match="excerpts of 8 and 1 tokens"):
        write_delphi_cache([uneven], tmp_path)


def test_explanation_and_score_files(tmp_path: Path) -> None:
    explanations = tmp_path / "explanations"
    explanations.mkdir()
    (explanations / "layers.3_latent7.txt").write_bytes(json.dumps("City names").encode())
    (explanations / "layers.3_latent2.txt").write_bytes(json.dumps("Verbs in past tense").encode())
    found = read_delphi_explanations(explanations, model="gpt2")
    assert [(u.layer, u.index, e.text, e.explainer.name) for u, e in found] == [
        (3, 2, "Verbs in past tense", "delphi"),
        (3, 7, "City names", "delphi"),
    ]
    (explanations / "layers.3_latent9.txt").write_text("[1, 2]")
    with pytest.raises(FormatError, match=r"layers.3_latent9.txt: expected a non-empty JSON str"):
        read_delphi_explanations(explanations, model="gpt2")

    scores = tmp_path / "scores"
    (scores / "detection").mkdir(parents=True)
    (scores / "simulation").mkdir()
    example = {"str_tokens": ["a"], "activations": [1.0], "distance": 1, "probability": None}
    examples = [
        {**example, "activating": True, "prediction": True, "correct": True},
        {**example, "activating": True, "prediction": False, "correct": False},
        {**example, "activating": False, "prediction": False, "correct": True},
        {**example, "activating": False, "prediction": None, "correct": None},
    ]
    (scores / "detection" / "layers.3_latent7.txt").write_text(json.dumps(examples))
    (scores / "simulation" / "layers.3_latent7.txt").write_text(json.dumps({"other": 1}))
    [score] = read_delphi_scores(scores, model="gpt2")
    assert (score.scorer, score.unit.index, score.examples, score.judged) == ("detection", 7, 4, 3)
    assert score.accuracy == pytest.approx(2 / 3)
    assert score.balanced_accuracy == pytest.approx((0.5 + 1.0) / 2)
    with pytest.raises(FormatError, match=r"simulation/layers.3_latent7.txt: expected a list"):
        read_delphi_scores(scores, model="gpt2", scorers=["simulation"])
    examples[1]["activating"] = "yes"
    (scores / "detection" / "layers.3_latent7.txt").write_text(json.dumps(examples))
    with pytest.raises(FormatError, match=r"latent7.txt: examples\[1\].activating"):
        read_delphi_scores(scores, model="gpt2")


def test_import_writes_records_a_run_explains(delphi_cache: Path, tmp_path: Path) -> None:
    tokenizer = write_gpt2_tokenizer(tmp_path / "gpt2")
    out = tmp_path / "imported"
    path = import_delphi(delphi_cache, out, tokenizer=str(tokenizer), window_length=4)
    records = read_records_jsonl(out)
    assert path == out / "records.jsonl" and len(records) == 3
    unit = UnitId(model="gpt2", layer=3, index=0, kind="sae_latent")
    assert records[unit].top_records[0].tokens[2] == "#"  # GPT-2's token 2
    assert json.loads((out / "import.json").read_text())["units"] == 3
    summary = explain_neurons(
        records=records,
        db=tmp_path / "run.db",
        units=[unit],
        explain_options={"calibration": "none"},
    )
    assert summary.failed + summary.done == 1

    runner = typer_testing.CliRunner()
    done = runner.invoke(
        app,
        [
            "import",
            "delphi",
            str(delphi_cache),
            "--out",
            str(tmp_path / "c"),
            "--tokenizer",
            str(tokenizer),
        ],
    )
    assert done.exit_code == 0, done.output
    assert len(read_records_jsonl(tmp_path / "c" / "records.jsonl")) == 3
    bad = runner.invoke(app, ["import", "delphi", str(tmp_path / "none"), "--out", str(out)])
    assert bad.exit_code == 2 and "not a folder" in bad.stderr
