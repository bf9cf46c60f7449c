"""Streaming collection: brute-force top-k, sampling, moments, kill-and-resume, reader."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gpt2_tokenizer import gpt2_tokenizer_fixture, write_gpt2_tokenizer  # noqa: E402, F401

from neuron_explainer import InvalidInputError, UnitId  # noqa: E402
from neuron_explainer.models.loading import load_model  # noqa: E402
from neuron_explainer.records.building import moments  # noqa: E402
from neuron_explainer.subjects.capture import ActivationCapture  # noqa: E402
from neuron_explainer.subjects.collect import collect  # noqa: E402
from neuron_explainer.subjects.collection import (  # noqa: E402
    Collection,
    CollectionSubject,
    moments_from_sums,
)
from neuron_explainer.subjects.corpus import corpus_from, iter_windows  # noqa: E402
from neuron_explainer.subjects.tokens import token_strings  # noqa: E402

WORDS = (
    "the river city 1999 café report 42 green people shipped years of bridge under night "
    "market Paris quietly seven engines broke while a dog barked at 3 blue stars"
).split()
N_TEXTS = 120
Truth = dict[int, list[np.ndarray]]
COMMON: dict[str, Any] = {
    "layers": [0, 1],
    "device": "cpu",
    "window_length": 8,
    "batch_size": 5,
    "top_k": 6,
    "n_random": 4,
    "quantile_levels": (0.5, 0.9),
    "n_per_quantile": 3,
    "quantile_warmup": 40,
    "checkpoint_every": 10,
    "seed": 3,
}


def texts(n: int = N_TEXTS, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) for _ in range(n)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random GPT-2 and GPT-2's tokenizer saved in one folder."""
    folder = write_gpt2_tokenizer(tmp_path_factory.mktemp("tiny-gpt2"))
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64)
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def loaded(model_dir: Path) -> Any:
    return load_model(model_dir, device="cpu")


@pytest.fixture(scope="module")
def collected(loaded: Any, tmp_path_factory: pytest.TempPathFactory) -> Collection:
    return collect(loaded, texts(), out_dir=tmp_path_factory.mktemp("common"), **COMMON)


@pytest.fixture(scope="module")
def one_by_one(loaded: Any, tmp_path_factory: pytest.TempPathFactory) -> Collection:
    options = {**COMMON, "batch_size": 1}
    return collect(loaded, texts(), out_dir=tmp_path_factory.mktemp("b1"), **options)


@pytest.fixture(scope="module")
def truth(loaded: Any) -> Truth:
    """Every window run alone: {layer: [activations [length, neurons] per window]}."""
    capture = ActivationCapture(loaded.model, [0, 1])
    out: dict[int, list[np.ndarray]] = {0: [], 1: []}
    for window in iter_windows(corpus_from(texts()), loaded.tokenizer, length=8):
        acts = capture(torch.tensor([window.input_ids]))
        for layer in (0, 1):
            out[layer].append(acts[layer][0].float().numpy())
    return out


def state(collection: Collection, layer: int) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    files = sorted((collection.path / f"layer_{layer}").glob("state-*.safetensors"))
    assert len(files) == 1
    return load_file(str(files[0]))


NEURONS = (0, 5, 17, 64, 127)


def check_top(collection: Collection, layer: int, windows: list[np.ndarray], exact: bool) -> None:
    """The collected top windows rank like running each window alone.

    A causal model's first position sees one token only, so windows that start with the same
    token tie exactly when run alone; batched (padded) runs may order such ties differently by
    float noise, so ``exact=False`` accepts any order of windows whose maxes agree to 1e-5.
    """
    for neuron in NEURONS:
        maxes = [float(w[:, neuron].max()) for w in windows]
        ranking = sorted(range(len(windows)), key=lambda w: (-maxes[w], w))[: COMMON["top_k"]]
        chosen = collection.neuron_windows(layer, neuron)["top"]
        if exact:
            assert chosen == ranking
        else:
            assert [maxes[w] for w in chosen] == pytest.approx(
                [maxes[w] for w in ranking], abs=1e-5
            )
        record = collection.neuron_record(layer, neuron)
        for w, excerpt in zip(chosen, record.top_records, strict=True):
            assert excerpt.token_ids == collection.window_tokens(w)
            assert excerpt.activations == pytest.approx(windows[w][:, neuron], abs=1e-5)


@pytest.mark.parametrize("layer", [0, 1])
def test_top_k_equals_brute_force(
    collected: Collection, one_by_one: Collection, truth: Truth, layer: int
) -> None:
    assert collected.windows_done == one_by_one.windows_done == len(truth[layer])
    check_top(one_by_one, layer, truth[layer], exact=True)  # no padding: the very same sums
    check_top(collected, layer, truth[layer], exact=False)


@pytest.mark.parametrize("bos", ["window", "document"])
def test_bos_policies_record_excerpt_positions_only(loaded: Any, tmp_path: Path, bos: str) -> None:
    corpus = texts(30)
    options = {**COMMON, "batch_size": 1, "bos": bos}
    collection = collect(loaded, corpus, out_dir=tmp_path, **options)
    capture = ActivationCapture(loaded.model, [1])
    windows = []
    for window in iter_windows(corpus_from(corpus), loaded.tokenizer, length=8, bos=bos):  # type: ignore[arg-type]
        acts = capture(torch.tensor([window.input_ids]))[1][0, window.n_prefix :]
        windows.append(acts.float().numpy())
        assert collection.window_tokens(len(windows) - 1) == window.excerpt_ids
    check_top(collection, 1, windows, exact=True)
    assert collection.provenance(1).bos_policy == bos


def test_result_does_not_depend_on_batch_size(
    loaded: Any, one_by_one: Collection, truth: Truth, tmp_path: Path
) -> None:
    seven = collect(loaded, texts(), out_dir=tmp_path, **{**COMMON, "batch_size": 7})
    for layer in (0, 1):
        check_top(seven, layer, truth[layer], exact=False)
        a, b = state(one_by_one, layer), state(seven, layer)
        np.testing.assert_array_equal(a["random_windows"], b["random_windows"])
        np.testing.assert_allclose(a["top_values"], b["top_values"], atol=1e-5)
        for neuron in NEURONS:
            x, y = one_by_one.neuron_record(layer, neuron), seven.neuron_record(layer, neuron)
            assert (x.mean, x.variance) == pytest.approx((y.mean, y.variance), rel=1e-4, abs=1e-7)


def test_random_sample_is_disjoint_from_top_and_seeded(
    loaded: Any, collected: Collection, tmp_path: Path
) -> None:
    for layer in (0, 1):
        for neuron in NEURONS:
            chosen = collected.neuron_windows(layer, neuron)
            assert len(chosen["random"]) == COMMON["n_random"]
            assert not set(chosen["random"]) & set(chosen["top"])
            record = collected.neuron_record(layer, neuron)
            assert [r.token_ids for r in record.random_sample] == [
                collected.window_tokens(w) for w in chosen["random"]
            ]
    other = collect(loaded, texts(), out_dir=tmp_path, **{**COMMON, "seed": 4})
    assert not np.array_equal(
        state(other, 0)["random_windows"], state(collected, 0)["random_windows"]
    )


def test_moments_match_building_moments(one_by_one: Collection, truth: Truth) -> None:
    for layer in (0, 1):
        every = np.concatenate(truth[layer])
        for neuron in NEURONS:
            expected = moments(every[:, neuron])
            record = one_by_one.neuron_record(layer, neuron)
            for key, value in expected.items():
                assert value is not None
                # float32 partial sums per batch (accumulated in float64): ~1e-7 relative.
                assert getattr(record, key) == pytest.approx(value, rel=1e-5, abs=1e-7)


def test_quantile_samples_lie_in_their_bins(collected: Collection, truth: Truth) -> None:
    warmup = COMMON["quantile_warmup"]
    for layer in (0, 1):
        for neuron in NEURONS:
            record = collected.neuron_record(layer, neuron)
            head = [float(w[:, neuron].max()) for w in truth[layer][:warmup]]
            expected = np.quantile(head, COMMON["quantile_levels"])
            assert record.quantile_boundaries == pytest.approx(expected, abs=1e-5)
            bounds = [-np.inf, *record.quantile_boundaries, np.inf]
            chosen = collected.neuron_windows(layer, neuron)["quantiles"]
            assert sum(len(s) for s in record.quantile_samples) > 0
            for b, sample in enumerate(record.quantile_samples):
                assert len(sample) <= COMMON["n_per_quantile"]
                assert all(w >= warmup for w in chosen[b])
                for excerpt in sample:
                    assert bounds[b] <= excerpt.max_activation < bounds[b + 1]


def test_records_carry_tokens_and_provenance(
    collected: Collection, loaded: Any, gpt2_tokenizer: Any
) -> None:
    record = CollectionSubject(collected.path).neuron_record(
        UnitId(model=loaded.name, layer=1, index=5)
    )
    assert record == collected.neuron_record(1, 5)
    assert record.unit == UnitId(model=loaded.name, layer=1, index=5)
    for excerpt in (*record.top_records, *record.random_sample):
        assert excerpt.token_ids is not None
        assert list(excerpt.tokens) == token_strings(gpt2_tokenizer, excerpt.token_ids)
    p = record.provenance
    assert (p.model, p.hook_point, p.window_length, p.bos_policy, p.dtype, p.device) == (
        loaded.name,
        "transformer.h.1.mlp.act:output",
        8,
        "none",
        "float32",
        "cpu",
    )
    assert collected.n_neurons(0) == 128
    with pytest.raises(InvalidInputError, match="out of range"):
        collected.neuron_record(0, 128)
    with pytest.raises(InvalidInputError, match="not collected"):
        collected.neuron_record(2, 0)


def test_state_size_does_not_grow_with_the_corpus(
    loaded: Any, collected: Collection, tmp_path: Path
) -> None:
    small = collect(loaded, texts(30), out_dir=tmp_path, **COMMON)
    assert small.windows_done < collected.windows_done
    tree = ("moment_nodes", "moment_node_ids")  # one block per set bit of the window count
    for layer in (0, 1):
        big = state(collected, layer)
        assert {k: v.shape for k, v in state(small, layer).items() if k not in tree} == {
            k: v.shape for k, v in big.items() if k not in tree
        }
        for done, arrays in (
            (small.windows_done, state(small, layer)),
            (collected.windows_done, big),
        ):
            assert arrays["moment_node_ids"].shape[0] == bin(done).count("1")


def test_same_config_is_not_redone_and_other_config_is_refused(
    loaded: Any, collected: Collection
) -> None:
    calls: list[int] = []
    again = collect(loaded, texts(), out_dir=collected.path, progress=calls.append, **COMMON)
    assert calls == []
    assert again.windows_done == collected.windows_done
    with pytest.raises(InvalidInputError, match="overwrite=True"):
        collect(loaded, texts(), out_dir=collected.path, **{**COMMON, "top_k": 5})


def test_overwrite_replaces_a_collection_with_another_config(loaded: Any, tmp_path: Path) -> None:
    collect(loaded, texts(20), out_dir=tmp_path, **COMMON)
    (tmp_path / "notes.txt").write_text("mine")
    again = collect(loaded, texts(20), out_dir=tmp_path, overwrite=True, **{**COMMON, "top_k": 2})
    assert again.config["top_k"] == 2
    assert len(again.neuron_record(1, 3).top_records) == 2
    assert len(list((tmp_path / "layer_1").iterdir())) == 1
    assert (tmp_path / "notes.txt").read_text() == "mine"  # only the collection's files go


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"window_length": 0}, "window_length must be at least 1, got 0"),
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
        ({"top_k": 0}, "top_k must be at least 1, got 0"),
        ({"checkpoint_every": 0}, "checkpoint_every must be at least 1, got 0"),
        ({"n_random": -1}, "n_random must be at least 0, got -1"),
        ({"n_per_quantile": -1}, "n_per_quantile must be at least 0, got -1"),
        ({"seed": -1}, "seed must be at least 0, got -1"),
        ({"quantile_warmup": 0}, "quantile_warmup must be at least 1, got 0"),
        ({"quantile_levels": (0.9, 0.5)}, r"quantile_levels must ascend strictly"),
        ({"quantile_levels": (0.5, 1.0)}, r"within \(0, 1\): \(0\.5, 1\.0\)"),
    ],
)
def test_bad_arguments_are_refused_before_the_model_loads(
    tmp_path: Path, bad: dict[str, Any], message: str
) -> None:
    unloadable = object()  # load_model would refuse it: the arguments are checked first
    with pytest.raises(InvalidInputError, match=message):
        collect(unloadable, texts(3), out_dir=tmp_path / "out", **{**COMMON, **bad})
    assert not (tmp_path / "out").exists()


def _worker(model_dir: Path, out: Path, pause: float, log: Path) -> subprocess.Popen[bytes]:
    # MKL picks its kernels per process; COMPATIBLE makes the forward bitwise reproducible
    # across processes, so the resumed and the uninterrupted states can be compared exactly.
    env = {**os.environ, "MKL_CBWR": "COMPATIBLE"}
    worker = Path(__file__).with_name("_collect_worker.py")
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, str(worker), str(model_dir), str(out), str(N_TEXTS), str(pause)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )


def test_killed_collection_resumes_to_the_same_result(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    log = tmp_path / "worker.log"
    process = _worker(model_dir, out, 0.1, log)
    progress_file = out / "progress.json"
    deadline = time.monotonic() + 120
    try:
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the worker never checkpointed"
            if progress_file.exists():
                progress = json.loads(progress_file.read_text())
                if progress["windows_done"] > 0:
                    break
            time.sleep(0.02)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    killed = json.loads(progress_file.read_text())
    assert not killed["finished"]
    partial = Collection(out)  # a checkpoint can be read before the run finishes
    assert not partial.finished
    assert partial.neuron_record(0, 5).top_records

    reference = tmp_path / "reference"
    # Resume the killed run and, alongside, run another one uninterrupted.
    workers = [_worker(model_dir, folder, 0.0, log) for folder in (out, reference)]
    assert [w.wait(timeout=300) for w in workers] == [0, 0], log.read_text()
    resumed, collected = Collection(out), Collection(reference)
    assert 0 < killed["windows_done"] < collected.windows_done
    assert resumed.finished and collected.finished
    assert resumed.windows_done == collected.windows_done
    assert resumed.tokens_done == collected.tokens_done
    for name in ("window_ids.u32", "window_lengths.u32", "tokens.json"):
        assert (out / name).read_bytes() == (collected.path / name).read_bytes()
    for layer in (0, 1):
        a, b = state(resumed, layer), state(collected, layer)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _feed(state: Any, values: np.ndarray, lengths: np.ndarray, batch: int) -> None:
    """Fold ``values`` [W, Lw, N] into ``state`` in batches of ``batch`` windows."""
    for first in range(0, len(values), batch):
        chunk = values[first : first + batch].copy()
        n = lengths[first : first + batch]
        for b, length in enumerate(n):
            chunk[b, length:] = 0.0
        state.update(torch.from_numpy(chunk), n, first, 11, 2)


def test_layer_state_is_batch_independent_and_samples_each_bin_by_smallest_key() -> None:
    from neuron_explainer.subjects._collect_keys import pair_uniform
    from neuron_explainer.subjects._collect_merge import canonical
    from neuron_explainer.subjects._collect_state import LayerState

    rng = np.random.default_rng(0)
    windows, width, neurons = 90, 4, 6
    values = rng.normal(size=(windows, width, neurons)).astype(np.float32)
    lengths = rng.integers(1, width + 1, size=windows)
    options = {"k": 3, "r": 4, "levels": (0.3, 0.7), "m": 2, "warmup": 13, "length": width}
    states = {}
    for batch in (1, 4, 7, 90):  # the warm-up ends mid-batch for 4 and 7
        state = LayerState.new(neurons, **options)
        _feed(state, values, lengths, batch)
        states[batch] = canonical(state, seed=11, layer=2)
    for batch in (4, 7, 90):  # every array, moments included, bit for bit
        for name, array in states[1].items():
            np.testing.assert_array_equal(array, states[batch][name], err_msg=name)
    a = states[7]
    for n in range(neurons):
        got = moments_from_sums(
            int(a["token_count"][0]), float(a["moment_shift"][n]), a["moment_sums"][n]
        )
        real = np.concatenate([values[w, : lengths[w], n] for w in range(windows)])
        for key, value in moments(real).items():
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
        assert a["moment_shift"][n] == pytest.approx(values[0, : lengths[0], n].mean(), rel=1e-6)

    # Each (neuron, bin) keeps the 2 windows past the warm-up with the smallest keys.
    maxes = np.array([values[w, : lengths[w]].max(axis=0) for w in range(windows)])
    bounds = np.quantile(maxes[:13].astype(np.float64), (0.3, 0.7), axis=0).T
    for n in range(neurons):
        later = np.arange(13, windows)
        bins = (maxes[later, n, None] >= bounds[n]).sum(axis=1)
        keys = pair_uniform((11, 3), later, np.full(later.size, n))
        for b in range(3):
            members = later[bins == b]
            expected = members[np.argsort(keys[bins == b])][:2]
            np.testing.assert_array_equal(
                sorted(w for w in a["quantile_windows"][n, b] if w >= 0), sorted(expected)
            )
            assert a["quantile_counts"][n, b] == members.size
            for slot, w in enumerate(a["quantile_windows"][n, b]):
                if w >= 0:
                    expected_row = np.where(np.arange(width) < lengths[w], values[w, :, n], 0.0)
                    np.testing.assert_array_equal(
                        a["quantile_activations"][n, b, slot], expected_row
                    )


class _Stop(Exception):
    pass


def _stop_after(windows: int) -> Any:
    def progress(done: int) -> None:
        if done >= windows:
            raise _Stop

    return progress


def test_resume_refuses_a_corpus_that_changed(loaded: Any, tmp_path: Path) -> None:
    with pytest.raises(_Stop):
        collect(loaded, texts(), out_dir=tmp_path, progress=_stop_after(25), **COMMON)
    assert json.loads((tmp_path / "progress.json").read_text())["windows_done"] == 20
    changed = texts()
    changed[0] = "a different first document " + changed[0]
    with pytest.raises(InvalidInputError, match=r"window 0 .* tokens differ.*overwrite=True"):
        collect(loaded, changed, out_dir=tmp_path, **COMMON)
    with pytest.raises(InvalidInputError, match="corpus ended"):
        collect(loaded, texts()[:2], out_dir=tmp_path, **COMMON)
    # The unchanged corpus still resumes, to the same result as one uninterrupted run.
    resumed = collect(loaded, texts(), out_dir=tmp_path, **COMMON)
    whole = collect(loaded, texts(), out_dir=tmp_path / "whole", **COMMON)
    for layer in (0, 1):
        a, b = state(resumed, layer), state(whole, layer)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_records_never_repeat_an_excerpt(loaded: Any, tmp_path: Path) -> None:
    # Every document three times: each window's tokens occur three times in the stream.
    corpus = [t for t in texts(40) for _ in range(3)]
    options = {**COMMON, "n_random": 6, "quantile_warmup": 20}
    collection = collect(loaded, corpus, out_dir=tmp_path, **options)
    for layer in (0, 1):
        for neuron in NEURONS:
            record = collection.neuron_record(layer, neuron)
            top = [r.token_ids for r in record.top_records]
            random = [r.token_ids for r in record.random_sample]
            assert len(set(top)) == len(top) > 0
            assert len(set(random)) == len(random) > 0
            assert not set(top) & set(random)
            for sample in record.quantile_samples:
                ids = [r.token_ids for r in sample]
                assert len(set(ids)) == len(ids)
            # The duplicates were collected; only the record drops them.
            windows = collection.neuron_windows(layer, neuron)["top"]
            assert len(windows) == len(top)
    raw = np.array(state(collection, 0)["top_windows"][NEURONS[0]])
    keys = [collection.window_tokens(int(w)) for w in raw if w >= 0]
    assert len(set(keys)) < len(keys)
