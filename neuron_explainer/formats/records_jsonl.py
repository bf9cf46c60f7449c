"""A folder of records as one JSONL file: one `NeuronRecord` JSON per line (what
``neuron-explainer import delphi`` writes, what ``explain_neurons(records=...)`` and
``neuron-explainer run --records`` take)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from neuron_explainer.errors import FormatError, InvalidInputError, InvalidRecordError
from neuron_explainer.formats._json import PathLike, Where, describe, iter_jsonl, validate
from neuron_explainer.records import NeuronRecord, UnitId

__all__ = ["RECORDS_FILE", "RecordsFile", "read_records_jsonl", "write_records_jsonl"]

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
    file = _records_file(path)
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


def _records_file(path: PathLike) -> Path:
    """The records file of ``path`` (a folder: its `RECORDS_FILE`).

    Raises:
        InvalidInputError: no such file.
    """
    file = Path(path)
    if file.is_dir():
        file = file / RECORDS_FILE
    if not file.is_file():
        raise InvalidInputError(f"{file} does not exist (give a records.jsonl or its folder)")
    return file


def _line_value(raw: bytes, where: Where) -> Any:
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise where.error("", f"not valid UTF-8 at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise where.error("", f"not valid JSON: {exc.msg} (column {exc.colno})") from None


class RecordsFile(Mapping[UnitId, NeuronRecord]):
    """The records of a JSONL file (a folder: its ``records.jsonl``) by unit, in file order,
    each read from the file when asked for: what ``neuron-explainer run --records`` explains
    (pass it as ``explain_neurons(records=...)``). Only where each record's line starts is
    held, so a file of many records is explained in bounded memory.

    Opening reads every line once: each must be a JSON object whose ``unit`` is a valid
    `UnitId`, and no unit may repeat; the file's sha256 is taken on the way. A record is
    validated when it is read.

    Attributes:
        path: the records file.
        sha256: the hex sha256 of its bytes when it was opened.

    Raises:
        InvalidInputError: no such file.
        FormatError: a line that is not JSON, not an object, with no valid ``unit``, or with a
            unit an earlier line has; the message names the file and the line.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = _records_file(path)
        self._lines: dict[UnitId, tuple[int, int]] = {}  # unit: (byte offset, line number)
        digest = hashlib.sha256()
        offset = 0
        with open(self.path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                digest.update(raw)
                start, offset = offset, offset + len(raw)
                if raw.strip(b" \t\r\n"):
                    self._index(raw, start, number)
        self.sha256 = digest.hexdigest()

    def _index(self, raw: bytes, start: int, number: int) -> None:
        where = Where(str(self.path), number)
        value = _line_value(raw, where)
        if not isinstance(value, dict):
            raise where.error("", f"expected a NeuronRecord object, got {describe(value)}")
        if "unit" not in value:
            raise where.error("unit", "missing (every record names its unit)")
        unit = validate(UnitId, value["unit"], where, "unit")
        if unit in self._lines:
            raise FormatError(f"{self.path} line {number}: a second record of {unit}")
        self._lines[unit] = (start, number)

    def __getitem__(self, unit: UnitId) -> NeuronRecord:
        """The record of ``unit``, read from the file.

        Raises:
            KeyError: the file has no record of ``unit``.
            InvalidRecordError: its line does not validate as a `NeuronRecord` (naming the
                file, the line and the field), e.g. the file changed since it was opened.
        """
        start, number = self._lines[unit]
        with open(self.path, "rb") as f:
            f.seek(start)
            raw = f.readline()
        where = Where(str(self.path), number)
        try:
            return validate(NeuronRecord, _line_value(raw, where), where)
        except FormatError as exc:
            raise InvalidRecordError(str(exc)) from None

    def __iter__(self) -> Iterator[UnitId]:
        return iter(self._lines)

    def __len__(self) -> int:
        return len(self._lines)

    def __contains__(self, unit: object) -> bool:
        return unit in self._lines

    @property
    def name(self) -> str:
        """What identifies these records in a run database: the file's name and the first 16
        hex digits of its sha256 (a run resumes only on the same bytes, wherever they lie)."""
        return f"{self.path.name} sha256:{self.sha256[:16]}"
