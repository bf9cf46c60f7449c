"""The mutable side of one `neuron_explainer.subjects.collect.collect` call: the layer states,
the window files and the checkpoints (layout and protocol in the `collect` module docstring).

`CollectionRun.process` is the per-batch path: one forward pass whose layers are folded into
their `LayerState` as the model makes them.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from neuron_explainer.errors import FormatError
from neuron_explainer.models.loading import LoadedModel
from neuron_explainer.subjects._collect_state import LayerState
from neuron_explainer.subjects._collect_units import UnitCapture, UnitGroup
from neuron_explainer.subjects._state_file import write_safetensors
from neuron_explainer.subjects.capture import ActivationCapture
from neuron_explainer.subjects.collection import (
    FORMAT_VERSION,
    META,
    PROGRESS,
    UNKNOWN_POSITION,
    VOCABULARY,
    WINDOW_IDS,
    WINDOW_LENGTHS,
    WINDOW_POSITIONS,
    state_file,
)
from neuron_explainer.subjects.corpus import Window
from neuron_explainer.subjects.tokens import token_strings

__all__ = ["QUANTILE_METHOD", "CollectionRun"]

QUANTILE_METHOD = "warm-up boundaries, then per-bin bottom-m by window hash"
"""How the quantile samples are drawn, as recorded in ``meta.json``."""

LEGACY_METHOD = "warm-up boundaries, then per-bin reservoirs"
"""``quantile_method`` of sampler 1."""

SAMPLER = 2
"""The sampling scheme, in ``progress.json``: 1 (collections of format 3 and before) decided
quantile samples by running counts and shifted moments by the first batch; 2 keys every
decision by the window id (`neuron_explainer.subjects._collect_state`), so any sharding gives
the same state."""


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


class CollectionRun:
    """The mutable side of one `collect` call: states, window files, checkpoints."""

    def __init__(
        self,
        out: Path,
        config: dict[str, Any],
        config_hash: str,
        loaded: LoadedModel,
        capture: ActivationCapture | UnitCapture,
        fields: dict[str, Any],
        groups: list[UnitGroup] | None = None,
        sizes: dict[str, int] | None = None,
    ) -> None:
        self.out, self.config, self.config_hash = out, config, config_hash
        # batch_size and checkpoint_every: how the work is cut, not part of the config
        self.sizes = sizes or {}
        self.loaded, self.capture, self.fields = loaded, capture, fields
        self.groups = groups or []
        # capture key -> (state key: its folder, the layer keying its sampling, hash lanes)
        self.targets: dict[Any, tuple[str, int, np.ndarray | None]] = {
            layer: (f"layer_{layer}", layer, None) for layer in config["layers"]
        }
        for g, group in enumerate(self.groups):
            for p, part in enumerate(group.parts()):
                key = f"{group.name}/part_{p:05d}"
                self.targets[(g, p)] = (key, group.layer, np.asarray(part, np.int64))
        self.states: dict[str, LayerState] = {}
        self.sampler = SAMPLER  # 1 for a collection an earlier version began (resume)
        # state key -> (moment shift, quantile boundaries) a shard's new states start from
        self.primes: dict[str, tuple[np.ndarray | None, np.ndarray | None]] = {}
        self.windows_done = 0
        self.tokens_done = 0
        self.generation = 0
        self.width: int = config["window_length"]
        self.n_prefix = 1 if config["bos"] == "window" else 0

    def resume(self, progress: dict[str, Any]) -> None:
        """Pick up an unfinished collection from its last checkpoint (one begun by an earlier
        version, sampler 1, is finished with sampler 1: `LegacyLayerState`).

        Raises:
            FormatError: a state or window file is missing or short.
        """
        from safetensors.numpy import load_file

        if int(progress["windows_done"]) > 0:
            self.sampler = int(progress.get("sampler", 1))
        self.windows_done = int(progress["windows_done"])
        self.tokens_done = int(progress["tokens_done"])
        self.generation = int(progress["generation"])
        for key, _, lanes in self.targets.values():
            path = state_file(self.out, key, self.generation)
            try:
                self.states[key] = self._state(load_file(str(path)), lanes)
            except FileNotFoundError as error:
                raise FormatError(f"{path} is missing; pass overwrite=True to restart") from error
        for name, row in ((WINDOW_IDS, 4 * self.width), (WINDOW_LENGTHS, 4)):
            path = self.out / name
            size = self.windows_done * row
            if path.stat().st_size < size:
                raise FormatError(f"{path} is shorter than {self.windows_done} windows")
            os.truncate(path, size)
        self._resume_positions()
        self._drop_other_generations()

    def _resume_positions(self) -> None:
        """Give ``window_positions.i64`` exactly ``windows_done`` rows: cut what a killed run
        wrote past its checkpoint, or add unknown rows where it is short (a collection
        started in format 1 has none); `collect` fills unknown rows as it re-reads the
        windows done."""
        path = self.out / WINDOW_POSITIONS
        row = 16
        have = path.stat().st_size // row if path.exists() else 0
        if have >= self.windows_done:
            os.truncate(path, self.windows_done * row)
            return
        with path.open("r+b" if path.exists() else "wb") as f:
            f.truncate(have * row)
            f.seek(have * row)
            unknown = np.full((self.windows_done - have, 2), UNKNOWN_POSITION, np.int64)
            f.write(unknown.tobytes())

    def _state(self, arrays: dict[str, np.ndarray], lanes: np.ndarray | None) -> LayerState:
        if self.sampler == 1:
            from neuron_explainer.subjects._collect_legacy import LegacyLayerState

            state: LayerState = LegacyLayerState(arrays, self.config["quantile_levels"])
        else:
            state = LayerState(arrays, self.config["quantile_levels"])
        state.lanes = lanes
        return state

    def start(self) -> None:
        if not (self.out / VOCABULARY).exists():
            tokenizer = self.loaded.tokenizer
            strings = token_strings(tokenizer, range(len(tokenizer)))
            _write_json(self.out / VOCABULARY, {"strings": strings})
        self._ids = (self.out / WINDOW_IDS).open("ab")
        self._lengths = (self.out / WINDOW_LENGTHS).open("ab")
        self._positions = (self.out / WINDOW_POSITIONS).open("ab")

    def process(self, batch: list[Window]) -> None:
        """Fold ``batch`` (the windows after those done) and append it to the window files."""
        self.fold(batch, self.windows_done)
        self.record(batch)

    def record(self, batch: list[Window]) -> None:
        """Append ``batch`` to the window files and count it as done."""
        rows = np.zeros((len(batch), self.width), np.uint32)
        lengths = np.zeros(len(batch), np.uint32)
        places = np.zeros((len(batch), 2), np.int64)  # each window's (document, start)
        for b, window in enumerate(batch):
            excerpt = window.excerpt_ids
            rows[b, : len(excerpt)] = excerpt
            lengths[b] = len(excerpt)
            places[b] = (window.document, window.start)
        self._ids.write(rows.tobytes())
        self._lengths.write(lengths.tobytes())
        self._positions.write(places.tobytes())
        self.windows_done += len(batch)
        self.tokens_done += int(lengths.sum())

    def fold(self, batch: list[Window], first: int) -> None:
        """One forward pass over ``batch`` (windows ``first, first + 1, ...``), each layer
        folded into its state as the model makes it."""
        import torch

        longest = max(len(w.input_ids) for w in batch)
        ids = torch.zeros((len(batch), longest), dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        lengths = np.zeros(len(batch), np.uint32)
        for b, window in enumerate(batch):
            ids[b, : len(window.input_ids)] = torch.tensor(window.input_ids)
            mask[b, : len(window.input_ids)] = 1
            lengths[b] = len(window.excerpt_ids)

        def fold(target: Any, acts: Any) -> None:
            self._fold(target, acts, first, lengths)

        # Each layer is folded as the forward pass makes it, while it is in cache, and is then
        # freed by the model as in a bare forward (no batch of every layer is held).
        self.capture(ids, mask, on_layer=fold)

    def _fold(self, target: Any, acts: Any, first: int, lengths: np.ndarray) -> None:
        # [B, L, N] float32 (L <= Lw) on the model's device, read only up to each window's
        # length. For float32 models it is the model's own tensor, which it still reads: it
        # is never written to.
        values = acts[:, self.n_prefix : self.n_prefix + self.width].float()
        key, layer, lanes = self.targets[target]
        if key not in self.states:
            self.states[key] = self._new_state(values.shape[2], lanes, key)
        self.states[key].update(values, lengths, first, self.config["seed"], layer)

    def flush(self) -> None:
        """Write the window files' buffers out (`window_tokens` reads them)."""
        for handle in (self._ids, self._lengths, self._positions):
            handle.flush()

    def window_tokens(self, window: int) -> tuple[int, ...]:
        """The excerpt ids of ``window``, read back from the window files (after `flush`)."""
        row = np.fromfile(
            self.out / WINDOW_IDS, dtype=np.uint32, count=self.width, offset=4 * self.width * window
        )
        n = int(
            np.fromfile(self.out / WINDOW_LENGTHS, dtype=np.uint32, count=1, offset=4 * window)[0]
        )
        return tuple(int(i) for i in row[:n])

    def close(self) -> None:
        self._ids.close()
        self._lengths.close()
        self._positions.close()

    def _new_state(self, n: int, lanes: np.ndarray | None, key: str = "") -> LayerState:
        c = self.config
        state = LayerState.new(
            n,
            k=c["top_k"],
            r=2 * c["n_random"],
            levels=c["quantile_levels"],
            m=c["n_per_quantile"],
            warmup=c["quantile_warmup"],
            length=self.width,
            firing=lanes is not None,  # latents, heads, directions: firing density
        )
        state.lanes = lanes
        shift, boundaries = self.primes.get(key, (None, None))
        state.prime(shift, boundaries)
        return state

    def checkpoint(self, *, finished: bool) -> None:
        for handle in (self._ids, self._lengths, self._positions):
            handle.flush()
            os.fsync(handle.fileno())
        if finished:
            self.close()
        generation = self.generation + 1

        def write(key: str) -> None:
            path = state_file(self.out, key, generation)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            write_safetensors(tmp, self.states[key].stored())  # streamed: no whole-file copy
            os.replace(tmp, path)

        # a few files at a time: copying into the page cache (and the reservoir's transposes)
        # release the GIL, and one thread left the other cores idle (1.5 s -> 1.0 s, 2 cores)
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            list(pool.map(write, list(self.states)))
        _write_json(self.out / META, self._meta())
        _write_json(
            self.out / PROGRESS,
            {
                "config_hash": self.config_hash,
                "windows_done": self.windows_done,
                "tokens_done": self.tokens_done,
                "generation": generation,
                "finished": finished,
                "sampler": self.sampler,
            },
        )
        self.generation = generation
        self._drop_other_generations()

    def _drop_other_generations(self) -> None:
        for key, _, _ in self.targets.values():
            keep = state_file(self.out, key, self.generation)
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
                str(layer): int(self.states[f"layer_{layer}"].a["top_values"].shape[0])
                for layer in layers
                if f"layer_{layer}" in self.states
            },
            "hook_points": {
                str(layer): self.capture.site.hook_point(layer)
                for layer in layers
                if isinstance(self.capture, ActivationCapture)
            },
            "provenance": {
                **self.fields,
                "model": self.loaded.name,
                "dtype": self.loaded.dtype,
                "device": self.loaded.device,
            },
            "tokenizer": {"class": type(tokenizer).__name__, "vocabulary_size": len(tokenizer)},
            "quantile_method": QUANTILE_METHOD if self.sampler == SAMPLER else LEGACY_METHOD,
            "sampler": self.sampler,
            "reservoir_size": 2 * self.config["n_random"],
            **({"units": self._units_meta()} if self.groups else {}),
        }

    def _units_meta(self) -> dict[str, Any]:
        return {"kind": self.groups[0].kind, "groups": [g.meta() for g in self.groups]}
