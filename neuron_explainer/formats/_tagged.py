"""OpenAI's JSON objects as pydantic models: each object may carry ``dataclass_name`` (its
Python dataclass in OpenAI's code), and its numbers are read strictly.

`OpenAIObject` is the base of every model that reads such an object: it refuses anything that
is not an object, a wrong ``dataclass_name`` and unknown fields, naming them. `Number`,
`Score` and `Index` are the value types: a finite float (an integer reads as a float; a
string or a boolean is refused), a float that may be ``null`` or ``NaN`` (read as ``None``),
and a non-negative integer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

from pydantic import AllowInfNan, BaseModel, BeforeValidator, ConfigDict, Strict, model_validator

from neuron_explainer.formats._json import At, describe

__all__ = ["Index", "NeuronIdIn", "Number", "OpenAIObject", "Score"]


def _nan_is_none(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def _index(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a non-negative integer, got {describe(value)}")
    if value < 0:
        raise ValueError(f"must be >= 0, got {value}")
    return value


Number = Annotated[float, Strict(), AllowInfNan(False)]
"""A finite number, as a float (an integer is accepted; strings and booleans are not)."""

Score = Annotated[Number | None, BeforeValidator(_nan_is_none)]
"""A statistic that may be undefined: ``null`` and ``NaN`` read as ``None``."""

Index = Annotated[int, BeforeValidator(_index)]
"""A layer or neuron index: a non-negative integer."""


class OpenAIObject(BaseModel):
    """A model of one of OpenAI's dataclasses, named by `openai_name`.

    Reading a mapping checks its ``dataclass_name`` (optional; when present it must be
    `openai_name`) and drops it, and refuses keys that are not fields, listing them all.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    openai_name: ClassVar[str]
    """The ``dataclass_name`` of the object in OpenAI's files."""

    @model_validator(mode="before")
    @classmethod
    def _read_tagged(cls, data: Any) -> Any:
        if isinstance(data, BaseModel):
            return data
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a JSON object ({cls.openai_name}), got {describe(data)}")
        name = data.get("dataclass_name", cls.openai_name)
        if name != cls.openai_name:
            raise At("dataclass_name", f"expected {cls.openai_name!r}, got {describe(name)}")
        unknown = sorted(
            str(k) for k in data if k != "dataclass_name" and k not in cls.model_fields
        )
        if unknown:
            raise ValueError(
                f"unexpected field(s) {', '.join(map(repr, unknown))} in {cls.openai_name}; "
                f"known fields: {', '.join(map(repr, cls.model_fields))}"
            )
        return {k: v for k, v in data.items() if k != "dataclass_name"}


class NeuronIdIn(OpenAIObject):
    """OpenAI's ``NeuronId``: a layer and a neuron index (the model is not recorded)."""

    openai_name = "NeuronId"

    layer_index: Index
    neuron_index: Index
