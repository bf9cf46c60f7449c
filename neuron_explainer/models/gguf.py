"""Read a GGUF file's header (its metadata) with the `gguf` package, without loading weights.

`gguf_metadata` gives the scalar and string metadata; `gguf_shape` the transformers
``model_type``, layer count and MLP width that `neuron_explainer.models.loading.model_shape`
reports for a ``.gguf`` file. The `gguf` package (a dependency) is imported only when a header is
read. Reading maps the file into memory and parses the header's key/value fields in order, with
the package's own field parser; `gguf_shape` stops at the last field it needs (the vocabulary
arrays that follow take seconds to parse: 10 s for Gemma 3's 262k tokens, against 0.2 s for the
shape alone). The weights are never read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from neuron_explainer.errors import InvalidInputError

__all__ = ["GGUF_MODEL_TYPES", "gguf_metadata", "gguf_shape"]

GGUF_MODEL_TYPES = {
    "gpt2": "gpt2",
    "gptneox": "gpt_neox",
    "llama": "llama",
    "qwen2": "qwen2",
    "gemma3": "gemma3_text",
}
"""GGUF ``general.architecture`` names → transformers ``model_type`` (those `gguf_shape`
supports)."""

GGUFValue = str | int | float | bool
"""A scalar or string metadata value."""


class _Enough(Exception):
    """Raised from the reader once the fields wanted have been read."""

    def __init__(self, fields: Mapping[str, Any]) -> None:
        super().__init__()
        self.fields = fields


def _read_fields(
    path: str | os.PathLike[str], name: str | None, enough: Callable[[Mapping[str, Any]], bool]
) -> Mapping[str, Any]:
    """The key/value fields of the GGUF file ``path`` (`gguf.ReaderField` by key), read in file
    order by the `gguf` package's parser until ``enough(fields)`` holds (or to the end).

    Raises:
        InvalidInputError: the file cannot be read or is not a GGUF file.
    """
    from gguf import GGUFReader

    class HeaderReader(GGUFReader):
        def _build_fields(self, offs: int, count: int) -> int:
            for _ in range(int(count)):  # the package's own loop, one field at a time
                offs = super()._build_fields(offs, 1)
                if enough(self.fields):
                    raise _Enough(self.fields)
            return offs

    try:
        return dict(HeaderReader(path).fields)
    except _Enough as stop:
        return stop.fields
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        shown = name or os.fspath(path)
        raise InvalidInputError(f"cannot read the GGUF header of {shown!r}: {exc}") from exc


def _values(fields: Mapping[str, Any]) -> dict[str, GGUFValue]:
    """The scalar and string values among ``fields`` (arrays and the file's own ``GGUF.*``
    entries left out)."""
    from gguf import GGUFValueType

    found: dict[str, GGUFValue] = {}
    for key, field in fields.items():
        if key.startswith("GGUF.") or not field.types or field.types[0] == GGUFValueType.ARRAY:
            continue
        value: Any = field.parts[field.data[0]]
        if field.types[0] == GGUFValueType.STRING:
            found[key] = bytes(value).decode("utf-8", "replace")
        else:
            found[key] = value[0].item()
    return found


def gguf_metadata(path: str | os.PathLike[str], *, name: str | None = None) -> dict[str, GGUFValue]:
    """The scalar and string metadata of the GGUF file ``path`` (arrays, such as the
    vocabulary, are left out), by key, in file order. ``name`` names the file in errors
    (default: ``path``).

    Raises:
        InvalidInputError: the file cannot be read or is not a GGUF file the `gguf` package
            reads (the message says why).
    """
    return _values(_read_fields(path, name, lambda fields: False))


def _has_shape(fields: Mapping[str, Any]) -> bool:
    """Whether ``fields`` hold the architecture and its layer count and MLP width."""
    if "general.architecture" not in fields:
        return False
    arch = _values({"general.architecture": fields["general.architecture"]})
    prefix = arch.get("general.architecture")
    return f"{prefix}.block_count" in fields and f"{prefix}.feed_forward_length" in fields


def gguf_shape(path: str | os.PathLike[str], *, name: str | None = None) -> tuple[str, int, int]:
    """``(model_type, layers, MLP neurons per layer)`` of the GGUF file ``path``, from its
    ``general.architecture``, ``<arch>.block_count`` and ``<arch>.feed_forward_length``.
    ``name`` names the file in errors (default: ``path``).

    Raises:
        InvalidInputError: the header cannot be read, its architecture is not in
            `GGUF_MODEL_TYPES`, or it lacks the layer count or MLP width.
    """
    meta = _values(_read_fields(path, name, _has_shape))
    arch = meta.get("general.architecture")
    model_type = GGUF_MODEL_TYPES.get(str(arch))
    layers, width = meta.get(f"{arch}.block_count"), meta.get(f"{arch}.feed_forward_length")
    if model_type is None or not isinstance(layers, int) or not isinstance(width, int):
        raise InvalidInputError(
            f"cannot read the GGUF header of {name or os.fspath(path)!r}: GGUF architecture "
            f"{arch!r} is not supported"
        )
    return model_type, layers, width
