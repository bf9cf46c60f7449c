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
* **Moments**: token count and float64 sums of ``(x - c) ** p``, ``p = 1..4``, per neuron,
  ``c`` being the neuron's mean over the first batch (a shift against cancellation). Read
  back as `neuron_explainer.building.moments` defines them.
* **Window table**: every window's excerpt ids, appended to a file (disk grows with the corpus,
  4 bytes per token slot; memory does not).

Windows are not de-duplicated: two windows with identical tokens are two excerpts (unlike
`build_neuron_record`, which keeps identical excerpts once).

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

import functools
import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neuron_explainer.building import DEFAULT_QUANTILE_LEVELS
from neuron_explainer.errors import FormatError, InvalidInputError
from neuron_explainer.subjects.capture import ActivationCapture
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
from neuron_explainer.subjects.models import LoadedModel, load_model
from neuron_explainer.subjects.tokens import token_strings

__all__ = ["collect"]

QUANTILE_METHOD = "warm-up boundaries, then per-bin reservoirs"
_U64 = np.uint64


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer, elementwise on uint64 (wrapping arithmetic)."""
    x = x + _U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    out: np.ndarray = x ^ (x >> _U64(31))
    return out


def stateless_uniform(key: Sequence[int], lanes: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1), one per lane, a pure function of ``key`` and the lane."""
    with np.errstate(over="ignore"):
        h = np.zeros(1, dtype=_U64)
        for part in key:
            h = _mix(h ^ np.array([part], dtype=_U64))
        h = _mix(h ^ lanes.astype(_U64))
    return (h >> _U64(11)).astype(np.float64) * 2.0**-53


@functools.lru_cache(maxsize=4096)
def reservoir_slot(w: int, size: int, seed: int) -> int | None:
    """The reservoir slot window ``w`` takes (Algorithm R), or ``None``: a pure function."""
    if w < size:
        return w
    slot = int(stateless_uniform((seed, 0, w), np.zeros(1, np.int64))[0] * (w + 1))
    return slot if slot < size else None


class _LayerState:
    """The fixed-size state of one layer (arrays named as in the module docstring)."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.a = arrays

    @classmethod
    def new(cls, n: int, k: int, r: int, q: int, m: int, warmup: int, length: int) -> _LayerState:
        return cls(
            {
                "top_values": np.full((n, k), -np.inf, np.float32),
                "top_windows": np.full((n, k), -1, np.int64),
                "top_slots": np.broadcast_to(np.arange(k), (n, k)).copy(),
                "top_activations": np.zeros((n, k, length), np.float32),
                "random_windows": np.full(r, -1, np.int64),
                "random_activations": np.zeros((n, r, length), np.float32),
                "quantile_boundaries": np.full((n, q), np.nan, np.float64),
                "quantile_counts": np.zeros((n, q + 1), np.int64),
                "quantile_windows": np.full((n, q + 1, m), -1, np.int64),
                "quantile_activations": np.zeros((n, q + 1, m, length), np.float32),
                "warmup_maxes": np.zeros((warmup, n), np.float32),
                "moment_shift": np.zeros(n, np.float64),
                "moment_sums": np.zeros((n, 4), np.float64),
                "token_count": np.zeros(1, np.int64),
            }
        )

    def update(
        self, acts: np.ndarray, maxes: np.ndarray, tokens: Any, first: int, seed: int, layer: int
    ) -> None:
        """Fold in a batch of windows ``first .. first + B - 1``: ``acts`` f32 [B, Lw, N]
        (zero beyond each window's length; batch-first as captured, so no transposed copy of the
        whole batch is made), ``maxes`` f32 [B, N], ``tokens`` the torch tensor [T, N] of every
        excerpt token's activations."""
        self._moments(tokens)
        self._top_k(acts, maxes, first)
        r = self.a["random_windows"].shape[0]
        for b in range(maxes.shape[0]):
            w = first + b
            slot = reservoir_slot(w, r, seed)
            if slot is not None:
                self.a["random_windows"][slot] = w
                self.a["random_activations"][:, slot, :] = acts[b].T
            self._quantiles(acts[b], maxes[b], w, seed, layer)

    def _moments(self, tokens: Any) -> None:
        import torch

        a = self.a
        y = tokens.double()
        if a["token_count"][0] == 0:
            a["moment_shift"][:] = y.mean(dim=0).cpu().numpy()
        y.sub_(torch.from_numpy(a["moment_shift"]).to(y.device))
        # In place: fewer float64 temporaries (the moments are this module's largest cost).
        s1 = y.sum(0)
        y2 = y * y
        s2 = y2.sum(0)
        s3 = y.mul_(y2).sum(0)
        s4 = y2.square_().sum(0)
        a["moment_sums"] += torch.stack([s1, s2, s3, s4], dim=1).cpu().numpy()
        a["token_count"][0] += tokens.shape[0]

    def _top_k(self, acts: np.ndarray, maxes: np.ndarray, first: int) -> None:
        """``acts`` [B, Lw, N], ``maxes`` [B, N]."""
        a = self.a
        k = a["top_values"].shape[1]
        beats = (maxes > a["top_values"][:, -1][None, :]).any(axis=0)
        sub = np.flatnonzero(beats)
        if sub.size == 0:
            return
        n_batch = maxes.shape[0]
        values = np.concatenate([a["top_values"][sub], maxes[:, sub].T], axis=1)
        batch_windows = np.broadcast_to(np.arange(first, first + n_batch), (sub.size, n_batch))
        windows = np.concatenate([a["top_windows"][sub], batch_windows], axis=1)
        # Stable sort of the negated values: existing entries (earlier windows) win ties.
        kept = np.argsort(-values, axis=1, kind="stable")[:, :k]
        a["top_values"][sub] = np.take_along_axis(values, kept, axis=1)
        a["top_windows"][sub] = np.take_along_axis(windows, kept, axis=1)
        # Activations stay in their slots; a new entry takes the slot of an evicted one.
        kept_mask = np.zeros(values.shape, bool)
        np.put_along_axis(kept_mask, kept, True, axis=1)
        old_slots = a["top_slots"][sub]
        free = old_slots[~kept_mask[:, :k]]  # row-major: per neuron, in rank order
        slots = np.take_along_axis(
            np.concatenate([old_slots, np.zeros((sub.size, n_batch), np.int64)], axis=1),
            kept,
            axis=1,
        )
        is_new = kept >= k
        slots[is_new] = free  # equal counts per row, both row-major
        a["top_slots"][sub] = slots
        rows, ranks = np.nonzero(is_new)
        neurons = sub[rows]
        # acts[b_i, :, n_i] for each new entry i: shape [entries, Lw].
        a["top_activations"][neurons, slots[rows, ranks]] = acts[kept[rows, ranks] - k, :, neurons]

    def _quantiles(
        self, acts: np.ndarray, maxes: np.ndarray, w: int, seed: int, layer: int
    ) -> None:
        """Window ``w``: ``acts`` [Lw, N], ``maxes`` [N]."""
        a = self.a
        q = a["quantile_boundaries"].shape[1]
        warmup = a["warmup_maxes"].shape[0]
        if q == 0:
            return
        if w < warmup:
            a["warmup_maxes"][w] = maxes
            if w == warmup - 1:
                self.fix_boundaries(warmup)
            return
        m = a["quantile_windows"].shape[2]
        if m == 0:
            return
        neurons = np.arange(maxes.shape[0])
        bins = (maxes[:, None].astype(np.float64) >= a["quantile_boundaries"]).sum(axis=1)
        seen = a["quantile_counts"][neurons, bins]
        u = stateless_uniform((seed, 1 + layer, w), neurons)
        slots = np.where(seen < m, seen, np.floor(u * (seen + 1)).astype(np.int64))
        take = np.flatnonzero(slots < m)
        a["quantile_windows"][take, bins[take], slots[take]] = w
        a["quantile_activations"][take, bins[take], slots[take], :] = acts[:, take].T
        a["quantile_counts"][neurons, bins] += 1

    def fix_boundaries(self, n_windows: int) -> None:
        """Fix the quantile boundaries from the first ``n_windows`` buffered maxes."""
        a = self.a
        if n_windows == 0 or not np.isnan(a["quantile_boundaries"]).any():
            return
        levels = self.levels
        maxes = a["warmup_maxes"][:n_windows].astype(np.float64)
        a["quantile_boundaries"][:] = np.quantile(maxes, levels, axis=0).T

    levels: tuple[float, ...] = ()


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
    stream = itertools.islice(windows, run.windows_done, end)
    for batch in _batches(stream, run.windows_done, batch_size, checkpoint_every):
        run.process(batch)
        if run.windows_done % checkpoint_every == 0:
            run.checkpoint(finished=False)
        if progress is not None:
            progress(run.windows_done)
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
        self.states: dict[int, _LayerState] = {}
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

    def _state(self, arrays: dict[str, np.ndarray]) -> _LayerState:
        state = _LayerState(arrays)
        state.levels = tuple(self.config["quantile_levels"])
        return state

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
        captured = self.capture(ids, mask)
        first = self.windows_done
        valid = (
            torch.arange(self.width)[None, :] < torch.from_numpy(lengths.astype(np.int64))[:, None]
        )
        for layer, acts in captured.items():
            values = acts[:, self.n_prefix : self.n_prefix + self.width].float()
            if values.shape[1] < self.width:
                values = torch.nn.functional.pad(values, (0, 0, 0, self.width - values.shape[1]))
            here = valid.to(values.device)
            values = values.masked_fill(~here[:, :, None], 0.0)
            maxes = values.masked_fill(~here[:, :, None], -torch.inf).amax(dim=1)
            batch_first = values.cpu().numpy()  # [B, Lw, N], no transposed copy
            if layer not in self.states:
                self.states[layer] = self._new_state(batch_first.shape[2])
            self.states[layer].update(
                batch_first, maxes.cpu().numpy(), values[here], first, self.config["seed"], layer
            )
        self._ids.write(rows.tobytes())
        self._lengths.write(lengths.tobytes())
        self.windows_done += len(batch)
        self.tokens_done += int(lengths.sum())

    def close(self) -> None:
        self._ids.close()
        self._lengths.close()

    def _new_state(self, n: int) -> _LayerState:
        c = self.config
        state = _LayerState.new(
            n,
            c["top_k"],
            2 * c["n_random"],
            len(c["quantile_levels"]),
            c["n_per_quantile"],
            c["quantile_warmup"],
            self.width,
        )
        state.levels = tuple(c["quantile_levels"])
        return state

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
            save_file({k: np.ascontiguousarray(v) for k, v in state.a.items()}, str(tmp))
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
