"""A collection begun by the version before sampler 2 (tests/data/before_sampler_2, written by
5579ed9) resumes with the sampler it began with and ends as that version ended it."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gpt2_tokenizer import write_gpt2_tokenizer  # noqa: E402

from neuron_explainer.errors import InvalidInputError  # noqa: E402
from neuron_explainer.models.loading import load_model  # noqa: E402
from neuron_explainer.records import NeuronRecord  # noqa: E402
from neuron_explainer.subjects.collect import collect  # noqa: E402
from neuron_explainer.subjects.corpus import corpus_from  # noqa: E402

BEFORE = Path(__file__).parent / "data" / "before_sampler_2"


def _settings() -> Any:
    spec = importlib.util.spec_from_file_location("make_fixtures", BEFORE / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = write_gpt2_tokenizer(tmp_path_factory.mktemp("tiny-gpt2"))
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64)
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(folder)
    return dataclasses.replace(load_model(folder, device="cpu"), name=_settings().MODEL_NAME)


def test_a_sampler_1_collection_resumes_to_what_its_version_would_have_made(
    loaded: Any, tmp_path: Path
) -> None:
    fixture = _settings()
    folder = shutil.copytree(BEFORE / "collection", tmp_path / "collection")
    assert json.loads((folder / "progress.json").read_text())["windows_done"] == 30
    corpus = corpus_from(fixture.texts(), name=fixture.CORPUS_NAME)
    with pytest.raises(InvalidInputError, match="without cluster="):
        collect(loaded, corpus, out_dir=folder, cluster=1, **fixture.COLLECT)
    resumed = collect(loaded, corpus, out_dir=folder, **fixture.COLLECT)
    assert resumed.finished and resumed.meta["sampler"] == 1
    assert "reservoirs" in resumed.meta["quantile_method"]
    lines = (BEFORE / "finished.jsonl").read_text(encoding="utf-8").splitlines()
    for neuron, line in zip(fixture.NEURONS, lines, strict=True):
        want = NeuronRecord.model_validate_json(line)
        got = resumed.neuron_record(1, neuron)
        assert got.top_records == want.top_records
        assert got.random_sample == want.random_sample
        assert got.quantile_samples == want.quantile_samples
        assert got.quantile_boundaries == want.quantile_boundaries
        # the moment sums are added in another grouping (per window, not per batch)
        assert got.mean == pytest.approx(want.mean, rel=1e-9, abs=1e-12)
        assert got.variance == pytest.approx(want.variance, rel=1e-9)
    # a new collection in the same place of course uses sampler 2
    again = collect(loaded, corpus, out_dir=tmp_path / "new", **fixture.COLLECT)
    assert again.meta["sampler"] == 2
