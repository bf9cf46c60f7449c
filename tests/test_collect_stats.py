"""Dead units and firing density of a collection (issue 18): ``Collection.unit_stats()``
against a hand count (the SAE applied to the model's own ``hidden_states``, window by window,
counting the excerpt's tokens above 0), the refusal of a dead unit's record
(``DeadUnitError``), the summary line the CLI prints, and collections written before firing
counts. And the collection config naming the SAE by content, not path: a collection resumes
after its SAE folder moved, and an unfinished collection begun when the hash held the path
(tests/data/sae_path_in_hash, written by commit e8d134a) resumes under its own hash.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from test_collect_units import (  # noqa: E402
    COMMON,
    D_SAE,
    cli,
    latents,
    loaded,
    model_dir,
    sae_dir,
    texts,
    write_sae,
)

from neuron_explainer import DeadUnitError, InvalidInputError, UnitId  # noqa: E402
from neuron_explainer.models.sae import load_sae  # noqa: E402
from neuron_explainer.subjects.collect import collect  # noqa: E402
from neuron_explainer.subjects.collection import Collection  # noqa: E402
from neuron_explainer.subjects.corpus import corpus_from, iter_windows  # noqa: E402

__all__ = ["latents", "loaded", "model_dir", "sae_dir"]  # fixtures of test_collect_units

HERE = Path(__file__).parent
PATH_IN_HASH = HERE / "data" / "sae_path_in_hash"
DEAD = "dead: never activated on the corpus"


def hand_firing_counts(loaded: Any, sae_dir: Path) -> tuple[Any, int]:
    """Each latent's count of excerpt tokens above 0 over the corpus's windows (BOS before
    each window, as the SAE's prepend_bos asks), and the tokens counted."""
    sae = load_sae(sae_dir)
    counts, tokens = np.zeros(D_SAE, np.int64), 0
    for window in iter_windows(corpus_from(texts()), loaded.tokenizer, length=8, bos="window"):
        with torch.inference_mode():
            out = loaded.model(torch.tensor([window.input_ids]), output_hidden_states=True)
            acts = sae.encode(out.hidden_states[1][0], list(range(D_SAE)))
        excerpt = acts[window.n_prefix :].numpy()
        counts += (excerpt > 0).sum(axis=0)
        tokens += excerpt.shape[0]
    return counts, tokens


def test_unit_stats_count_what_fires_and_dead_units_are_refused(
    latents: Collection, loaded: Any, sae_dir: Path
) -> None:
    stats = latents.unit_stats()
    counts, tokens = hand_firing_counts(loaded, sae_dir)
    assert stats.token_count == tokens == latents.tokens_done
    assert stats.firing_counts is not None
    np.testing.assert_array_equal(stats.firing_counts, counts)
    assert stats.density is not None
    np.testing.assert_allclose(stats.density, counts / tokens)
    dead = counts == 0
    assert 0 < dead.sum() < D_SAE  # the corpus leaves some latents dead
    np.testing.assert_array_equal(stats.dead, dead)
    units = latents.units()
    assert stats.units() == units and len(stats) == D_SAE
    assert stats.dead_units() == [units[i] for i in np.flatnonzero(dead)]
    median = np.median(counts[~dead] / tokens) * 100
    text = np.format_float_positional(median, precision=2, fractional=False, trim="-")
    assert stats.summary() == (
        f"{dead.sum()} of {D_SAE} latents are dead; median firing density {text} % "
        f"(of the other {(~dead).sum()})"
    )
    for i, unit in enumerate(units):
        if dead[i]:
            with pytest.raises(DeadUnitError, match=f"^{DEAD} .*{unit.index} at blocks.1"):
                latents.record(unit)
            record = latents.record(unit, allow_dead=True)
            assert all(a == 0 for r in record.top_records for a in r.activations)
            assert stats.max_activation[i] == 0
        else:
            record = latents.record(unit)
            assert stats.max_activation[i] == pytest.approx(record.max_activation)
            assert stats.max_activation[i] > 0


def test_a_collection_without_firing_counts_finds_the_same_dead_units(
    latents: Collection, tmp_path: Path
) -> None:
    old = Path(shutil.copytree(latents.path, tmp_path / "old"))
    for state in old.glob("sae/part_*/state-*.safetensors"):  # as written before the counts
        arrays = safetensors_numpy.load_file(str(state))
        del arrays["firing_counts"]
        safetensors_numpy.save_file(arrays, str(state))
    stats, before = Collection(old).unit_stats(), latents.unit_stats()
    assert stats.firing_counts is None and stats.density is None
    np.testing.assert_array_equal(stats.dead, before.dead)
    np.testing.assert_array_equal(stats.max_activation, before.max_activation)
    n_dead = int(before.dead.sum())
    assert stats.summary() == (
        f"{n_dead} of {D_SAE} latents are dead (never above 0 in their top windows); no firing "
        "densities (the collector counts them for latents, heads and directions, not in older "
        "collections)"
    )
    unit = stats.dead_units()[0]
    with pytest.raises(DeadUnitError, match=f"^{DEAD} \\(its highest activation over"):
        Collection(old).record(unit)


def test_an_mlp_collection_of_the_previous_format_reports_from_its_maxes(
    tmp_path: Path,
) -> None:
    folder = shutil.copytree(HERE / "data" / "before_units" / "collection", tmp_path / "c")
    old = Collection(folder)
    stats = old.unit_stats()
    assert len(stats) == 128 and stats.firing_counts is None
    record = old.neuron_record(1, 5)
    assert stats.max_activation[5] == pytest.approx(record.max_activation)
    np.testing.assert_array_equal(stats.dead, ~(stats.max_activation > 0))
    assert stats.summary().startswith(f"{int(stats.dead.sum())} of 128 neurons ")


def test_the_cli_says_how_many_units_are_dead(
    model_dir: Path, sae_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEURON_EXPLAINER_DISABLE_PLUGINS", "1")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts()), encoding="utf-8")
    small = ("--corpus", corpus, "--split", "line", "--window-length", "8", "--quiet")
    out = tmp_path / "latents"
    result = cli("collect", model_dir, *small, "--out", out, "--sae", sae_dir)
    assert result.exit_code == 0, result.output
    summary = Collection(out).unit_stats().summary()
    assert " of 12 latents are dead; median firing density " in summary
    assert summary in result.stdout.splitlines()
    dead = Collection(out).unit_stats().dead_units()
    picked = ",".join(str(u.index) for u in [*dead[:1], Collection(out).units()[0]])
    result = cli("run", out, "--db", tmp_path / "c.db", "--neurons", picked, "--quiet")
    # the dead latent is recorded as failed, with its reason, but fails no command
    assert result.exit_code == 0, result.output
    assert f"failed: {dead[0]}: DeadUnitError: {DEAD}" in result.stdout
    assert "1 failed, 1 of them dead units (never active: nothing to explain)" in result.stdout
    alive = Collection(out).units()[0]
    assert alive not in dead
    assert summary in result.stdout.splitlines()


# --- the SAE named by content in the config ------------------------------------------------


def test_a_collection_resumes_after_its_sae_moved(
    loaded: Any, sae_dir: Path, latents: Collection, tmp_path: Path
) -> None:
    sae = Path(shutil.copytree(sae_dir, tmp_path / "sae"))
    options = {**COMMON, "latent_chunk": 5}

    def stop(done: int) -> None:
        if done >= 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        collect(loaded, texts(), out_dir=tmp_path / "c", sae=sae, progress=stop, **options)
    config = json.loads((tmp_path / "c" / "meta.json").read_text())["config"]
    assert "path" not in config["units"][0]["extra"]["sae"]
    assert len(config["units"][0]["extra"]["sae"]["sha256"]) == 64
    moved = sae.rename(tmp_path / "moved")
    resumed = collect(loaded, texts(), out_dir=tmp_path / "c", sae=moved, **options)
    assert resumed.finished and resumed.meta["config_hash"] == latents.meta["config_hash"]
    assert resumed.groups[0]["extra"]["sae"]["path"] == str(moved)
    other = write_sae(tmp_path / "other", seed=9)  # another SAE: another config
    with pytest.raises(InvalidInputError, match="another config"):
        collect(loaded, texts(), out_dir=tmp_path / "c", sae=other, **options)


def test_collected_latents_name_their_sae_by_content(latents: Collection) -> None:
    sha = latents.groups[0]["extra"]["sae"]["sha256"]
    units = latents.units()
    assert {u.source for u in units} == {UnitId.content_source(sha)}
    alive = units[int(np.flatnonzero(~latents.unit_stats().dead)[0])]
    older = alive.model_copy(update={"source": None})  # an id written before sources
    assert latents.record(older).top_records == latents.record(alive).top_records
    other = alive.model_copy(update={"source": "sha256:0123456789abcdef"})  # another SAE
    with pytest.raises(InvalidInputError, match="does not hold"):
        latents.record(other)


def test_a_collection_begun_with_the_sae_path_in_its_hash_still_resumes(
    model_dir: Path, tmp_path: Path
) -> None:
    from neuron_explainer.models.loading import load_model

    folder = Path(shutil.copytree(PATH_IN_HASH / "collection", tmp_path / "c"))
    sae = Path(shutil.copytree(PATH_IN_HASH / "sae", tmp_path / "elsewhere" / "sae"))
    before = json.loads((folder / "progress.json").read_text())
    meta = json.loads((folder / "meta.json").read_text())
    assert not before["finished"] and meta["config"]["units"][0]["extra"]["sae"]["path"]
    assert meta["config"]["units"][0]["extra"]["sae"]["path"] != str(sae)
    # the fixture's model: the tiny GPT-2 of model_dir (seed 0), named as the fixture names it
    model = dataclasses.replace(load_model(model_dir, device="cpu"), name="tiny-gpt2")
    corpus = corpus_from(texts(), name="sae-path-in-hash")
    options = {**COMMON, "latent_chunk": 5}
    resumed = collect(model, corpus, out_dir=folder, sae=sae, **options)
    assert resumed.finished and resumed.windows_done > before["windows_done"]
    assert resumed.meta["config_hash"] == before["config_hash"]  # kept: runs name it
    fresh = collect(model, corpus, out_dir=tmp_path / "fresh", sae=sae, **options)
    assert fresh.meta["config_hash"] != before["config_hash"]  # named by content now
    # the resumed collection holds what one uninterrupted pass does (the fixture's first
    # windows were batched by the older library: float32 rounding aside)
    a, b = resumed.unit_stats(), fresh.unit_stats()
    assert a.firing_counts is not None and b.firing_counts is not None
    np.testing.assert_array_equal(a.firing_counts, b.firing_counts)
    assert a.token_count == b.token_count
    for unit in fresh.units():
        got, want = resumed.record(unit, allow_dead=True), fresh.record(unit, allow_dead=True)
        assert [r.window_id for r in got.top_records] == [r.window_id for r in want.top_records]
        for x, y in zip(got.top_records, want.top_records, strict=True):
            np.testing.assert_allclose(x.activations, y.activations, atol=1e-6)
        assert got.mean == pytest.approx(want.mean, rel=1e-6, abs=1e-9)
    again = collect(model, corpus, out_dir=folder, sae=sae, **options)  # finished: kept
    assert again.meta["config_hash"] == before["config_hash"]
    with pytest.raises(InvalidInputError, match="another config"):
        collect(model, corpus, out_dir=folder, sae=sae, **{**options, "top_k": 4})


def test_explain_from_the_model_refuses_a_dead_latent_as_a_collection_does(
    latents: Collection, loaded: Any, sae_dir: Path
) -> None:
    """`HFSubject` (explain_neuron's path) picks a latent's windows as the collection does, and
    refuses a dead latent with the same error."""
    import asyncio

    from neuron_explainer.subjects.hf import HFSubject

    options = {k: v for k, v in COMMON.items() if k != "checkpoint_every"}
    subject = HFSubject(loaded, texts(), sae=sae_dir, **options)
    stats = latents.unit_stats()
    dead, live = stats.dead_units()[0], latents.units()[int(np.flatnonzero(~stats.dead)[0])]
    with pytest.raises(DeadUnitError, match=f"^{DEAD} \\(its highest activation over the corpus"):
        asyncio.run(subject.aneuron_record(subject.latent_unit(dead.index)))
    alone = asyncio.run(subject.aneuron_record(subject.latent_unit(live.index)))
    collected = latents.record(live)
    for got, want in (
        (alone.top_records, collected.top_records),
        (alone.random_sample, collected.random_sample),
    ):
        assert [r.window_id for r in got] == [r.window_id for r in want]
