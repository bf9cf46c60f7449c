"""One streaming pass over a corpus that records every neuron of chosen layers.

`collect` reads the corpus's windows (`iter_windows`, window ``w`` = the ``w``-th window of the
stream), runs them through the model in right-padded batches (`ActivationCapture`), and keeps
for every neuron of every chosen layer a fixed-size state: its memory does not depend on the
corpus size.

* **Top-k**: the ``top_k`` windows with the highest max activation, with their activations.
  Ties keep the earlier window, so the result equals ranking all windows by
  ``(-max, window)`` and does not depend on the batch size (beyond the float noise padding
  adds to the forward pass, which can reorder exact ties such as windows that start with the
  same token: a causal model's first position sees that token only).
* **Random sample**: one reservoir of ``R = 2 * n_random`` windows shared by all neurons
  (Algorithm R). The decision for window ``w`` comes from a stateless hash of
  ``(seed, w)``, so resuming needs no random state. A neuron's record takes the reservoir in
  slot order, skips its own top windows and keeps the first ``n_random``: top and random never
  share a window; a small corpus (or one where many reservoir windows are top windows) can give
  fewer than ``n_random``.
* **Quantile samples** (warm-up method): the per-window max of every neuron is buffered for
  the first ``quantile_warmup`` windows; then each neuron's boundaries are fixed at
  ``quantile_levels`` of those maxes (``numpy.quantile``, linear). Every later window falls in
  one bin per neuron, and each (neuron, bin) keeps a reservoir of ``n_per_quantile`` windows
  (Algorithm R, stateless hash of ``(seed, layer, w, neuron)``). Limits: boundaries describe the
  warm-up windows only (biased when the corpus drifts); warm-up windows are never sampled; a
  corpus shorter than the warm-up gets boundaries from all its windows and empty samples.
* **Moments**: token count and sums of ``(x - c) ** p``, ``p = 1..4``, per neuron, ``c``
  being the neuron's mean over the first batch (a shift against cancellation); each batch's
  partial sums are float32 (relative error ~1e-7, measured against float64 in the tests) and
  are accumulated in float64. Read back as `neuron_explainer.records.building.moments` defines them.
* **Window table**: every window's excerpt ids, appended to a file (disk grows with the corpus,
  4 bytes per token slot; memory does not).

The collector keeps every window, duplicates included; `Collection.neuron_record` drops an
excerpt whose tokens repeat one it already holds (as `build_neuron_record` does), so a record
can hold fewer than ``top_k`` or ``n_random`` excerpts when the corpus repeats text.

Layout of ``out_dir``::

    meta.json                      format, config and its hash, model, layers, neurons per
                                   layer, hook points, provenance fields, tokenizer facts
    progress.json                  windows_done, tokens_done, generation, finished (written last)
    tokens.json                    {"strings": token_strings(tokenizer, [i]) for every id}
    window_ids.u32                 uint32 [windows, window_length], excerpt ids zero-padded
    window_lengths.u32             uint32 [windows], excerpt lengths
    layer_{L}/state-{gen}.safetensors   N = neurons, k = top_k, R = 2 * n_random,
                                   Q = len(quantile_levels), m = n_per_quantile,
                                   W = quantile_warmup, Lw = window_length:
        top_values f32 [N,k], top_windows i64 [N,k] (-1 = empty), both in rank order;
        top_slots i64 [N,k]: where rank r's activations lie in top_activations f32 [N,k,Lw]
        random_windows i64 [R], random_activations f32 [N,R,Lw]
        quantile_boundaries f64 [N,Q] (NaN before warm-up ends), quantile_counts i64 [N,Q+1],
        quantile_windows i64 [N,Q+1,m], quantile_activations f32 [N,Q+1,m,Lw],
        warmup_maxes f32 [W,N]
        moment_shift f64 [N], moment_sums f64 [N,4], token_count i64 [1]

Checkpoints: every ``checkpoint_every`` windows (batches never cross a multiple of it) and at
the end, the window files are flushed and synced, each layer's state is written under a new
generation (temp file + ``os.replace``), then ``meta.json`` and ``progress.json`` (atomically),
and only then older generations are deleted. A restart with the same config resumes from
``progress.json``: window files are truncated to ``windows_done`` rows, the first
``windows_done`` windows are skipped, and the result equals an uninterrupted run bit for bit.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neuron_explainer.errors import FormatError, InvalidInputError
from neuron_explainer.models.loading import LoadedModel, load_model
from neuron_explainer.records.building import DEFAULT_QUANTILE_LEVELS
from neuron_explainer.subjects.capture import ActivationCapture
from neuron_explainer.subjects.collect_state import LayerState
from neuron_explainer.subjects.collection import (
    FORMAT_VERSION,
    META,
    PROGRESS,
    VOCABULARY,
    WINDOW_IDS,
    WINDOW_LENGTHS,
    Collection,
    read_json,
    state_path,
)
from neuron_explainer.subjects.corpus import (
    BOSPolicy,
    Window,
    corpus_from,
    corpus_provenance,
    iter_windows,
)
from neuron_explainer.subjects.tokens import token_strings

__all__ = ["collect"]

QUANTILE_METHOD = "warm-up boundaries, then per-bin reservoirs"


def _config_hash(config: dict[str, Any]) -> str:
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _clear(out_dir: Path) -> None:
    """Remove the files a collection writes (and nothing else)."""
    for name in (PROGRESS, META, VOCABULARY, WINDOW_IDS, WINDOW_LENGTHS):
        (out_dir / name).unlink(missing_ok=True)
    for folder in out_dir.glob("layer_*"):
        if folder.is_dir():
            shutil.rmtree(folder)


def _batches(
    windows: Iterator[Window], start: int, batch_size: int, every: int
) -> Iterator[list[Window]]:
    """Batches of at most ``batch_size`` that never cross a multiple of ``every``."""
    done = start
    while True:
        size = min(batch_size, every - done % every)
        batch = list(itertools.islice(windows, size))
        if not batch:
            return
        done += len(batch)
        yield batch


def _verified_skip(windows: Iterator[Window], run: _Run) -> Iterator[Window]:
    """Skip the windows a resumed run already holds, checking that each one has the token ids
    recorded for it (so a corpus that changed under the same name is caught, not mixed in);
    then yield the rest."""
    done = run.windows_done
    if done:
        width = run.width
        ids = np.memmap(run.out / WINDOW_IDS, dtype=np.uint32, mode="r", shape=(done, width))
        lengths = np.fromfile(run.out / WINDOW_LENGTHS, dtype=np.uint32, count=done)
        for w in range(done):
            window = next(windows, None)
            expected = ids[w, : int(lengths[w])].tolist()
            if window is None or list(window.excerpt_ids) != expected:
                got = "the corpus ended" if window is None else "its tokens differ"
                raise InvalidInputError(
                    f"cannot resume the collection in {run.out}: window {w} was collected "
                    f"from this corpus before, but now {got}; the corpus changed since the "
                    "collection started. Restore it, or pass overwrite=True to start over"
                )
        del ids
    yield from windows


def collect(
    model: str | os.PathLike[str] | LoadedModel | Any,
    corpus: Any,
    *,
    out_dir: str | os.PathLike[str],
    layers: Sequence[int],
    tokenizer: Any = None,
    dtype: str = "float32",
    device: str | None = None,
    window_length: int = 64,
    bos: BOSPolicy = "none",
    min_length: int = 1,
    batch_size: int = 16,
    top_k: int = 40,
    n_random: int = 30,
    quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
    n_per_quantile: int = 5,
    quantile_warmup: int = 1024,
    seed: int = 0,
    checkpoint_every: int = 4096,
    max_windows: int | None = None,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Collection:
    """Collect records of every MLP neuron of ``layers`` in one pass over ``corpus``.

    Args:
        model: anything `load_model` takes, or a `LoadedModel`.
        corpus: anything `corpus_from` takes.
        out_dir: the collection folder (created; layout in the module docstring).
        layers: layers to record, all neurons of each.
        tokenizer, dtype, device: as for `load_model`.
        window_length, bos, min_length: how windows are cut (`iter_windows`).
        batch_size: windows per forward pass; results do not depend on it.
        top_k, n_random, quantile_levels, n_per_quantile: what each record holds.
        quantile_warmup: windows whose maxes fix the quantile boundaries (see module docstring).
        seed: seeds every sampling decision.
        checkpoint_every: windows between checkpoints.
        max_windows: stop after this many windows.
        overwrite: replace a collection in ``out_dir`` made with another config.
        progress: called with the number of windows done after every batch.

    Returns:
        The finished `Collection`. A finished collection with the same config is returned
        without any work; an unfinished one is resumed.

    Raises:
        InvalidInputError: bad arguments, no windows, or ``out_dir`` holds a collection with
            another config (pass ``overwrite=True``).
    """
    for label, value in (
        ("window_length", window_length),
        ("batch_size", batch_size),
        ("top_k", top_k),
        ("checkpoint_every", checkpoint_every),
    ):
        if value < 1:
            raise InvalidInputError(f"{label} must be at least 1, got {value}")
    if n_random < 0 or n_per_quantile < 0 or quantile_warmup < 1 or seed < 0:
        raise InvalidInputError("n_random, n_per_quantile, seed must be >= 0, quantile_warmup >= 1")
    levels = tuple(float(q) for q in quantile_levels)
    if any(not 0.0 < q < 1.0 for q in levels) or list(levels) != sorted(set(levels)):
        raise InvalidInputError(f"quantile_levels must ascend strictly within (0, 1): {levels}")
    loaded = (
        model
        if isinstance(model, LoadedModel)
        else load_model(model, tokenizer=tokenizer, dtype=dtype, device=device)
    )
    source = corpus_from(corpus)
    capture = ActivationCapture(loaded.model, layers)
    fields = corpus_provenance(
        source, length=window_length, bos=bos, min_length=min_length, tokenizer=loaded.tokenizer
    )
    config = {
        "model": loaded.name,
        "dataset": source.name,
        "corpus": fields["extra"]["corpus"],
        "layers": capture.layers,
        "window_length": window_length,
        "bos": bos,
        "min_length": min_length,
        "top_k": top_k,
        "n_random": n_random,
        "quantile_levels": list(levels),
        "n_per_quantile": n_per_quantile,
        "quantile_warmup": quantile_warmup,
        "seed": seed,
        "dtype": loaded.dtype,
        "max_windows": max_windows,
    }
    config_hash = _config_hash(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(out, config, config_hash, loaded, capture, fields)
    if (out / PROGRESS).exists():
        previous = read_json(out / PROGRESS)
        if previous.get("config_hash") != config_hash:
            if not overwrite:
                raise InvalidInputError(
                    f"{out} holds a collection made with another config "
                    f"(hash {previous.get('config_hash')}, now {config_hash}); pass "
                    "overwrite=True to replace it, or use another out_dir"
                )
            _clear(out)
        elif previous.get("finished"):
            return Collection(out)
        else:
            run.resume(previous)
    else:
        _clear(out)
    run.start()
    windows = iter_windows(
        source, loaded.tokenizer, length=window_length, bos=bos, min_length=min_length
    )
    end = max_windows
    stream = itertools.islice(_verified_skip(windows, run), end)
    try:
        for batch in _batches(stream, run.windows_done, batch_size, checkpoint_every):
            run.process(batch)
            if run.windows_done % checkpoint_every == 0:
                run.checkpoint(finished=False)
            if progress is not None:
                progress(run.windows_done)
    except BaseException:
        run.close()
        raise
    if run.windows_done == 0:
        run.close()
        raise InvalidInputError(f"corpus {source.name!r} yields no windows to collect")
    for state in run.states.values():
        state.fix_boundaries(min(run.windows_done, quantile_warmup))
    run.checkpoint(finished=True)
    return Collection(out)


class _Run:
    """The mutable side of one `collect` call: states, window files, checkpoints."""

    def __init__(
        self,
        out: Path,
        config: dict[str, Any],
        config_hash: str,
        loaded: LoadedModel,
        capture: ActivationCapture,
        fields: dict[str, Any],
    ) -> None:
        self.out, self.config, self.config_hash = out, config, config_hash
        self.loaded, self.capture, self.fields = loaded, capture, fields
        self.states: dict[int, LayerState] = {}
        self.windows_done = 0
        self.tokens_done = 0
        self.generation = 0
        self.width: int = config["window_length"]
        self.n_prefix = 1 if config["bos"] == "window" else 0

    def resume(self, progress: dict[str, Any]) -> None:
        from safetensors.numpy import load_file

        self.windows_done = int(progress["windows_done"])
        self.tokens_done = int(progress["tokens_done"])
        self.generation = int(progress["generation"])
        for layer in self.config["layers"]:
            path = state_path(self.out, layer, self.generation)
            try:
                self.states[layer] = self._state(load_file(str(path)))
            except FileNotFoundError as error:
                raise FormatError(f"{path} is missing; pass overwrite=True to restart") from error
        for name, row in ((WINDOW_IDS, 4 * self.width), (WINDOW_LENGTHS, 4)):
            path = self.out / name
            size = self.windows_done * row
            if path.stat().st_size < size:
                raise FormatError(f"{path} is shorter than {self.windows_done} windows")
            os.truncate(path, size)
        self._drop_other_generations()

    def _state(self, arrays: dict[str, np.ndarray]) -> LayerState:
        return LayerState(arrays, self.config["quantile_levels"])

    def start(self) -> None:
        if not (self.out / VOCABULARY).exists():
            tokenizer = self.loaded.tokenizer
            strings = token_strings(tokenizer, range(len(tokenizer)))
            _write_json(self.out / VOCABULARY, {"strings": strings})
        self._ids = (self.out / WINDOW_IDS).open("ab")
        self._lengths = (self.out / WINDOW_LENGTHS).open("ab")

    def process(self, batch: list[Window]) -> None:
        import torch

        longest = max(len(w.input_ids) for w in batch)
        ids = torch.zeros((len(batch), longest), dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        rows = np.zeros((len(batch), self.width), np.uint32)
        lengths = np.zeros(len(batch), np.uint32)
        for b, window in enumerate(batch):
            ids[b, : len(window.input_ids)] = torch.tensor(window.input_ids)
            mask[b, : len(window.input_ids)] = 1
            excerpt = window.excerpt_ids
            rows[b, : len(excerpt)] = excerpt
            lengths[b] = len(excerpt)
        short = [b for b in range(len(batch)) if lengths[b] < self.width]
        padding = None
        if short:
            positions = torch.arange(self.width)[None, :]
            padding = (positions >= torch.from_numpy(lengths.astype(np.int64))[:, None]).reshape(-1)
        n_tokens = int(lengths.sum())
        first = self.windows_done

        def fold(layer: int, acts: Any) -> None:
            self._fold(layer, acts, first, lengths, short, padding, n_tokens)

        # Each layer is folded as the forward pass makes it, while it is in cache, and is then
        # freed by the model as in a bare forward (no batch of every layer is held).
        self.capture(ids, mask, on_layer=fold)
        self._ids.write(rows.tobytes())
        self._lengths.write(lengths.tobytes())
        self.windows_done += len(batch)
        self.tokens_done += n_tokens

    def _fold(
        self,
        layer: int,
        acts: Any,
        first: int,
        lengths: np.ndarray,
        short: list[int],
        padding: Any,
        n_tokens: int,
    ) -> None:
        import torch

        # [B, Lw, N] float32 on the model's device. When it is the model's own tensor (float32
        # models) the model still reads it: only finite values may be written into it, and
        # only at padded positions, which no real position attends to.
        values = acts[:, self.n_prefix : self.n_prefix + self.width].float()
        if values.shape[1] < self.width:
            values = torch.nn.functional.pad(values, (0, 0, 0, self.width - values.shape[1]))
        for b in short:
            values[b, int(lengths[b]) :] = 0.0
        maxes_t = values.amax(dim=1)
        for b in short:  # the max over the window's own tokens
            maxes_t[b] = values[b, : int(lengths[b])].amax(dim=0)
        maxes = maxes_t.cpu().numpy()
        if layer not in self.states:
            self.states[layer] = self._new_state(values.shape[2])
        self.states[layer].update(
            values, maxes, padding, n_tokens, first, self.config["seed"], layer
        )

    def close(self) -> None:
        self._ids.close()
        self._lengths.close()

    def _new_state(self, n: int) -> LayerState:
        c = self.config
        return LayerState.new(
            n,
            k=c["top_k"],
            r=2 * c["n_random"],
            levels=c["quantile_levels"],
            m=c["n_per_quantile"],
            warmup=c["quantile_warmup"],
            length=self.width,
        )

    def checkpoint(self, *, finished: bool) -> None:
        from safetensors.numpy import save_file

        for handle in (self._ids, self._lengths):
            handle.flush()
            os.fsync(handle.fileno())
        if finished:
            self.close()
        generation = self.generation + 1
        for layer, state in self.states.items():
            path = state_path(self.out, layer, generation)
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            save_file({k: np.ascontiguousarray(v) for k, v in state.arrays().items()}, str(tmp))
            os.replace(tmp, path)
        _write_json(self.out / META, self._meta())
        _write_json(
            self.out / PROGRESS,
            {
                "config_hash": self.config_hash,
                "windows_done": self.windows_done,
                "tokens_done": self.tokens_done,
                "generation": generation,
                "finished": finished,
            },
        )
        self.generation = generation
        self._drop_other_generations()

    def _drop_other_generations(self) -> None:
        for layer in self.config["layers"]:
            keep = state_path(self.out, layer, self.generation)
            for path in keep.parent.glob("state-*"):
                if path != keep:
                    path.unlink()

    def _meta(self) -> dict[str, Any]:
        tokenizer = self.loaded.tokenizer
        layers = self.config["layers"]
        return {
            "format": FORMAT_VERSION,
            "config": self.config,
            "config_hash": self.config_hash,
            "model": self.loaded.name,
            "layers": layers,
            "n_neurons": {
                str(layer): int(self.states[layer].a["top_values"].shape[0])
                for layer in layers
                if layer in self.states
            },
            "hook_points": {str(layer): self.capture.site.hook_point(layer) for layer in layers},
            "provenance": {
                **self.fields,
                "model": self.loaded.name,
                "dtype": self.loaded.dtype,
                "device": self.loaded.device,
            },
            "tokenizer": {"class": type(tokenizer).__name__, "vocabulary_size": len(tokenizer)},
            "quantile_method": QUANTILE_METHOD,
            "reservoir_size": 2 * self.config["n_random"],
        }
