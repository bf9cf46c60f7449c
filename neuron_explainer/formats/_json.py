"""Path-aware reading of plain JSON data, shared by the format readers.

Every check raises `FormatError` whose message names the document
(a file, and a line for JSONL), the JSON path of the offending value (e.g.
``most_positive_activation_records[3].activations``) and what is wrong with it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection, Iterator, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from neuron_explainer.errors import FormatError

__all__ = [
    "PathLike",
    "Where",
    "build",
    "dump_json",
    "index",
    "iter_jsonl",
    "key",
    "load_json_file",
    "parse_float",
    "parse_float_list",
    "parse_index",
    "parse_list",
    "parse_object",
    "parse_optional_score",
    "parse_str",
    "parse_str_list",
    "required",
    "write_text",
]

PathLike = str | os.PathLike[str]
M = TypeVar("M", bound=BaseModel)


class Where:
    """The document being read (a file, or a description), and a line for JSONL."""

    __slots__ = ("line", "source")

    def __init__(self, source: str | None, line: int | None = None) -> None:
        self.source = source
        self.line = line

    def error(self, path: str, problem: str) -> FormatError:
        """A `FormatError` for the value at JSON ``path`` ("" is the top level)."""
        document = self.source or "OpenAI document"
        if self.line is not None:
            document += f" line {self.line}"
        return FormatError(f"{document}: {path or 'top level'}: {problem}")


def key(path: str, name: str) -> str:
    """The JSON path of field ``name`` of the object at ``path``."""
    return f"{path}.{name}" if path else name


def index(path: str, i: int) -> str:
    """The JSON path of item ``i`` of the list at ``path``."""
    return f"{path}[{i}]"


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} items"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def parse_object(
    value: Any, path: str, where: Where, dataclass_name: str, fields: Collection[str]
) -> Mapping[str, Any]:
    """Check that ``value`` is an object of OpenAI dataclass ``dataclass_name``.

    ``dataclass_name`` may be absent (older files); when present it must match. Keys other than
    ``fields`` and ``dataclass_name`` are refused, so nothing is silently dropped.
    """
    if not isinstance(value, Mapping):
        raise where.error(
            path, f"expected a JSON object ({dataclass_name}), got {_describe(value)}"
        )
    name = value.get("dataclass_name", dataclass_name)
    if name != dataclass_name:
        raise where.error(
            key(path, "dataclass_name"), f"expected {dataclass_name!r}, got {_describe(name)}"
        )
    unknown = sorted(str(k) for k in value if k != "dataclass_name" and k not in fields)
    if unknown:
        raise where.error(
            path,
            f"unexpected field(s) {', '.join(map(repr, unknown))} in {dataclass_name}; "
            f"known fields: {', '.join(map(repr, fields))}",
        )
    return value


def required(obj: Mapping[str, Any], name: str, path: str, where: Where) -> Any:
    """The value of field ``name``, which must be present (it may be null)."""
    if name not in obj:
        raise where.error(key(path, name), "required field is missing")
    return obj[name]


def parse_list(value: Any, path: str, where: Where) -> list[Any]:
    """``value``, which must be a JSON list."""
    if not isinstance(value, list | tuple):
        raise where.error(path, f"expected a list, got {_describe(value)}")
    return list(value)


def parse_str(value: Any, path: str, where: Where) -> str:
    """``value``, which must be a string."""
    if not isinstance(value, str):
        raise where.error(path, f"expected a string, got {_describe(value)}")
    return value


def parse_str_list(value: Any, path: str, where: Where) -> list[str]:
    """``value``, which must be a list of strings."""
    return [
        parse_str(v, index(path, i), where) for i, v in enumerate(parse_list(value, path, where))
    ]


def parse_float(value: Any, path: str, where: Where) -> float:
    """``value`` as a float; an integer is accepted, NaN and infinities are refused."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise where.error(path, f"expected a number, got {_describe(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise where.error(path, f"must be a finite number, got {number!r}")
    return number


def parse_float_list(value: Any, path: str, where: Where) -> list[float]:
    """``value``, which must be a list of finite numbers, as floats."""
    items = parse_list(value, path, where)
    return [parse_float(v, index(path, i), where) for i, v in enumerate(items)]


def parse_optional_score(value: Any, path: str, where: Where) -> float | None:
    """A nullable statistic: ``null`` and ``NaN`` read as ``None``; infinities are refused."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return parse_float(value, path, where)


def parse_index(value: Any, path: str, where: Where) -> int:
    """``value``, which must be a non-negative integer."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.error(path, f"expected a non-negative integer, got {_describe(value)}")
    if value < 0:
        raise where.error(path, f"must be >= 0, got {value}")
    return value


def build(cls: type[M], fields: Mapping[str, Any], path: str, where: Where) -> M:
    """Construct ``cls``, turning a pydantic ``ValidationError`` into a `FormatError`."""
    try:
        return cls(**fields)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where_in = path
        for part in first["loc"]:
            where_in = index(where_in, part) if isinstance(part, int) else key(where_in, str(part))
        message = str(first["msg"]).removeprefix("Value error, ")
        raise where.error(where_in, message) from None


def _decode(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{name}: not valid UTF-8 at byte {exc.start}") from None


def load_json_file(path: PathLike) -> tuple[Any, str]:
    """Parse a JSON file (UTF-8); return the value and the file's name for messages.

    Raises:
        FormatError: the file is not UTF-8 or not JSON.
        OSError: the file cannot be read.
    """
    name = os.fspath(path)
    with open(name, "rb") as f:
        text = _decode(f.read(), name)
    try:
        return json.loads(text), name
    except json.JSONDecodeError as exc:
        raise FormatError(
            f"{name}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None


def iter_jsonl(path: PathLike) -> Iterator[tuple[Any, Where]]:
    """Parse a JSONL file: yield each non-blank line's value with its `Where`.

    Lines are split on ``\\n`` only (a JSON string may hold U+2028 and the like).

    Raises:
        FormatError: the file is not UTF-8, or a line is not JSON (naming the line).
        OSError: the file cannot be read.
    """
    name = os.fspath(path)
    with open(name, "rb") as f:
        text = _decode(f.read(), name)
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip(" \t\r"):
            continue
        where = Where(name, number)
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise where.error("", f"not valid JSON: {exc.msg} (column {exc.colno})") from None
        yield value, where


def dump_json(value: Any) -> str:
    """Compact JSON: no NaN or infinity (``ValueError`` if any), non-ASCII escaped.

    Escaping keeps every token string writable, lone surrogates included, and the file valid
    UTF-8 (it is plain ASCII).
    """
    return json.dumps(value, allow_nan=False, ensure_ascii=True, separators=(",", ":"))


def write_text(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` as UTF-8 with ``\\n`` line endings."""
    with open(os.fspath(path), "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
