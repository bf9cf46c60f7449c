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

from typing import Any, Self

from pydantic import StrictStr, ValidationError, model_validator

from neuron_explainer.errors import FormatError, InvalidInputError
from neuron_explainer.formats._json import (
    At,
    JSONObject,
    PathLike,
    Where,
    dump_json,
    load_json_file,
    validate,
    write_text,
)
from neuron_explainer.formats._tagged import NeuronIdIn, Number, OpenAIObject, Score
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


class _RecordIn(OpenAIObject):
    """An ``ActivationRecord`` as it is in the file: tokens and one activation per token."""

    openai_name = "ActivationRecord"

    tokens: tuple[StrictStr, ...]
    activations: tuple[Number, ...]

    @model_validator(mode="after")
    def _one_activation_per_token(self) -> Self:
        if not self.tokens:
            raise At("tokens", "is empty; a record needs at least one token")
        if len(self.activations) != len(self.tokens):
            raise At(
                "activations",
                f"has {len(self.activations)} values but tokens has {len(self.tokens)}; "
                "need one activation per token",
            )
        return self

    def record(self) -> ActivationRecord:
        """The record as this library holds it."""
        return ActivationRecord(tokens=self.tokens, activations=self.activations)


class _NeuronRecordIn(OpenAIObject):
    """A ``NeuronRecord`` as it is in the file; the quantile fields agree with each other."""

    openai_name = "NeuronRecord"

    neuron_id: NeuronIdIn
    random_sample: tuple[_RecordIn, ...] = ()
    random_sample_by_quantile: tuple[tuple[_RecordIn, ...], ...] | None = None
    quantile_boundaries: tuple[Number, ...] | None = None
    mean: Score = None
    variance: Score = None
    skewness: Score = None
    kurtosis: Score = None
    most_positive_activation_records: tuple[_RecordIn, ...]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        samples = self.random_sample_by_quantile or ()
        bounds = self.quantile_boundaries or ()
        if (samples or bounds) and len(samples) != len(bounds) + 1:
            raise At(
                "random_sample_by_quantile",
                f"{len(samples)} quantile samples do not fit {len(bounds)} quantile_boundaries; "
                "need exactly one more sample than boundaries",
            )
        if list(bounds) != sorted(bounds):
            raise At("quantile_boundaries", f"must be ascending, got {list(bounds)}")
        if self.variance is not None and self.variance < 0:
            raise At("variance", f"must be >= 0, got {self.variance}")
        return self


def make_unit(model: str, layer: int, neuron: int, kind: str) -> UnitId:
    """A `UnitId`, with bad ``model`` / ``kind`` arguments reported as such.

    Raises:
        InvalidInputError: ``model`` is empty or ``kind`` is not a lowercase identifier.
    """
    try:
        return UnitId(model=model, layer=layer, index=neuron, kind=kind)
    except ValidationError as exc:
        raise InvalidInputError(f"bad model or kind argument: {exc}") from None


def unit_to_openai(unit: UnitId) -> dict[str, Any]:
    """The ``NeuronId`` object for ``unit`` (its model and kind are not representable)."""
    return {"dataclass_name": "NeuronId", "layer_index": unit.layer, "neuron_index": unit.index}


def activation_record_to_openai(record: ActivationRecord) -> dict[str, Any]:
    """The ``ActivationRecord`` object for ``record`` (``token_ids`` are dropped)."""
    return {
        "dataclass_name": "ActivationRecord",
        "tokens": list(record.tokens),
        "activations": [float(a) for a in record.activations],
    }


def neuron_record_from_openai(
    data: JSONObject, *, model: str = "gpt2-xl", kind: str = "mlp_neuron", source: str | None = None
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
    read = validate(_NeuronRecordIn, data, where)
    unit = make_unit(model, read.neuron_id.layer_index, read.neuron_id.neuron_index, kind)
    extra: dict[str, Any] = {"source_format": SOURCE_FORMAT}
    if source is not None:
        extra["source"] = source
    provenance = Provenance(
        model=model, hook_point=None, dataset=OPENAI_DATASET, library_version=None, extra=extra
    )
    fields = {
        "unit": unit,
        "top_records": tuple(r.record() for r in read.most_positive_activation_records),
        "random_sample": tuple(r.record() for r in read.random_sample),
        "quantile_boundaries": read.quantile_boundaries or (),
        "quantile_samples": tuple(
            tuple(r.record() for r in sample) for sample in read.random_sample_by_quantile or ()
        ),
        "provenance": provenance,
        "mean": read.mean,
        "variance": read.variance,
        "skewness": read.skewness,
        "kurtosis": read.kurtosis,
    }
    return validate(NeuronRecord, fields, where)


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
