"""OpenAI's public neuron-explainer ``NeuronRecord`` JSON (the GPT-2 XL activation data).

One JSON object per neuron, each object tagged with ``dataclass_name``::

    {"dataclass_name": "NeuronRecord",
     "neuron_id": {"dataclass_name": "NeuronId", "layer_index": 5, "neuron_index": 131},
     "random_sample": [ActivationRecord, ...],
     "random_sample_by_quantile": [[ActivationRecord, ...], ...] | null,
     "quantile_boundaries": [float, ...] | null,
     "mean": float | null, "variance": ..., "skewness": ..., "kurtosis": ...,
     "most_positive_activation_records": [ActivationRecord, ...]}

with ``ActivationRecord = {"dataclass_name": "ActivationRecord", "tokens": [str, ...],
"activations": [float, ...]}``. ``random_sample_by_quantile[i]`` lies between boundaries
``i - 1`` and ``i``, the same convention as `NeuronRecord`.

Numbers: activations and boundaries are floats. An integer in the file (``0``) reads as the float
``0.0`` and is written back as ``0.0``; files written by OpenAI's code hold floats only, so they
round-trip exactly. A statistic that is ``null`` or ``NaN`` (Python's ``json`` writes a bare
``NaN``) reads as ``None`` and is always written as ``null``; nothing is ever written as NaN.

The explanation JSONL format lives in `neuron_explainer.formats.openai_explanations`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from neuron_explainer.errors import FormatError, InvalidInputError
from neuron_explainer.formats._json import (
    PathLike,
    Where,
    build,
    dump_json,
    index,
    key,
    load_json_file,
    parse_float_list,
    parse_index,
    parse_list,
    parse_object,
    parse_optional_score,
    parse_str_list,
    required,
    write_text,
)
from neuron_explainer.records import ActivationRecord, NeuronRecord, Provenance, UnitId

__all__ = [
    "OPENAI_DATASET",
    "neuron_record_from_openai",
    "neuron_record_to_openai",
    "read_openai_neuron_record",
    "write_openai_neuron_record",
]

OPENAI_DATASET = "OpenAI neuron-explainer public data (openaipublic/neuron-explainer)"
"""The ``Provenance.dataset`` of every record read from OpenAI's format."""

SOURCE_FORMAT = "openai-neuron-record"

_RECORD_FIELDS = ("tokens", "activations")
_NEURON_ID_FIELDS = ("layer_index", "neuron_index")
_NEURON_RECORD_FIELDS = (
    "neuron_id",
    "random_sample",
    "random_sample_by_quantile",
    "quantile_boundaries",
    "mean",
    "variance",
    "skewness",
    "kurtosis",
    "most_positive_activation_records",
)
_MOMENTS = ("mean", "variance", "skewness", "kurtosis")


def make_unit(model: str, layer: int, neuron: int, kind: str) -> UnitId:
    """A `UnitId`, with bad ``model`` / ``kind`` arguments reported as such.

    Raises:
        InvalidInputError: ``model`` is empty or ``kind`` is not a lowercase identifier.
    """
    try:
        return UnitId(model=model, layer=layer, index=neuron, kind=kind)
    except ValidationError as exc:
        raise InvalidInputError(f"bad model or kind argument: {exc}") from None


def unit_from_openai(value: Any, path: str, where: Where, *, model: str, kind: str) -> UnitId:
    """Read a ``NeuronId`` object at JSON ``path`` into a `UnitId` of ``model``.

    Raises:
        FormatError: the object is not a valid ``NeuronId``.
    """
    obj = parse_object(value, path, where, "NeuronId", _NEURON_ID_FIELDS)
    layer = parse_index(required(obj, "layer_index", path, where), key(path, "layer_index"), where)
    neuron = parse_index(
        required(obj, "neuron_index", path, where), key(path, "neuron_index"), where
    )
    return make_unit(model, layer, neuron, kind)


def unit_to_openai(unit: UnitId) -> dict[str, Any]:
    """The ``NeuronId`` object for ``unit`` (its model and kind are not representable)."""
    return {"dataclass_name": "NeuronId", "layer_index": unit.layer, "neuron_index": unit.index}


def activation_record_from_openai(value: Any, path: str, where: Where) -> ActivationRecord:
    """Read an ``ActivationRecord`` object at JSON ``path``.

    Raises:
        FormatError: wrong ``dataclass_name``, a missing field, a non-string token, a
            non-finite activation, no tokens, or a different number of activations and tokens.
    """
    obj = parse_object(value, path, where, "ActivationRecord", _RECORD_FIELDS)
    tokens = parse_str_list(required(obj, "tokens", path, where), key(path, "tokens"), where)
    activations = parse_float_list(
        required(obj, "activations", path, where), key(path, "activations"), where
    )
    if not tokens:
        raise where.error(key(path, "tokens"), "is empty; a record needs at least one token")
    if len(activations) != len(tokens):
        raise where.error(
            key(path, "activations"),
            f"has {len(activations)} values but tokens has {len(tokens)}; "
            "need one activation per token",
        )
    return build(
        ActivationRecord, {"tokens": tuple(tokens), "activations": tuple(activations)}, path, where
    )


def activation_record_to_openai(record: ActivationRecord) -> dict[str, Any]:
    """The ``ActivationRecord`` object for ``record`` (``token_ids`` are dropped)."""
    return {
        "dataclass_name": "ActivationRecord",
        "tokens": list(record.tokens),
        "activations": [float(a) for a in record.activations],
    }


def _records(value: Any, path: str, where: Where) -> tuple[ActivationRecord, ...]:
    items = parse_list(value, path, where)
    return tuple(
        activation_record_from_openai(v, index(path, i), where) for i, v in enumerate(items)
    )


def neuron_record_from_openai(
    data: Mapping[str, Any],
    *,
    model: str = "gpt2-xl",
    kind: str = "mlp_neuron",
    source: str | None = None,
) -> NeuronRecord:
    """Convert a parsed OpenAI ``NeuronRecord`` object into a `NeuronRecord`.

    Args:
        data: the JSON object, as ``json.loads`` returns it (``NaN`` statistics allowed).
        model: the subject model's name; the format does not record it (default GPT-2 XL, the
            model of the published data).
        kind: the unit kind (default ``"mlp_neuron"``).
        source: where the data came from (a file name), used in error messages and recorded in
            ``provenance.extra["source"]``.

    Missing ``dataclass_name`` fields, missing optional fields (random sample, quantiles,
    statistics) and any key order are accepted. The provenance says the record came from
    OpenAI's public data (`OPENAI_DATASET`); the hook point is unknown.

    Raises:
        FormatError: a wrong ``dataclass_name``, a missing required field (``neuron_id``,
            ``most_positive_activation_records``, ``tokens``, ``activations``), an unknown
            field, a wrongly typed value, mismatched token and activation counts, a non-finite
            activation, or inconsistent quantile fields; the message names ``source`` and the
            JSON path.
        InvalidInputError: ``model`` is empty or ``kind`` is not a lowercase identifier.
    """
    where = Where(source)
    obj = parse_object(data, "", where, "NeuronRecord", _NEURON_RECORD_FIELDS)
    unit = unit_from_openai(
        required(obj, "neuron_id", "", where), "neuron_id", where, model=model, kind=kind
    )
    top = _records(
        required(obj, "most_positive_activation_records", "", where),
        "most_positive_activation_records",
        where,
    )
    random_sample = _records(obj.get("random_sample", []), "random_sample", where)

    by_quantile = obj.get("random_sample_by_quantile")
    samples: tuple[tuple[ActivationRecord, ...], ...] = ()
    if by_quantile is not None:
        path = "random_sample_by_quantile"
        samples = tuple(
            _records(v, index(path, i), where)
            for i, v in enumerate(parse_list(by_quantile, path, where))
        )
    raw_bounds = obj.get("quantile_boundaries")
    bounds = (
        ()
        if raw_bounds is None
        else tuple(parse_float_list(raw_bounds, "quantile_boundaries", where))
    )
    if (samples or bounds) and len(samples) != len(bounds) + 1:
        raise where.error(
            "random_sample_by_quantile",
            f"{len(samples)} quantile samples do not fit {len(bounds)} quantile_boundaries; "
            "need exactly one more sample than boundaries",
        )
    if list(bounds) != sorted(bounds):
        raise where.error("quantile_boundaries", f"must be ascending, got {list(bounds)}")

    moments = {m: parse_optional_score(obj.get(m), m, where) for m in _MOMENTS}
    if moments["variance"] is not None and moments["variance"] < 0:
        raise where.error("variance", f"must be >= 0, got {moments['variance']}")

    extra: dict[str, Any] = {"source_format": SOURCE_FORMAT}
    if source is not None:
        extra["source"] = source
    provenance = Provenance(
        model=model, hook_point=None, dataset=OPENAI_DATASET, library_version=None, extra=extra
    )
    fields = {
        "unit": unit,
        "top_records": top,
        "random_sample": random_sample,
        "quantile_boundaries": bounds,
        "quantile_samples": samples,
        "provenance": provenance,
        **moments,
    }
    return build(NeuronRecord, fields, "", where)


def read_openai_neuron_record(
    path: PathLike, *, model: str = "gpt2-xl", kind: str = "mlp_neuron"
) -> NeuronRecord:
    """Read one neuron's record from a JSON file in OpenAI's public format.

    See `neuron_record_from_openai` for ``model``, ``kind`` and what is accepted.

    Raises:
        FormatError: the file is not UTF-8 JSON or not a valid record; the message names the
            file and the JSON path.
        InvalidInputError: bad ``model`` or ``kind``.
        OSError: the file cannot be read.
    """
    data, name = load_json_file(path)
    if not isinstance(data, dict):
        raise FormatError(f"{name}: expected a NeuronRecord object at the top level")
    return neuron_record_from_openai(data, model=model, kind=kind, source=name)


def neuron_record_to_openai(record: NeuronRecord) -> dict[str, Any]:
    """Convert ``record`` into OpenAI's ``NeuronRecord`` object (plain JSON data).

    Layer and neuron index come from ``record.unit``. Fields OpenAI's format cannot hold are
    dropped: ``unit.model``, ``unit.kind``, ``provenance``, ``quantile_levels`` and every
    record's ``token_ids``. Unknown statistics become ``None`` (``null``), never NaN; without
    quantile samples both quantile fields are ``None``. Activations are written as floats.
    """
    has_quantiles = bool(record.quantile_samples)
    return {
        "dataclass_name": "NeuronRecord",
        "neuron_id": unit_to_openai(record.unit),
        "random_sample": [activation_record_to_openai(r) for r in record.random_sample],
        "random_sample_by_quantile": (
            [[activation_record_to_openai(r) for r in sample] for sample in record.quantile_samples]
            if has_quantiles
            else None
        ),
        "quantile_boundaries": (
            [float(b) for b in record.quantile_boundaries] if has_quantiles else None
        ),
        "mean": record.mean,
        "variance": record.variance,
        "skewness": record.skewness,
        "kurtosis": record.kurtosis,
        "most_positive_activation_records": [
            activation_record_to_openai(r) for r in record.top_records
        ],
    }


def write_openai_neuron_record(record: NeuronRecord, path: PathLike) -> None:
    """Write ``record`` as one JSON object in OpenAI's format (UTF-8; see
    `neuron_record_to_openai` for the fields that are dropped).

    Raises:
        OSError: the file cannot be written.
    """
    write_text(path, dump_json(neuron_record_to_openai(record)) + "\n")
