"""Window ids: every record a subject records over a corpus names its window (document and token
offset), the same through `HFSubject` and a collection, and splits can be checked by identity."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gpt2_tokenizer import write_gpt2_tokenizer  # noqa: E402

from neuron_explainer import ActivationRecord, InvalidInputError, NeuronRecord, WindowId  # noqa: E402
from neuron_explainer.models.loading import load_model  # noqa: E402
from neuron_explainer.records.splits import split_records  # noqa: E402
from neuron_explainer.subjects.collect import collect  # noqa: E402
from neuron_explainer.subjects.collection import Collection  # noqa: E402
from neuron_explainer.subjects.corpus import corpus_from, iter_windows  # noqa: E402
from neuron_explainer.subjects.hf import HFSubject  # noqa: E402

WORDS = (
    "the river city 1999 café report 42 green people shipped years of bridge under night "
    "market Paris quietly seven engines broke while a dog barked at 3 blue stars"
).split()
NEURONS = (0, 5, 17, 64, 127)
SELECTION: dict[str, Any] = {
    "window_length": 8,
    "top_k": 6,
    "n_random": 4,
    "quantile_levels": (0.5, 0.9),
    "n_per_quantile": 3,
    "seed": 3,
}


def texts(n: int = 60) -> list[str]:
    """Made-up documents of 3 to 30 words (several windows each), with an empty and a blank one
    (skipped, but they keep their document index)."""
    rng = random.Random(0)
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) for _ in range(n)]
    return [*docs[:3], "", *docs[3:10], "   ", *docs[10:]]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = write_gpt2_tokenizer(tmp_path_factory.mktemp("tiny-gpt2"))
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64)
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(folder)
    return load_model(folder, device="cpu")


def every_record(record: NeuronRecord) -> list[ActivationRecord]:
    return [
        *record.top_records,
        *record.random_sample,
        *itertools.chain.from_iterable(record.quantile_samples),
    ]


def check_ids(record: NeuronRecord, table: dict[WindowId, tuple[int, ...]]) -> None:
    """Every record names a window of the corpus whose tokens it holds; no window twice."""
    records = every_record(record)
    assert len(records) > len(record.top_records)
    for excerpt in records:
        assert excerpt.window_id is not None
        assert excerpt.token_ids == table[excerpt.window_id]
    shown = [r.window_id for r in (*record.top_records, *record.random_sample)]
    assert len(set(shown)) == len(shown)
    for sample in record.quantile_samples:
        assert len({r.window_id for r in sample}) == len(sample)


@pytest.mark.parametrize("bos", ["none", "document", "window"])
def test_a_window_has_the_same_id_through_hf_subject_and_a_collection(
    loaded: Any, tmp_path: Path, bos: str
) -> None:
    corpus = texts()
    windows = list(iter_windows(corpus_from(corpus), loaded.tokenizer, length=8, bos=bos))  # type: ignore[arg-type]
    table = {WindowId(document=w.document, start=w.start): w.excerpt_ids for w in windows}
    assert len(table) == len(windows)  # distinct windows, distinct ids
    assert {w.document for w in windows}.isdisjoint({3, 11})  # the empty documents
    assert max(w.start for w in windows) > 8  # documents of several windows

    collection = collect(
        loaded,
        corpus,
        out_dir=tmp_path,
        layers=[1],
        bos=bos,
        batch_size=5,
        quantile_warmup=20,
        **SELECTION,
    )
    assert [collection.window_id(w) for w in range(collection.windows_done)] == list(table)
    subject = HFSubject(loaded, corpus, bos=bos, batch_size=7, **SELECTION)  # type: ignore[arg-type]
    recorded = subject.neuron_records(1, NEURONS)

    shared = 0
    for neuron in NEURONS:
        streamed, in_memory = collection.neuron_record(1, neuron), recorded[neuron]
        check_ids(streamed, table)
        check_ids(in_memory, table)
        ids = {r.token_ids: r.window_id for r in every_record(streamed)}
        for excerpt in every_record(in_memory):
            if excerpt.token_ids in ids:  # the same window, whichever path chose it
                assert ids[excerpt.token_ids] == excerpt.window_id
                shared += 1
        top = {r.window_id for r in streamed.top_records}
        assert len(top & {r.window_id for r in in_memory.top_records}) >= len(top) // 2
    assert shared >= 3 * len(NEURONS)


def test_a_collected_record_splits_into_windows_no_two_splits_share(
    loaded: Any, tmp_path: Path
) -> None:
    collection = collect(
        loaded, texts(), out_dir=tmp_path, layers=[0], batch_size=5, quantile_warmup=20, **SELECTION
    )
    for neuron in NEURONS:
        record = collection.neuron_record(0, neuron)
        splits = split_records(record)
        held = [splits.held_out(name) for name in ("calibration", "valid", "test")]
        assert all(len(h.quantile) == len(record.quantile_samples) == 3 for h in held)
        assert sum(len(h.quantile_records) for h in held) > 0
        total = len(splits.train) + sum(len(h.all_records) for h in held)
        assert splits.check_disjoint() == total
        train = splits.windows("train")
        for h, name in zip(held, ("calibration", "valid", "test"), strict=True):
            assert {r.window_id for r in h.quantile_records} <= splits.windows(name)
            assert not train & splits.windows(name)


def test_a_resumed_collection_refuses_windows_that_moved(loaded: Any, tmp_path: Path) -> None:
    """The same tokens at other places (a document added in front, empty: skipped, yet it takes
    an index) would give the windows other ids: resuming refuses, as for changed text."""

    class Stop(Exception):
        pass

    def stop(done: int) -> None:
        if done >= 25:
            raise Stop

    options = {"layers": [0], "batch_size": 5, "checkpoint_every": 10, **SELECTION}
    with pytest.raises(Stop):
        collect(loaded, texts(), out_dir=tmp_path, progress=stop, **options)
    with pytest.raises(
        InvalidInputError, match=r"window 0 .* document 1, not token 0 of document 0"
    ):
        collect(loaded, ["", *texts()], out_dir=tmp_path, **options)
    resumed = collect(loaded, texts(), out_dir=tmp_path, **options)
    assert resumed.finished and resumed.window_id(0) == WindowId(document=0, start=0)
    assert Collection(tmp_path).window_id(resumed.windows_done - 1) is not None


def test_explain_from_a_model_selects_the_windows_a_collection_selects(
    loaded: Any, tmp_path: Path
) -> None:
    """`HFSubject` (the path of `explain_neuron(model, ...)`) chooses top, random and quantile
    windows as `collect` does, keyed by window id (issue 19): one batch per window on both
    paths, so the activations are bit-identical too."""
    corpus = texts()
    options = {**SELECTION, "batch_size": 1, "quantile_warmup": 20}
    collection = collect(loaded, corpus, out_dir=tmp_path, layers=[1], **options)
    subject = HFSubject(loaded, corpus, **options)
    several = subject.neuron_records(1, NEURONS)
    for neuron in NEURONS:
        streamed = collection.neuron_record(1, neuron)
        one = subject.neuron_records(1, [neuron])[neuron]  # explain_neuron's one-unit pass
        for got in (several[neuron], one):
            assert got.top_records == streamed.top_records
            assert got.random_sample == streamed.random_sample
            assert got.quantile_samples == streamed.quantile_samples
            assert got.quantile_boundaries == streamed.quantile_boundaries
            # moments: float32 sums per window over a different width of units (~1e-7)
            assert got.mean == pytest.approx(streamed.mean, rel=1e-6)
            assert got.variance == pytest.approx(streamed.variance, rel=1e-6)
        assert len(streamed.random_sample) == 4 and all(streamed.quantile_samples)
