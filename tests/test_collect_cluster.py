"""`collect(..., cluster=...)` on a real local Dask cluster (2 worker processes on 127.0.0.1):
the same collection as one process, bit for bit, including after a worker is killed mid-run
and after the driver stops and resumes (issue 19)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
distributed = pytest.importorskip("distributed")

from test_collect import model_dir  # noqa: E402  (the tiny GPT-2 fixture)

from neuron_explainer.cluster.engine import open_cluster  # noqa: E402
from neuron_explainer.subjects.collect import collect  # noqa: E402
from neuron_explainer.subjects.collection import Collection  # noqa: E402

__all__ = ["model_dir"]  # a module fixture of test_collect

WORDS = "the river city 1999 café report 42 green people shipped years of bridge".split()
COMMON: dict[str, Any] = {
    "layers": [0, 1],
    "device": "cpu",
    "window_length": 8,
    "batch_size": 4,
    "top_k": 5,
    "n_random": 4,
    "quantile_levels": (0.5, 0.9),
    "n_per_quantile": 3,
    "quantile_warmup": 24,
    "checkpoint_every": 16,
    "seed": 5,
}


def texts(n: int = 80) -> list[str]:
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 30)))) for _ in range(n)]


@pytest.fixture(scope="module")
def client() -> Any:
    with open_cluster(2) as client:
        yield client


@pytest.fixture(scope="module")
def single(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Collection:
    return collect(model_dir, texts(), out_dir=tmp_path_factory.mktemp("single"), **COMMON)


def _same(a: Collection, b: Collection) -> None:
    assert (a.windows_done, a.tokens_done) == (b.windows_done, b.tokens_done)
    for name in ("window_ids.u32", "window_lengths.u32", "window_positions.i64"):
        assert (a.path / name).read_bytes() == (b.path / name).read_bytes(), name
    for layer in (0, 1):
        for index in range(a.n_neurons(layer)):
            assert a.neuron_record(layer, index) == b.neuron_record(layer, index), (layer, index)


def test_a_cluster_collects_exactly_what_one_process_does(
    model_dir: Path, client: Any, single: Collection, tmp_path: Path
) -> None:
    seen: list[int] = []
    got = collect(
        model_dir, texts(), out_dir=tmp_path, cluster=client, progress=seen.append, **COMMON
    )
    assert got.finished and single.windows_done > COMMON["quantile_warmup"] + 20
    _same(got, single)
    assert seen == sorted(seen) and seen[-1] == single.windows_done
    # both workers took part, each loading the model once
    assert len(client.scheduler_info()["workers"]) == 2


def test_a_killed_worker_loses_nothing_and_a_stopped_driver_resumes(
    model_dir: Path, client: Any, single: Collection, tmp_path: Path
) -> None:
    pids = client.run(os.getpid)
    killed: list[int] = []

    class Stop(Exception):
        pass

    def progress(done: int) -> None:
        if not killed:  # a worker dies while later shards are in flight
            pid = next(iter(pids.values()))
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        elif done >= 40:
            raise Stop

    with pytest.raises(Stop):
        collect(model_dir, texts(), out_dir=tmp_path, cluster=client, progress=progress, **COMMON)
    client.wait_for_workers(2, timeout=180)  # the nanny restarts the killed worker
    assert killed and killed[0] not in client.run(os.getpid).values()
    progress_file = (tmp_path / "progress.json").read_text()
    assert '"finished": false' in progress_file
    resumed = collect(model_dir, texts(), out_dir=tmp_path, cluster=client, **COMMON)
    _same(resumed, single)


def _recording(client: Any, monkeypatch: pytest.MonkeyPatch, events: list[Any]) -> None:
    """Record on ``events`` every shard the driver submits: ``("submitted", first, primes)``."""
    submit = client.submit

    def recording(fn: Any, *args: Any, **kwargs: Any) -> Any:
        if fn.__name__ == "fold_shard":
            _, first, _, primes = args
            events.append(("submitted", first, primes))
        return submit(fn, *args, **kwargs)

    monkeypatch.setattr(client, "submit", recording)


def _recorded_collect(
    model_dir: Path, client: Any, monkeypatch: pytest.MonkeyPatch, out: Path, **options: Any
) -> tuple[Collection, list[Any]]:
    """`collect` on ``client`` with every shard submitted (`_recording`) and every merge
    (``("merged", windows_done)``) on the returned events."""
    events: list[Any] = []
    _recording(client, monkeypatch, events)
    got = collect(
        model_dir, texts(), out_dir=out, cluster=client,
        progress=lambda done: events.append(("merged", done)), **options,
    )  # fmt: skip
    return got, events


def _primed_like_the_merged_state(events: list[Any], out: Path) -> None:
    """The later shards were submitted before any merge, with the boundaries the merged state
    holds; the warm-up shards with none."""
    from safetensors.numpy import load_file

    from neuron_explainer.subjects.collection import state_file

    warmup = COMMON["quantile_warmup"]
    order = [(e[0], e[1]) for e in events]
    later = [i for i, (what, first) in enumerate(order) if what == "submitted" and first >= warmup]
    merged = [i for i, (what, _) in enumerate(order) if what == "merged"]
    assert len(later) >= 2 and later[1] < merged[0], order
    generation = json.loads((out / "progress.json").read_text())["generation"]
    for key in ("layer_0", "layer_1"):
        stored = load_file(str(state_file(out, key, generation)))["quantile_boundaries"]
        assert stored.shape[1] == 2 and not np.isnan(stored).any()
        for what, first, *primes in events:
            if what == "submitted":
                bounds = primes[0][key][1]
                assert bounds is None if first < warmup else np.array_equal(bounds, stored)


def test_later_shards_start_before_the_warm_up_is_merged(
    model_dir: Path,
    client: Any,
    single: Collection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    got, events = _recorded_collect(model_dir, client, monkeypatch, tmp_path, **COMMON)
    _same(got, single)
    _primed_like_the_merged_state(events, tmp_path)


def test_a_driver_stopped_in_the_warm_up_resumes_with_the_same_boundaries(
    model_dir: Path,
    client: Any,
    single: Collection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # checkpoints every 8 windows: the first warm-up shard (0..11) is checkpointed alone (the
    # batch grid is the same as with 16, so the single-process collection still compares)
    options = {**COMMON, "checkpoint_every": 8}

    class Stop(Exception):
        pass

    def stop(done: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        collect(model_dir, texts(), out_dir=tmp_path, cluster=client, progress=stop, **options)
    assert '"windows_done": 12' in (tmp_path / "progress.json").read_text()
    resumed, events = _recorded_collect(model_dir, client, monkeypatch, tmp_path, **options)
    assert events[0][:2] == ("submitted", 12)  # the rest of the warm-up, then the later shards
    _same(resumed, single)
    _primed_like_the_merged_state(events, tmp_path)


def test_a_worker_killed_in_the_warm_up_loses_nothing(
    model_dir: Path,
    client: Any,
    single: Collection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pids = client.run(os.getpid)
    submit, killed = client.submit, []

    def killing(fn: Any, *args: Any, **kwargs: Any) -> Any:
        future = submit(fn, *args, **kwargs)
        if fn.__name__ == "_warmup_maxes" and args[1] > 0 and not killed:  # both warm-up shards out
            pid = next(iter(pids.values()))
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        return future

    monkeypatch.setattr(client, "submit", killing)
    got = collect(model_dir, texts(), out_dir=tmp_path, cluster=client, **COMMON)
    monkeypatch.undo()
    client.wait_for_workers(2, timeout=180)
    assert killed and killed[0] not in client.run(os.getpid).values()
    _same(got, single)


def test_warmup_boundaries_are_those_one_state_fixes() -> None:
    from neuron_explainer.subjects._collect_shards import warmup_boundaries
    from neuron_explainer.subjects._collect_state import LayerState

    levels = (0.1, 0.5, 0.9)
    state = LayerState.new(7, k=2, r=2, levels=levels, m=2, warmup=10, length=3)
    maxes = np.random.default_rng(1).standard_normal((10, 7)).astype(np.float32)
    state.a["warmup_maxes"][:] = maxes
    state.fix_boundaries(10)
    parts = {0: (4, {"s": maxes[:4]}), 8: (2, {"s": maxes[8:]})}
    assert warmup_boundaries(parts, 10, levels) is None  # windows 4..7 missing
    parts[4] = (4, {"s": maxes[4:8]})
    bounds = warmup_boundaries(parts, 10, levels)
    assert bounds is not None
    assert bounds["s"].tobytes() == state.a["quantile_boundaries"].tobytes()
    assert warmup_boundaries({0: (4, {"s": maxes[:4]})}, 10, levels) is None


def test_shards_go_to_gpu_workers_when_the_cluster_has_them() -> None:
    from neuron_explainer.subjects._collect_shards import _gpu_resources

    class Fake:
        def __init__(self, resources: list[dict[str, int]]) -> None:
            self.info = {"workers": {f"w{i}": {"resources": r} for i, r in enumerate(resources)}}

        def scheduler_info(self) -> dict[str, Any]:
            return self.info

    assert _gpu_resources(Fake([{}, {}])) is None
    assert _gpu_resources(Fake([{}, {"GPU": 1}])) == {"GPU": 1}


def test_shard_cuts_fall_on_the_batch_grid() -> None:
    from neuron_explainer.subjects._collect_batches import batch_end
    from neuron_explainer.subjects._collect_shards import _shards, shard_cuts

    cut = shard_cuts(batch_size=4, every=16, warmup=24, workers=2)
    shards = list(_shards(iter(range(70)), 0, cut, 24))  # type: ignore[arg-type]
    edges = [(s.first, s.first + len(s.windows), s.need) for s in shards]
    assert edges == [
        (0, 12, 0), (12, 24, 0), (24, 32, 24), (32, 48, 24), (48, 64, 24), (64, 70, 24),
    ]  # fmt: skip
    grid = {0}
    while max(grid) < 70:
        grid.add(batch_end(max(grid), 4, 16, 24))
    assert {first for first, _, _ in edges} <= grid  # a shard starts where a batch would
    # with the window count known, the windows after the warm-up split into equal shards
    counted = shard_cuts(batch_size=4, every=16, warmup=24, workers=2, total=70)
    balanced = [(s.first, len(s.windows)) for s in _shards(iter(range(70)), 0, counted, 24)]  # type: ignore[arg-type]
    assert balanced == [(0, 12), (12, 12), (24, 12), (36, 12), (48, 12), (60, 10)]
    assert {first for first, _ in balanced} <= grid


def test_cli_collect_on_a_cluster_equals_the_python_single_process_collection(
    model_dir: Path, client: Any, tmp_path: Path
) -> None:
    from typer import testing

    from neuron_explainer.cli import app

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(texts(40)), encoding="utf-8")
    options = ["--layers", "0,1", "--window-length", "8", "--top-k", "5", "--n-random", "4"]
    base = ["collect", str(model_dir), "--corpus", str(corpus), *options, "--batch-size", "4"]
    address = client.scheduler.address
    both = testing.CliRunner().invoke(app, [*base, "--out", str(tmp_path / "x"),
                                            "--cluster", address, "--workers", "2"])  # fmt: skip
    assert both.exit_code != 0 and "not both" in both.output
    result = testing.CliRunner().invoke(
        app, [*base, "--out", str(tmp_path / "cluster"), "--cluster", address]
    )
    assert result.exit_code == 0, result.output
    single = collect(
        model_dir, str(corpus), out_dir=tmp_path / "single", layers=[0, 1], device=None,
        window_length=8, top_k=5, n_random=4, batch_size=4,
    )  # fmt: skip
    _same(Collection(tmp_path / "cluster"), single)
