"""HFSubject: real tokenizer, random tiny GPT-2, records checked against brute force."""

from __future__ import annotations

import random
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gpt2_tokenizer import gpt2_tokenizer_fixture  # noqa: E402, F401

from neuron_explainer import InvalidInputError, explain_neuron  # noqa: E402
from neuron_explainer.subjects.capture import ActivationCapture  # noqa: E402
from neuron_explainer.subjects.corpus import corpus_from, iter_windows  # noqa: E402
from neuron_explainer.subjects.hf import HFSubject  # noqa: E402
from neuron_explainer.subjects.tokens import token_strings  # noqa: E402

WORDS = "the river city 1999 café report 42 green people shipped years of bridge".split()


def texts(n: int = 40, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) for _ in range(n)]


@pytest.fixture(scope="module")
def model() -> Any:
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64)
    return transformers.GPT2LMHeadModel(config).eval()


def subject(model: Any, tokenizer: Any, **options: Any) -> HFSubject:
    options = {"window_length": 8, "batch_size": 5, "top_k": 12, "n_random": 9, **options}
    return HFSubject(model, texts(), tokenizer=tokenizer, device="cpu", **options)


def brute_force(model: Any, tokenizer: Any, layer: int, neuron: int, **window_args: Any) -> dict:
    """Each window run alone through the model: {excerpt ids: activations}."""
    capture = ActivationCapture(model, [layer])
    out = {}
    for window in iter_windows(corpus_from(texts()), tokenizer, **window_args):
        acts = capture(torch.tensor([window.input_ids]))[layer][0, :, neuron]
        out[window.excerpt_ids] = acts[window.n_prefix :].tolist()
    return out


def test_records_match_running_each_window_alone(model: Any, gpt2_tokenizer: Any) -> None:
    records = subject(model, gpt2_tokenizer).neuron_records(1, [3, 7])
    for neuron in (3, 7):
        truth = brute_force(model, gpt2_tokenizer, 1, neuron, length=8)
        record = records[neuron]
        for excerpt in (*record.top_records, *record.random_sample):
            assert excerpt.token_ids in truth
            assert excerpt.activations == pytest.approx(truth[excerpt.token_ids], abs=1e-5)
            assert list(excerpt.tokens) == token_strings(gpt2_tokenizer, excerpt.token_ids)
        ranked = sorted(truth.items(), key=lambda kv: -max(kv[1]))[:12]
        assert [r.token_ids for r in record.top_records] == [ids for ids, _ in ranked]
        assert not {r.token_ids for r in record.top_records} & {
            r.token_ids for r in record.random_sample
        }
        assert len(record.random_sample) == 9


def test_provenance_and_units(model: Any, gpt2_tokenizer: Any) -> None:
    subj = subject(model, gpt2_tokenizer, dtype="float64")
    record = subj.neuron_record(subj.unit(0, 5))
    assert record.unit.layer == 0 and record.unit.index == 5 and record.unit.kind == "mlp_neuron"
    prov = record.provenance
    assert prov.hook_point == "transformer.h.0.mlp.act:output"
    assert (prov.window_length, prov.bos_policy, prov.dtype, prov.device) == (
        8,
        "none",
        "float64",
        "cpu",
    )
    assert prov.dataset == subj.corpus.name
    assert record.mean is not None and record.variance is not None and record.variance > 0


def test_window_bos_is_context_only(model: Any, gpt2_tokenizer: Any) -> None:
    record = subject(model, gpt2_tokenizer, bos="window").neuron_records(1, [3])[3]
    truth = brute_force(model, gpt2_tokenizer, 1, 3, length=8, bos="window")
    for excerpt in record.top_records:
        assert 50256 not in excerpt.token_ids
        assert excerpt.activations == pytest.approx(truth[excerpt.token_ids], abs=1e-5)


def test_out_of_range_and_empty_inputs_are_clear(model: Any, gpt2_tokenizer: Any) -> None:
    with pytest.raises(InvalidInputError, match=r"neuron index\(es\) \[128\] out of range"):
        subject(model, gpt2_tokenizer).neuron_records(0, [128])
    with pytest.raises(InvalidInputError, match=r"layer\(s\) \[2\] out of range"):
        subject(model, gpt2_tokenizer).neuron_records(2, [0])
    empty = HFSubject(model, ["", "  "], tokenizer=gpt2_tokenizer, device="cpu")
    with pytest.raises(InvalidInputError, match="yields no windows"):
        empty.neuron_records(0, [0])


def test_explain_neuron_records_a_model_over_a_corpus(model: Any, gpt2_tokenizer: Any) -> None:
    result = explain_neuron(
        model,
        layer=1,
        neuron=3,
        corpus=texts(),
        subject_options={
            "tokenizer": gpt2_tokenizer,
            "window_length": 8,
            "top_k": 12,
            "n_random": 9,
            "device": "cpu",
        },
    )
    assert result.unit.layer == 1 and result.unit.index == 3
    assert result.provenance.hook_point == "transformer.h.1.mlp.act:output"
    assert result.split_plan.n_top_per_split == 3 and result.split_plan.n_random_per_split == 3
    assert result.split_plan.quantile is not None
    assert len(result.split_plan.quantile["valid"]) == 5  # the default levels cut 5 bins
    assert result.explanation.text
    windows = iter_windows(corpus_from(texts()), gpt2_tokenizer, length=8)
    table = {(w.document, w.start): w.excerpt_ids for w in windows}
    for sequence in result.scored.sequences:  # the scored excerpts name their windows
        window = sequence.record.window_id
        assert window is not None
        assert sequence.record.token_ids == table[window.document, window.start]


def test_probe_reads_new_text_as_a_recording_reads_the_corpus(
    model: Any, gpt2_tokenizer: Any
) -> None:
    subj = subject(model, gpt2_tokenizer, bos="window")
    unit = subj.unit(1, 3)
    texts_ = ["the river city shipped 42 green people over the bridge", "1999 café"]
    probe = subj.probe(unit)
    import asyncio

    records = asyncio.run(probe(texts_))
    assert len(records) == 2
    windows = list(iter_windows(corpus_from(texts_), gpt2_tokenizer, length=8, bos="window"))
    capture = ActivationCapture(model, [1])
    for record, text in zip(records, texts_, strict=True):
        first = next(w for w in windows if w.document == texts_.index(text))
        acts = capture(torch.tensor([first.input_ids]))[1][0, :, 3][first.n_prefix :]
        assert record.token_ids == first.excerpt_ids  # the text's first window, BOS as recorded
        assert record.activations == pytest.approx(acts.tolist(), abs=1e-5)
        assert list(record.tokens) == token_strings(gpt2_tokenizer, first.excerpt_ids)
        assert record.window_id is None  # a probe's text is no window of the corpus
    assert len(records[0].tokens) == 8 and len(records[1].tokens) < 8
    assert subj._tokens_read == 0  # probing is not recording: no progress counted
    with pytest.raises(InvalidInputError, match="have no token"):
        asyncio.run(probe(["fine", ""]))
    assert asyncio.run(probe([])) == []


def test_explain_neuron_lets_the_explainer_test_sentences_on_the_model(
    model: Any, gpt2_tokenizer: Any
) -> None:
    from neuron_explainer.explainers.llm import LLMExplainer
    from neuron_explainer.testing import MockSimulator, ScriptedLLM

    llm = ScriptedLLM("m", ["rivers.", "the river flows\nno water here\n", "bridges over rivers."])
    simulator = MockSimulator(
        lambda explanation, tokens: [
            9.0 if t.strip() in explanation.text else float(i % 2) for i, t in enumerate(tokens)
        ]
    )
    result = explain_neuron(
        model,
        layer=1,
        neuron=3,
        corpus=texts(),
        subject_options={"tokenizer": gpt2_tokenizer, "device": "cpu", "window_length": 8},
        explainer=LLMExplainer(llm),
        simulator=simulator,
        revise=True,
        test_sentences=2,
    )
    note = result.explanation.data["revision"]
    assert isinstance(note, dict) and isinstance(note["tests"], dict)
    sentences = note["tests"]["sentences"]
    assert isinstance(sentences, list)
    assert [s["text"] for s in sentences] == ["the river flows", "no water here"]  # type: ignore[index]
    assert all(isinstance(s["true_max"], int) for s in sentences)  # type: ignore[index]
    assert "Write 2 new sentences" in llm.requests[1].messages[-1].content


def test_concurrent_probes_of_one_model_do_not_stop_each_other(
    model: Any, gpt2_tokenizer: Any
) -> None:
    import asyncio

    subj = subject(model, gpt2_tokenizer)
    texts_ = [f"the river {word} city report" for word in WORDS]

    async def both() -> list[Any]:
        return await asyncio.gather(
            *(subj.probe(subj.unit(layer, 3))(texts_) for layer in (0, 1, 0, 1))
        )

    first, second, third, fourth = asyncio.run(both())
    assert [r.activations for r in first] == [r.activations for r in third]
    assert [r.activations for r in second] == [r.activations for r in fourth]
    assert len(first) == len(texts_)
