"""A folder of records as one JSONL file: one `NeuronRecord` JSON per line (what
``neuron-explainer import delphi`` writes, and what ``explain_neurons(records=...)`` takes)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from neuron_explainer.errors import FormatError, InvalidInputError
from neuron_explainer.formats._json import PathLike, iter_jsonl
from neuron_explainer.records import NeuronRecord, UnitId

__all__ = ["RECORDS_FILE", "read_records_jsonl", "write_records_jsonl"]

RECORDS_FILE = "records.jsonl"
"""The file name of the records in an imported folder."""


def write_records_jsonl(records: Iterable[NeuronRecord], path: PathLike) -> int:
    """Write each record as one JSON line (UTF-8, via a temporary file); returns how many.

    Raises:
        InvalidInputError: an item is not a `NeuronRecord`, or two are of one unit.
        OSError: the file cannot be written.
    """
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    seen: set[UnitId] = set()
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for record in records:
            if not isinstance(record, NeuronRecord):
                raise InvalidInputError(f"expected NeuronRecords, got a {type(record).__name__}")
            if record.unit in seen:
                raise InvalidInputError(f"two records of {record.unit}; give one record a unit")
            seen.add(record.unit)
            f.write(record.model_dump_json() + "\n")
    tmp.replace(target)
    return len(seen)


def read_records_jsonl(path: PathLike) -> dict[UnitId, NeuronRecord]:
    """The records of a JSONL file (a folder: its ``records.jsonl``), by unit, in file order:
    ready for ``explain_neurons(records=...)``.

    Raises:
        FormatError: a line is not JSON, not a `NeuronRecord`, or repeats a unit; the message
            names the file and the line.
        InvalidInputError: no such file.
    """
    file = Path(path)
    if file.is_dir():
        file = file / RECORDS_FILE
    if not file.is_file():
        raise InvalidInputError(f"{file} does not exist (give a records.jsonl or its folder)")
    records: dict[UnitId, NeuronRecord] = {}
    for value, where in iter_jsonl(file):
        try:
            record = NeuronRecord.model_validate(value)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            path_in = ".".join(str(part) for part in first["loc"])
            raise where.error(path_in, str(first["msg"])) from None
        if record.unit in records:
            raise FormatError(f"{file} line {where.line}: a second record of {record.unit}")
        records[record.unit] = record
    return records
