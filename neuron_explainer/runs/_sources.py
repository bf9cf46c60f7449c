"""Where a batch run's records come from: a collection (collected first if need be) or
records given directly. Used by `neuron_explainer.runs`."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from pydantic import ValidationError

from neuron_explainer.errors import InvalidInputError, InvalidRecordError
from neuron_explainer.interfaces import Probe
from neuron_explainer.records import NeuronRecord, UnitId
from neuron_explainer.subjects.collection import Collection

__all__ = ["RecordSource", "Source", "open_source", "parse_indices", "select_units"]

_RANGE = re.compile(r"^(\d+)(?:\s*-\s*(\d+))?$")

RecordSource: TypeAlias = Mapping[UnitId, NeuronRecord] | Callable[[UnitId], NeuronRecord]
"""Records given directly: a mapping from unit to record, or a function of the unit (called in
a worker thread, so it may block)."""


def parse_indices(
    spec: str | Sequence[int] | None, *, limit: int | None = None, what: str = "index"
) -> list[int]:
    """Indices from a spec: ``"0-3"`` → ``[0, 1, 2, 3]``; ``"0,5,9"``; ``"0-3,7,10-11"``; a
    sequence of ints; ``None`` → ``range(limit)``. Sorted, without duplicates.

    Args:
        spec: the indices.
        limit: indices must be below it (``None``: no upper bound).
        what: what the indices are (``"layer"``, ``"neuron"``), for error messages.

    Raises:
        InvalidInputError: bad syntax, a negative index, an index ``>= limit``, an empty spec,
            or ``None`` without a ``limit``; the message names ``what`` and the valid range.
    """
    valid = f"valid {what}s are 0..{limit - 1}" if limit else f"{what}s are integers >= 0"
    if limit is not None and limit < 1:
        raise InvalidInputError(f"there is no {what} to choose (0 available)")
    if spec is None:
        if limit is None:
            raise InvalidInputError(f"give the {what}s to use ({valid})")
        return list(range(limit))
    found = sorted(
        _read_ranges(spec, what, valid) if isinstance(spec, str) else _read_ints(spec, what, valid)
    )
    if limit is not None and found[-1] >= limit:
        raise InvalidInputError(f"{what} {found[-1]} is out of range: {valid}")
    return found


def _read_ranges(spec: str, what: str, valid: str) -> set[int]:
    """The indices of a spec such as ``"0-3,7"``."""
    parts = [p.strip() for p in spec.split(",")]
    example = f"write e.g. '0-3', '0,5,9' or '0-3,7' ({valid})"
    if not spec.strip() or any(not p for p in parts):
        raise InvalidInputError(f"cannot read {what}s {spec!r}: {example}")
    found: set[int] = set()
    for part in parts:
        match = _RANGE.match(part)
        if match is None:
            raise InvalidInputError(f"cannot read {what}s {spec!r} at {part!r}: {example}")
        first = int(match[1])
        last = first if match[2] is None else int(match[2])
        if last < first:
            raise InvalidInputError(f"{what} range {part!r} runs backwards ({valid})")
        found.update(range(first, last + 1))
    return found


def _read_ints(spec: Sequence[int], what: str, valid: str) -> set[int]:
    """The indices of a sequence of ints, each checked."""
    for value in spec:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInputError(f"{what} {value!r} is not an integer ({valid})")
        if value < 0:
            raise InvalidInputError(f"{what} {value} is negative ({valid})")
    if not spec:
        raise InvalidInputError(f"no {what}s given ({valid})")
    return set(spec)


class Source:
    """The records of a run and what identifies them across runs.

    Attributes:
        identity: JSON data that must be equal when a run resumes (for a collection: its
            model, config hash and window count; for records: their name).
        path: the collection folder, or ``None``.
    """

    def __init__(
        self,
        identity: dict[str, Any],
        *,
        collection: Collection | None = None,
        records: RecordSource | None = None,
        model: Any = None,
        collect_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.identity = identity
        self.collection = collection
        self.records = records
        self.path = str(collection.path.resolve()) if collection is not None else None
        self._model = model
        self._collect_options = dict(collect_options or {})
        self._subject: Any = None

    def probe(self, unit: UnitId) -> Probe | None:
        """``unit``'s true activations on new text, read as the collection read its corpus
        (same window length and BOS policy), when the run was given the model (``model=``);
        ``None`` otherwise. The model is loaded on first use, once per run."""
        if self._model is None or self.collection is None:
            return None
        if unit.kind == "direction" and not self._one_direction():
            return None  # HFSubject reads one vector; a row of several names the whole array
        if self._subject is None:
            from neuron_explainer.subjects.hf import HFSubject

            config = self.collection.config
            picked: dict[str, Any] = {
                k: self._collect_options[k]
                for k in ("tokenizer", "device", "batch_size", "sae", "hook")
                if k in self._collect_options
            }
            if self._one_direction():
                picked["direction"] = self._directions().matrix[0]
            self._subject = HFSubject(
                self._model,
                corpus=[],
                dtype=config.get("dtype") or "float32",
                window_length=int(config["window_length"]),
                bos=config["bos"],
                **picked,
            )
        probe: Probe = self._subject.probe(unit)
        return probe

    def _directions(self) -> Any:
        from neuron_explainer.subjects._collect_directions import load_directions

        return load_directions(self._collect_options["direction"])

    def _one_direction(self) -> bool:
        """Whether the run collected exactly one direction (the probe can read it)."""
        if self._collect_options.get("direction") is None:
            return False
        return int(self._directions().matrix.shape[0]) == 1

    def check(self, unit: UnitId) -> None:
        """Raise `InvalidInputError` if the source cannot have ``unit``."""
        collection = self.collection
        if collection is None:
            if isinstance(self.records, Mapping) and unit not in self.records:
                raise InvalidInputError(f"no record was given for {unit}")
            return
        if unit.model != collection.meta["model"]:
            raise InvalidInputError(
                f"{unit} is not a unit of the collection's model {collection.meta['model']!r}"
            )
        if collection.groups or unit.kind != "mlp_neuron" or unit.site is not None:
            collection.locate(unit)  # raises, saying what the collection holds
            return
        if unit.layer not in collection.layers:
            raise InvalidInputError(
                f"layer {unit.layer} was not collected; collected layers: {collection.layers}"
            )
        n = collection.n_neurons(unit.layer)
        if not 0 <= unit.index < n:
            raise InvalidInputError(
                f"neuron {unit.index} is out of range: layer {unit.layer} has neurons 0..{n - 1}"
            )

    async def record(self, unit: UnitId) -> NeuronRecord:
        """``unit``'s record, read in a worker thread (blocking I/O stays off the loop).

        Raises:
            InvalidRecordError: a given record does not validate, or is another unit's.
        """
        if self.collection is not None:
            return await asyncio.to_thread(self.collection.record, unit)
        given = self.records
        if isinstance(given, Mapping):
            found: Any = given.get(unit)
            if found is None:
                raise InvalidInputError(f"no record was given for {unit}")
        else:
            assert given is not None
            found = await asyncio.to_thread(given, unit)
        if not isinstance(found, NeuronRecord):
            try:
                found = NeuronRecord.model_validate(found)
            except ValidationError as exc:
                raise InvalidRecordError(
                    f"the record given for {unit} does not validate:\n{exc}"
                ) from None
        record: NeuronRecord = found
        if record.unit != unit:
            raise InvalidRecordError(
                f"the record given for {unit} is the record of {record.unit}; give each unit its "
                "own record (e.g. record.model_copy(update={'unit': unit}))"
            )
        return record


def _collection_identity(collection: Collection) -> dict[str, Any]:
    return {
        "kind": "collection",
        "model": collection.meta["model"],
        "config_hash": collection.meta.get("config_hash"),
        "windows": collection.windows_done,
        "finished": collection.finished,
    }


async def open_source(
    source: Collection | str | os.PathLike[str] | None = None,
    *,
    model: Any = None,
    corpus: Any = None,
    records: Any = None,
    source_name: str | None = None,
    collection_dir: str | os.PathLike[str] | None = None,
    layers: str | Sequence[int] | None = None,
    collect_options: Mapping[str, Any] | None = None,
    expect: Mapping[str, Any] | None = None,
) -> Source:
    """The run's `Source`: ``records``, a collection (``source``), or ``model`` + ``corpus``
    collected into ``collection_dir`` first (in a worker thread).

    Args:
        expect: the identity a resumed or re-scored run recorded; a collection whose identity
            differs raises (for ``records``, its name is taken as given).

    Raises:
        InvalidInputError: not exactly one kind of source, missing ``corpus``/``layers``, or a
            collection that changed.
    """
    if corpus is not None and model is None and not isinstance(source, Collection):
        source, model = None, source  # a model named positionally, with its corpus
    kinds = {"source": source, "model": model, "records": records}
    chosen = [name for name, value in kinds.items() if value is not None]
    if expect is not None and expect.get("kind") == "records":
        if records is None:
            raise InvalidInputError(
                "this run's records were given directly (records=, or run --records); give "
                "them again (score --records on the command line)"
            )
        source = None  # the run's records, named as the run named them
        source_name = expect.get("name")
    if len(chosen) != 1:
        raise InvalidInputError(
            "give exactly one source of records: a collection (source=), a model and corpus "
            f"(model=, corpus=) or records (records=); got {chosen or 'none'}"
        )
    if records is not None:
        if not isinstance(records, Mapping) and not callable(records):
            raise InvalidInputError(
                "records must be a mapping {UnitId: NeuronRecord} or a function of the unit"
            )
        return Source({"kind": "records", "name": source_name or "records"}, records=records)
    if source_name is not None:
        raise InvalidInputError("source_name is for records=; a collection names itself")
    if model is not None:
        collection = await _collect(model, corpus, collection_dir, layers, collect_options)
    elif isinstance(source, Collection):
        collection = source
    else:
        collection = Collection(source)  # type: ignore[arg-type]
    found = Source(
        _collection_identity(collection),
        collection=collection,
        model=model,
        collect_options=collect_options,
    )
    if expect is not None and dict(expect) != found.identity:
        raise InvalidInputError(
            f"the collection at {collection.path} changed since the run (it was {dict(expect)}, "
            f"now {found.identity})"
        )
    return found


async def _collect(
    model: Any,
    corpus: Any,
    out_dir: str | os.PathLike[str] | None,
    layers: str | Sequence[int] | None,
    options: Mapping[str, Any] | None,
) -> Collection:
    if corpus is None:
        raise InvalidInputError("to collect a model's records, give corpus= as well")
    extra = dict(options or {})
    units = extra.get("sae") or extra.get("heads") or extra.get("direction") is not None
    if layers is None and not units:
        raise InvalidInputError(
            "to collect a model's records, give layers= (e.g. '0-11'), or sae=, heads= or "
            "direction="
        )
    clash = sorted({"out_dir", "layers"} & set(extra))
    if clash:
        raise InvalidInputError(
            f"collect_options cannot set {clash}: use collection_dir= and layers="
        )
    if out_dir is None:  # pragma: no cover - the batch always passes one
        raise InvalidInputError("give collection_dir=")
    from neuron_explainer.subjects.collect import collect

    if layers is None:  # SAE latents, attention heads or directions
        return await asyncio.to_thread(collect, model, corpus, out_dir=Path(out_dir), **extra)
    wanted = parse_indices(layers, what="layer")
    try:  # a collection already there keeps its layers: a subset of them needs no new pass
        held = Collection(out_dir).layers
    except InvalidInputError:
        held = []
    if set(wanted) <= set(held):
        wanted = held
    return await asyncio.to_thread(
        collect, model, corpus, out_dir=Path(out_dir), layers=wanted, **extra
    )


def select_units(
    source: Source,
    *,
    layers: str | Sequence[int] | None,
    neurons: str | Sequence[int] | None,
    units: Iterable[UnitId] | None,
) -> list[UnitId]:
    """The units a run explains, sorted by (layer, index), each checked against the source.

    Raises:
        InvalidInputError: ``units`` together with ``layers``/``neurons``, an index out of
            range, or no units at all.
    """
    if units is not None:
        if layers is not None or neurons is not None:
            raise InvalidInputError("give units= or layers=/neurons=, not both")
        chosen = list(dict.fromkeys(units))
        for unit in chosen:
            if not isinstance(unit, UnitId):
                raise InvalidInputError(f"units must be UnitIds, got {type(unit).__name__}")
            source.check(unit)
    elif source.collection is not None and source.collection.groups:
        keep_layers = None if layers is None else set(parse_indices(layers, what="layer"))
        keep = None if neurons is None else set(parse_indices(neurons, what="index"))
        chosen = [
            u
            for u in source.collection.units()
            if (keep_layers is None or u.layer in keep_layers) and (keep is None or u.index in keep)
        ]
    elif source.collection is not None:
        collection = source.collection
        wanted = collection.layers if layers is None else parse_indices(layers, what="layer")
        chosen = []
        for layer in wanted:
            source.check(collection.unit(layer, 0))
            n = collection.n_neurons(layer)
            chosen += [
                collection.unit(layer, i) for i in parse_indices(neurons, limit=n, what="neuron")
            ]
    elif isinstance(source.records, Mapping):
        keep_layers = None if layers is None else set(parse_indices(layers, what="layer"))
        keep = None if neurons is None else set(parse_indices(neurons, what="neuron"))
        chosen = [
            u
            for u in source.records
            if (keep_layers is None or u.layer in keep_layers) and (keep is None or u.index in keep)
        ]
    else:
        raise InvalidInputError("records given as a function need units= (the units to explain)")
    if not chosen:
        raise InvalidInputError("no units to explain")
    return sorted(
        chosen, key=lambda u: (u.layer, u.index, u.model, u.kind, u.site or "", u.source or "")
    )
