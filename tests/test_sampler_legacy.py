"""A collection begun by the version before sampler 2 (tests/data/before_sampler_2, written by
5579ed9) resumes with the sampler it began with and ends as that version ended it.

The windows after the fixture's checkpoint go through the model again here, on whatever CPU
runs the tests; a float32 forward pass differs in the last bits between CPUs (seen: about 6e-8
between the machine that wrote the fixture and an AVX-512 one), so activations are compared to
1e-6, and two windows whose maxes agree that closely may trade places."""

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
CLOSE = 1e-6  # the forward pass's float noise across CPUs, with room


def _assert_same_records(got: Any, want: Any) -> None:
    """The same records in the same order, up to float noise: each record is the same window
    with activations within `CLOSE`, or a window whose max ties the wanted one within `CLOSE`
    (a near tie that float noise ordered, or sampled, the other way)."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        if g.window_id == w.window_id:
            assert g.tokens == w.tokens
            assert g.activations == pytest.approx(w.activations, abs=CLOSE)
        else:
            assert max(g.activations) == pytest.approx(max(w.activations), abs=CLOSE)


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
        _assert_same_records(got.top_records, want.top_records)
        _assert_same_records(got.random_sample, want.random_sample)
        assert len(got.quantile_samples) == len(want.quantile_samples)
        for got_bin, want_bin in zip(got.quantile_samples, want.quantile_samples, strict=True):
            _assert_same_records(got_bin, want_bin)
        assert got.quantile_boundaries == pytest.approx(want.quantile_boundaries, abs=CLOSE)
        # the moment sums are added in another grouping (per window, not per batch)
        assert got.mean == pytest.approx(want.mean, rel=1e-6, abs=CLOSE * 1e-3)
        assert got.variance == pytest.approx(want.variance, rel=1e-6)
    # a new collection in the same place of course uses sampler 2
    again = collect(loaded, corpus, out_dir=tmp_path / "new", **fixture.COLLECT)
    assert again.meta["sampler"] == 2
