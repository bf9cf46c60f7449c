"""Read neuron records back from a collection written by `collect`.

`Collection` opens a collection folder (layout in `neuron_explainer.subjects.collect`) and
builds one neuron's `NeuronRecord` by reading only that neuron's rows of each array
(``safe_open(...).get_slice(name)[index]``) and only the token ids of the windows the record
shows (a memory map of the window table), so reading a neuron never scans the collection.
`CollectionSubject` serves those records as a `Subject`. Every record carries its
`WindowId` (from ``window_positions.i64``; ``None`` in a collection of format 1).

Importing this module loads neither torch nor transformers.
"""

from __future__ import annotations

import bisect
import json
import math
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from neuron_explainer.errors import FormatError, InvalidInputError
from neuron_explainer.interfaces import Subject
from neuron_explainer.records import (
    ActivationRecord,
    NeuronRecord,
    Provenance,
    UnitId,
    WindowId,
)
from neuron_explainer.results import check_stored_version
from neuron_explainer.subjects._collection_units import (
    UnitStats,
    attended_records,
    read_unit_stats,
    refuse_dead,
    unit_extra,
)
from neuron_explainer.subjects._unit_sources import source_of

__all__ = ["Collection", "CollectionSubject", "UnitStats"]

FORMAT_VERSION = 4
"""The collection format written by `collect` (``meta.json``'s ``"format"``). A reader reads
every format up to its own and refuses a newer one. 1: 0.1.0; 2: ``window_positions.i64``,
each window's place in the corpus, so records carry their `WindowId` (a collection of format
1 reads with window ids ``None``); 3: collections of units that are not MLP neurons (SAE or
transcoder latents, attention heads): ``meta.json``'s ``units`` names their kind, groups
(site, indices, parts) and the SAE's provenance, and each part's state lies in
``{group}/part_{p}/`` (an MLP collection's files are as in format 2); 4: sampler 2, every
sampling decision keyed by the window id (``meta.json``'s ``sampler``; states add
``moment_nodes``, ``moment_node_ids``, ``covered`` and, for units, ``firing_counts``), so an
older version, whose sampler depends on the order windows come in, must not resume it."""
META = "meta.json"
PROGRESS = "progress.json"
VOCABULARY = "tokens.json"
WINDOW_IDS = "window_ids.u32"
WINDOW_LENGTHS = "window_lengths.u32"
WINDOW_POSITIONS = "window_positions.i64"
UNKNOWN_POSITION = -1
"""A ``window_positions.i64`` entry not known (a collection migrated from format 1)."""


def state_file(out_dir: Path, key: str, generation: int) -> Path:
    """The safetensors file of the state ``key`` (``"layer_6"``, ``"sae/part_00000"``) at
    checkpoint ``generation``."""
    return out_dir / key / f"state-{generation:08d}.safetensors"


def state_path(out_dir: Path, layer: int, generation: int) -> Path:
    """The safetensors file holding ``layer``'s state at checkpoint ``generation``."""
    return state_file(out_dir, f"layer_{layer}", generation)


def runs_of(indices: Sequence[int]) -> list[list[int]]:
    """``indices`` as ``[start, stop)`` runs of consecutive integers (compact in JSON)."""
    out: list[list[int]] = []
    for i in indices:
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return out


def from_runs(runs: Sequence[Sequence[int]]) -> list[int]:
    """The indices of `runs_of`'s runs."""
    return [i for start, stop in runs for i in range(int(start), int(stop))]


def check_format(path: Path, version: Any) -> int:
    """The collection format ``version`` (``meta.json``'s ``"format"``) of the folder
    ``path``, checked: every format from 1 to `FORMAT_VERSION` is read as it is.

    Raises:
        FormatError: not a positive integer, or a format newer than `FORMAT_VERSION`.
    """
    return check_stored_version(version, FORMAT_VERSION, f"{path}: collection format")


def add_unknown_positions(folder: Path) -> None:
    """Migrate the collection in ``folder`` from format 1 to 2: write ``window_positions.i64``
    with every position unknown (`UNKNOWN_POSITION`), since they cannot be known without the
    corpus. Its records then read with window ids ``None``, as before; resuming an unfinished
    collection fills the positions in as it re-reads the corpus.

    Raises:
        InvalidInputError: the folder holds no ``progress.json``.
        FormatError: ``progress.json`` is not valid JSON.
    """
    windows = int(read_json(folder / PROGRESS)["windows_done"])
    path = folder / WINDOW_POSITIONS
    tmp = path.with_name(path.name + ".tmp")
    np.full((windows, 2), UNKNOWN_POSITION, np.int64).tofile(tmp)
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise InvalidInputError(f"{path.parent} is not a collection: no {path.name}") from error
    except json.JSONDecodeError as error:
        raise FormatError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise FormatError(f"{path} must hold a JSON object")
    return data


def moments_from_sums(count: int, shift: float, sums: np.ndarray) -> dict[str, float | None]:
    """Mean, population variance, skewness and excess kurtosis from shifted power sums.

    ``sums[p - 1]`` is the sum of ``(x - shift) ** p`` over ``count`` values (same semantics
    as `neuron_explainer.records.building.moments`).
    """
    if count == 0:
        return {"mean": None, "variance": None, "skewness": None, "kurtosis": None}
    s1, s2, s3, s4 = (float(v) / count for v in sums)
    mean = shift + s1
    m2 = max(s2 - s1 * s1, 0.0)
    if m2 == 0.0:
        return {"mean": mean, "variance": 0.0, "skewness": None, "kurtosis": None}
    m3 = s3 - 3 * s1 * s2 + 2 * s1**3
    m4 = s4 - 4 * s1 * s3 + 6 * s1 * s1 * s2 - 3 * s1**4
    return {
        "mean": mean,
        "variance": m2,
        "skewness": m3 / m2**1.5,
        "kurtosis": m4 / m2**2 - 3.0,
    }


class Collection:
    """A collection folder, opened for reading.

    Args:
        path: the ``out_dir`` given to `collect`.

    Raises:
        InvalidInputError: the folder holds no collection (no ``progress.json``).
        FormatError: its files are not in the expected format.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        progress = read_json(self.path / PROGRESS)
        self.meta = read_json(self.path / META)
        self.format_version = check_format(self.path, self.meta.get("format"))
        self.windows_done: int = int(progress["windows_done"])
        self.tokens_done: int = int(progress["tokens_done"])
        self.finished: bool = bool(progress["finished"])
        self.generation: int = int(progress["generation"])
        self.layers: list[int] = [int(layer) for layer in self.meta["layers"]]
        self.config: dict[str, Any] = self.meta["config"]
        units = self.meta.get("units") or {}
        self.kind: str = str(units.get("kind", "mlp_neuron"))
        """The kind of the collected units (``"mlp_neuron"`` before format 3)."""
        self.groups: list[dict[str, Any]] = [
            {**g, "indices": from_runs(g["indices"])} for g in units.get("groups", [])
        ]
        """The unit groups of a collection of SAE latents or heads (format 3): each with its
        ``name``, ``kind``, ``layer``, ``site``, ``unit_site``, ``hook_point``, ``indices``
        (in state-row order), ``part`` (units per state file) and ``extra`` (the SAE's
        path, layout, sha256, ...); empty for MLP neurons."""
        self._ids = np.memmap(self.path / WINDOW_IDS, dtype=np.uint32, mode="r")
        self._lengths = np.memmap(self.path / WINDOW_LENGTHS, dtype=np.uint32, mode="r")
        self._width = int(self.config["window_length"])
        self._positions: np.ndarray | None = None
        if self.format_version >= 2:
            path = self.path / WINDOW_POSITIONS
            if not path.is_file() or path.stat().st_size < 16 * self.windows_done:
                raise FormatError(
                    f"{path} is missing or shorter than {self.windows_done} windows (collection "
                    f"format {self.format_version} has one position per window)"
                )
            if self.windows_done:
                positions = np.memmap(path, dtype=np.int64, mode="r")
                self._positions = positions[: 2 * self.windows_done].reshape(-1, 2)

    def __repr__(self) -> str:
        return f"Collection({str(self.path)!r}, layers={self.layers}, windows={self.windows_done})"

    @cached_property
    def vocabulary(self) -> list[str]:
        """The string of every token id (``token_strings`` of the collecting tokenizer)."""
        strings = read_json(self.path / VOCABULARY)["strings"]
        return [str(s) for s in strings]

    def n_neurons(self, layer: int) -> int:
        """How many neurons ``layer`` has."""
        self._check_layer(layer)
        return int(self.meta["n_neurons"][str(layer)])

    def unit(self, layer: int, index: int) -> UnitId:
        """The `UnitId` of neuron ``index`` of ``layer``."""
        return UnitId(model=self.meta["model"], layer=layer, index=index)

    def units(self) -> list[UnitId]:
        """Every unit collected, in (layer, index) order for neurons, group order else; a
        latent or direction names its source (`UnitId.source`: the content hash of its SAE or
        of the directions' array, as `neuron_explainer.subjects.units.source_of` reads it)."""
        if not self.groups:
            return [
                self.unit(layer, i) for layer in self.layers for i in range(self.n_neurons(layer))
            ]
        return [
            UnitId(
                model=self.meta["model"],
                layer=int(g["layer"]),
                index=i,
                kind=g["kind"],
                site=g["unit_site"],
                source=source_of(g["extra"]),
            )
            for g in self.groups
            for i in g["indices"]
        ]

    def record(self, unit: UnitId, *, allow_dead: bool = False) -> NeuronRecord:
        """The record of ``unit``, any kind the collection holds (its ``model`` is not
        checked): an MLP neuron as `neuron_record` reads it, an SAE latent, attention head or
        direction from its part's state. A unit that never fired (never above 0 on the
        tokens collected, `unit_stats`) is refused unless ``allow_dead``: it has nothing to
        explain.

        Raises:
            InvalidInputError: the collection does not hold the unit (kind, site, layer or
                index), named with what it holds.
            DeadUnitError: the unit never fired and not ``allow_dead`` (its message begins
                ``"dead: never activated on the corpus"``).
        """
        if unit.kind == "mlp_neuron" and unit.site is None and not self.groups:
            return self._layer_record(unit.layer, unit.index, check_dead=not allow_dead)
        group, row = self.locate(unit)
        key = f"{group['name']}/part_{row // int(group['part']):05d}"
        from safetensors import safe_open

        named = unit.model_copy(update={"model": self.meta["model"]})
        with safe_open(str(state_file(self.path, key, self.generation)), framework="np") as f:
            if not allow_dead:
                refuse_dead(f, row % int(group["part"]), named)
            return self._read(
                f,
                row % int(group["part"]),
                named,
                self._provenance(group["hook_point"], {"unit": unit_extra(group, row)}),
            )

    def unit_stats(self) -> UnitStats:
        """How active each collected unit was (`UnitStats`, in `units` order): its firing
        density (the fraction of tokens where it was above 0; ``None`` for a collection
        written before the collector counted them), whether it is dead (never above 0) and
        its highest activation. ``unit_stats().summary()`` says it in one line. Reads one
        column of each state file.
        """
        return read_unit_stats(self)

    def locate(self, unit: UnitId) -> tuple[dict[str, Any], int]:
        """The group (of `groups`) holding ``unit`` and the unit's row in it. A unit naming a
        `UnitId.source` matches only a group of that SAE or those directions; one naming none
        (an id written before sources existed) matches on kind, layer and site.

        Raises:
            InvalidInputError: the collection does not hold ``unit``; the message says what
                it holds.
        """
        for group in self.groups:
            same = (group["kind"], int(group["layer"]), group["unit_site"])
            source = unit.source in (None, source_of(group["extra"]))  # None: any (older ids)
            if same == (unit.kind, unit.layer, unit.site) and source:
                indices = group["indices"]
                row = bisect.bisect_left(indices, unit.index)
                if row < len(indices) and indices[row] == unit.index:
                    return group, row
                raise InvalidInputError(
                    f"{unit}: index {unit.index} was not collected; the collection holds "
                    f"{_spans(indices)} at {group['site']}"
                )
        held = sorted({(g["kind"], int(g["layer"]), g["site"]) for g in self.groups})
        what = held or f"MLP neurons of layers {self.layers}"
        raise InvalidInputError(
            f"the collection at {self.path} does not hold {unit}; it holds {what}"
        )

    def provenance(self, layer: int) -> Provenance:
        """How the records of ``layer`` were produced."""
        self._check_layer(layer)
        return self._provenance(self.meta["hook_points"][str(layer)], {})

    def _provenance(self, hook_point: str, more: dict[str, Any]) -> Provenance:
        fields = dict(self.meta["provenance"])
        extra = {**fields.pop("extra", {}), **more, "collection": self._collection_facts()}
        return Provenance(**fields, hook_point=hook_point, extra=extra)

    def window_tokens(self, window: int) -> tuple[int, ...]:
        """The excerpt token ids of window ``window`` (its index in the window stream)."""
        if not 0 <= window < self.windows_done:
            raise InvalidInputError(f"window {window} out of range 0..{self.windows_done - 1}")
        row = self._ids[window * self._width : (window + 1) * self._width]
        return tuple(int(i) for i in row[: int(self._lengths[window])])

    def window_id(self, window: int) -> WindowId | None:
        """Where window ``window`` (its index in the window stream) lies in the corpus: the
        document and the token offset records carry as their `WindowId`, or ``None`` in a
        collection of format 1 (or migrated from it), which did not record it.

        Raises:
            InvalidInputError: ``window`` out of range.
        """
        if not 0 <= window < self.windows_done:
            raise InvalidInputError(f"window {window} out of range 0..{self.windows_done - 1}")
        if self._positions is None:
            return None
        document, start = (int(x) for x in self._positions[window])
        if document == UNKNOWN_POSITION or start == UNKNOWN_POSITION:
            return None
        return WindowId(document=document, start=start)

    def neuron_windows(self, layer: int, index: int) -> dict[str, Any]:
        """Which windows neuron ``index``'s record shows: ``{"top": [...], "random": [...],
        "quantiles": [[...], ...]}`` (window indices, in record order)."""
        with self._open(layer) as f:
            return self._windows(f, index)

    def neuron_record(self, layer: int, index: int) -> NeuronRecord:
        """Neuron ``index`` of ``layer``, read from its own rows only (a dead one too: see
        `record`).

        Raises:
            InvalidInputError: the layer was not collected or the index is out of range.
        """
        return self._layer_record(layer, index, check_dead=False)

    def _layer_record(self, layer: int, index: int, *, check_dead: bool) -> NeuronRecord:
        with self._open(layer) as f:
            n = self.n_neurons(layer)
            if not 0 <= index < n:
                raise InvalidInputError(
                    f"neuron {index} out of range: layer {layer} has 0..{n - 1}"
                )
            if check_dead:
                refuse_dead(f, index, self.unit(layer, index))
            return self._read(f, index, self.unit(layer, index), self.provenance(layer))

    def _read(self, f: Any, index: int, unit: UnitId, provenance: Provenance) -> NeuronRecord:
        """The record of row ``index`` of the open state file ``f``."""
        chosen = self._windows(f, index)
        top = f.get_slice("top_activations")[index]
        top_windows = [int(w) for w in f.get_slice("top_windows")[index]]
        top_slots = [int(s) for s in f.get_slice("top_slots")[index]]
        rand = f.get_slice("random_activations")[index]
        slots = {int(w): s for s, w in enumerate(f.get_tensor("random_windows"))}
        quantile_acts = f.get_slice("quantile_activations")[index]
        quantile_windows = f.get_slice("quantile_windows")[index]
        bounds = f.get_slice("quantile_boundaries")[index]
        shift = float(f.get_slice("moment_shift")[index : index + 1][0])
        sums = f.get_slice("moment_sums")[index]
        count = int(f.get_tensor("token_count")[0])
        top_records = tuple(
            self._record(w, top[top_slots[top_windows.index(w)]]) for w in chosen["top"]
        )
        if "attended_source" in f.keys():  # noqa: SIM118  (attention heads, format 3)
            ranks = [top_windows.index(w) for w in chosen["top"]]
            top_records = attended_records(f, index, top_records, ranks, self.vocabulary)
        random_records = tuple(self._record(w, rand[slots[w]]) for w in chosen["random"])
        samples: list[tuple[ActivationRecord, ...]] = []
        for b, members in enumerate(chosen["quantiles"]):
            row = [int(w) for w in quantile_windows[b]]
            samples.append(tuple(self._record(w, quantile_acts[b, row.index(w)]) for w in members))
        levels = tuple(float(q) for q in self.config["quantile_levels"])
        has_bounds = bool(levels) and all(math.isfinite(float(x)) for x in bounds)
        return NeuronRecord(
            unit=unit,
            top_records=top_records,
            random_sample=random_records,
            quantile_boundaries=tuple(float(x) for x in bounds) if has_bounds else (),
            quantile_levels=levels if has_bounds else None,
            quantile_samples=tuple(samples) if has_bounds else (),
            provenance=provenance,
            **moments_from_sums(count, shift, sums),
        )

    # --- internals ---------------------------------------------------------------------------

    def _check_layer(self, layer: int) -> None:
        if layer not in self.layers:
            raise InvalidInputError(f"layer {layer} was not collected; layers: {self.layers}")

    def _open(self, layer: int) -> Any:
        from safetensors import safe_open

        self._check_layer(layer)
        return safe_open(str(state_path(self.path, layer, self.generation)), framework="np")

    def _windows(self, f: Any, index: int) -> dict[str, Any]:
        # Excerpts are de-duplicated by their tokens (the collector keeps every window), as
        # `choose_windows` says, so repeated text cannot put one excerpt in two splits.
        from neuron_explainer.subjects._state_records import choose_windows

        return choose_windows(
            f.get_slice("top_windows")[index],
            f.get_tensor("random_windows"),
            f.get_slice("quantile_windows")[index],
            int(self.config["n_random"]),
            self.window_tokens,
        )

    def _record(self, window: int, activations: np.ndarray) -> ActivationRecord:
        ids = self.window_tokens(window)
        vocabulary = self.vocabulary
        tokens = [vocabulary[i] if i < len(vocabulary) else "" for i in ids]
        return ActivationRecord(
            tokens=tokens,
            activations=[float(a) for a in activations[: len(ids)]],
            token_ids=ids,
            window_id=self.window_id(window),
        )

    def _collection_facts(self) -> dict[str, Any]:
        return {
            "windows": self.windows_done,
            "tokens": self.tokens_done,
            "finished": self.finished,
            "quantile_method": self.meta["quantile_method"],
            "seed": self.config["seed"],
        }


def _spans(indices: Sequence[int]) -> str:
    return ", ".join(f"{a}..{b - 1}" if b - a > 1 else str(a) for a, b in runs_of(indices)[:5])


class CollectionSubject(Subject):
    """A `Subject` whose records come from a finished (or partial) collection.

    Args:
        collection: a `Collection` or its folder.
    """

    def __init__(self, collection: Collection | str | os.PathLike[str]) -> None:
        self.collection = (
            collection if isinstance(collection, Collection) else Collection(collection)
        )

    @property
    def model_name(self) -> str:
        """The model the collection recorded, as its units name it."""
        return str(self.collection.meta["model"])

    async def aneuron_record(self, unit: UnitId) -> NeuronRecord:
        """The record of ``unit`` (its ``model`` is not checked; layer and index are).

        Raises:
            InvalidInputError: a unit the collection lacks (kind, site, layer or index).
        """
        return self.collection.record(unit)
