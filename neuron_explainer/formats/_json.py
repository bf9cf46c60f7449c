"""Reading plain JSON data into pydantic models, with errors that say where.

`validate` turns a pydantic ``ValidationError`` into one `FormatError` whose message names the
document (a file, and a line for JSONL), the JSON path of the offending value (e.g.
``most_positive_activation_records[3].activations``) and what is wrong with it, in plain words
(``expected a number, got the string '0.5'``). The file helpers read and write UTF-8 JSON and
JSONL.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from neuron_explainer.errors import FormatError

__all__ = [
    "At",
    "JSONObject",
    "PathLike",
    "Where",
    "describe",
    "dump_json",
    "iter_jsonl",
    "load_json_file",
    "validate",
    "write_text",
]

PathLike = str | os.PathLike[str]
JSONObject = Mapping[str, Any]
"""A JSON object as ``json.loads`` returns it."""
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


class At(ValueError):
    """A validator's error about the field ``field`` of the object it checks (rather than
    about the object itself)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field


def describe(value: Any) -> str:
    """``value`` in words for an error message: ``the string 'abc'``, ``a list of 3 items``."""
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


def _problem(error: ErrorDetails) -> str:
    """What is wrong, in words, for one pydantic error."""
    kind, value = error["type"], error.get("input")
    if kind == "missing":
        return "required field is missing"
    if kind == "string_type":
        return f"expected a string, got {describe(value)}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, got {describe(value)}"
    if kind == "finite_number":
        return f"must be a finite number, got {value!r}"
    if kind in ("tuple_type", "list_type"):
        return f"expected a list, got {describe(value)}"
    if kind in ("model_type", "dict_type"):
        return f"expected a JSON object, got {describe(value)}"
    if kind == "literal_error":
        return f"expected {error.get('ctx', {}).get('expected')}, got {describe(value)}"
    return str(error["msg"]).removeprefix("Value error, ")


def validate(cls: type[M], value: Any, where: Where, path: str = "") -> M:
    """``cls.model_validate(value)``, the first problem raised as a `FormatError` naming the
    JSON path below ``path`` where it is (an `At` error names a field of the object).

    Raises:
        FormatError: ``value`` does not validate.
    """
    try:
        return cls.model_validate(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where_in = path
        for part in first["loc"]:
            where_in = f"{where_in}[{part}]" if isinstance(part, int) else _key(where_in, part)
        cause = first.get("ctx", {}).get("error")
        if isinstance(cause, At):
            where_in = _key(where_in, cause.field)
        raise where.error(where_in, _problem(first)) from None


def _key(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


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
