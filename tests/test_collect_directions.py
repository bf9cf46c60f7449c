"""Directions in collections (issue 18): ``collect(direction=[K, d], hook=SITE)`` records K
units of kind ``direction`` in one pass, each equal to what the single-unit path
(``HFSubject(direction=row, hook=SITE)``) records over the same corpus, and each top record's
activations equal a hand computation: the site's activation, taken from the model's own
``hidden_states`` (float64 in NumPy), dotted with the vector, within atol 1e-5 (the collection
keeps float32; a part's vectors are multiplied at once). The config names the vectors by
their sha256: resuming with other vectors is refused. CLI ``collect``/``run --direction``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

from test_collect_units import (  # noqa: E402
    COMMON,
    D_MODEL,
    SELECTION,
    check_same,
    cli,
    loaded,
    model_dir,
    texts,
)

from neuron_explainer import InvalidInputError, UnitId, explain_neurons  # noqa: E402
from neuron_explainer.runs.store import RunStore  # noqa: E402
from neuron_explainer.subjects.collect import collect  # noqa: E402
from neuron_explainer.subjects.collection import Collection  # noqa: E402
from neuron_explainer.subjects.hf import HFSubject  # noqa: E402

__all__ = ["loaded", "model_dir"]  # module fixtures, shared with test_collect_units

SITE = "blocks.1.hook_resid_pre"
K = 5


@pytest.fixture(scope="module")
def vectors() -> Any:
    rng = np.random.default_rng(3)
    return rng.normal(size=(K, D_MODEL)) / np.sqrt(D_MODEL)


@pytest.fixture(scope="module")
def directions(loaded: Any, vectors: Any, tmp_path_factory: pytest.TempPathFactory) -> Collection:
    # latent_chunk 2: the 5 directions lie in three parts (2, 2, 1)
    out = tmp_path_factory.mktemp("directions")
    return collect(
        loaded, texts(), out_dir=out, direction=vectors, hook=SITE, latent_chunk=2, **COMMON
    )


def hand(loaded: Any, token_ids: Any, vector: Any) -> Any:
    """The site's activation (the input of block 1, GPT-2's hidden_states[1]) of the window's
    tokens, in float64, dotted with ``vector``."""
    with torch.inference_mode():
        out = loaded.model(torch.tensor([list(token_ids)]), output_hidden_states=True)
    return out.hidden_states[1][0].double().numpy() @ vector


def test_every_direction_equals_its_single_unit_record_and_the_hand_computation(
    directions: Collection, loaded: Any, vectors: Any
) -> None:
    assert directions.kind == "direction"
    units = directions.units()
    assert [(u.kind, u.site, u.layer, u.index) for u in units] == [
        ("direction", SITE, 1, i) for i in range(K)
    ]
    meta = directions.groups[0]["extra"]["direction"]
    assert meta["sha256"] == hashlib.sha256(vectors.tobytes()).hexdigest()
    # the units name the whole array as their source (a row's own hash is in its provenance)
    assert {u.source for u in units} == {UnitId.content_source(meta["sha256"])}
    assert (meta["rows"], meta["width"], meta["path"]) == (K, D_MODEL, None)
    for row in range(K):
        subject = HFSubject(
            loaded, texts(), direction=vectors[row], hook=SITE, batch_size=32, **SELECTION
        )
        alone = subject.unit_record(subject.direction_unit())
        record = directions.record(units[row], allow_dead=True)
        check_same(record.model_copy(update={"unit": alone.unit}), alone)
        assert record.unit == units[row]
        for excerpt in record.top_records:
            expected = hand(loaded, excerpt.token_ids, vectors[row])
            np.testing.assert_allclose(excerpt.activations, expected, atol=1e-5)
        facts = record.provenance.extra["unit"]["direction"]
        assert facts["sha256"] == alone.provenance.extra["unit"]["direction"]["sha256"]
        assert (facts["row"], facts["rows"], facts["width"]) == (row, K, D_MODEL)


def test_directions_resume_and_refuse_other_vectors(
    loaded: Any, vectors: Any, directions: Collection, tmp_path: Path
) -> None:
    path = tmp_path / "d.npy"
    np.save(path, vectors)
    options = {**COMMON, "direction": path, "hook": SITE, "latent_chunk": 2}

    def stop(done: int) -> None:
        if done >= 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        collect(loaded, texts(), out_dir=tmp_path / "c", progress=stop, **options)
    moved = tmp_path / "moved.npy"
    path.rename(moved)  # the file's path is not in the config: moving it does not matter
    resumed = collect(loaded, texts(), out_dir=tmp_path / "c", **{**options, "direction": moved})
    assert resumed.finished and resumed.windows_done == directions.windows_done
    assert resumed.meta["config_hash"] == directions.meta["config_hash"]
    for unit in resumed.units():
        a, b = resumed.record(unit, allow_dead=True), directions.record(unit, allow_dead=True)
        assert a.top_records == b.top_records and a.mean == b.mean
    assert resumed.groups[0]["extra"]["direction"]["path"] == str(moved)
    other = vectors.copy()
    other[2, 0] += 1e-9
    with pytest.raises(InvalidInputError, match="another config"):
        collect(loaded, texts(), out_dir=tmp_path / "c", **{**options, "direction": other})
    one = collect(
        loaded, texts(), out_dir=tmp_path / "one", direction=vectors[3], hook=SITE, **COMMON
    )
    assert [u.index for u in one.units()] == [0]
    alone, among = one.record(one.units()[0]), directions.record(directions.units()[3])
    assert [r.window_id for r in alone.top_records] == [r.window_id for r in among.top_records]
    for a, b in zip(alone.top_records, among.top_records, strict=True):
        # one vector alone or with others in a matmul: float32 rounding differs a little
        np.testing.assert_allclose(a.activations, b.activations, atol=1e-6)


def test_collect_refuses_directions_given_wrongly(loaded: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 3, D_MODEL)))
    for options, message in (
        ({"direction": np.ones(D_MODEL)}, "direction= needs hook="),
        ({"layers": [1], "hook": SITE}, "hook= goes with direction= or sae="),
        ({"direction": np.ones(D_MODEL), "layers": [0], "hook": SITE}, "got"),
        ({"direction": bad, "hook": SITE}, r"shape \[2, 3, 32\]"),
        ({"direction": tmp_path / "none.npy", "hook": SITE}, "no direction file"),
        ({"direction": [[1.0, float("nan")]], "hook": SITE}, "NaN"),
        ({"direction": np.ones(D_MODEL), "hook": "blocks.9.hook_resid_pre"}, "layer"),
        ({"direction": np.ones(7), "hook": SITE}, "width 7"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            collect(loaded, texts(3), out_dir=tmp_path / "x", **{**COMMON, **options})


def test_runs_and_the_cli_collect_and_explain_directions(
    model_dir: Path, vectors: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEURON_EXPLAINER_DISABLE_PLUGINS", "1")
    options = {k: v for k, v in COMMON.items() if k != "device"}
    summary = explain_neurons(
        model=model_dir, corpus=texts(), direction=vectors[:2], hook=SITE, db=tmp_path / "a.db",
        collect_options=options,
    )  # fmt: skip
    assert summary.total == 2
    with RunStore(tmp_path / "a.db") as store:
        assert [(s.unit.kind, s.unit.site, s.unit.index) for s in store.units()] == [
            ("direction", SITE, 0),
            ("direction", SITE, 1),
        ]
    path = tmp_path / "d.npy"
    np.save(path, vectors)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts()), encoding="utf-8")
    small = ("--corpus", corpus, "--split", "line", "--window-length", "8", "--quiet")
    out = tmp_path / "c"
    result = cli("collect", model_dir, *small, "--out", out, "--direction", path, "--hook", SITE)
    assert result.exit_code == 0, result.output
    assert f"direction units ({K} at {SITE})" in result.stdout
    assert [u.index for u in Collection(out).units()] == list(range(K))
    result = cli("run", model_dir, *small, "--db", tmp_path / "m.db", "--direction", path,
                 "--hook", SITE, "--neurons", "1,3")  # fmt: skip
    assert result.exit_code in (0, 1), result.output
    with RunStore(tmp_path / "m.db") as store:
        assert [(s.unit.kind, s.unit.index) for s in store.units()] == [
            ("direction", 1),
            ("direction", 3),
        ]
    for args, message in (
        (["--direction", path], "--direction needs --hook"),
        (["--direction", path, "--hook", SITE, "--layers", "1"], "got --layers, --direction"),
    ):
        result = cli("collect", model_dir, *small, "--out", tmp_path / "x", *args)
        assert result.exit_code == 2, result.output
        assert message in result.stderr


def test_a_run_probes_a_single_collected_direction_and_not_a_row_of_several(
    loaded: Any, vectors: Any, directions: Collection, tmp_path: Path
) -> None:
    """Revision's test sentences read a direction's true activations through the run's
    probe: for a collection of one direction it reads the vector; a row of several cannot be
    read by the one-vector subject, so the run has no probe for it (instead of failing)."""
    import asyncio

    from neuron_explainer.runs._sources import Source

    one = collect(loaded, texts(), out_dir=tmp_path / "one", direction=vectors[:1], hook=SITE,
                  **COMMON)  # fmt: skip
    unit = one.units()[0]
    options = {"direction": vectors[:1], "hook": SITE, "device": "cpu"}
    source = Source({}, collection=one, model=loaded, collect_options=options)
    probe = source.probe(unit)
    assert probe is not None
    sentences = ["the river city", "a dog barked at 3 blue stars"]
    got = asyncio.run(probe(sentences))
    for record in got:
        ids = [50256, *record.token_ids] if one.config["bos"] == "window" else record.token_ids
        want = hand(loaded, ids, vectors[0])[-len(record.token_ids) :]
        np.testing.assert_allclose(record.activations, want, atol=1e-5)
    several = Source({}, collection=directions, model=loaded,
                     collect_options={"direction": vectors, "hook": SITE})  # fmt: skip
    assert several.probe(directions.units()[1]) is None
