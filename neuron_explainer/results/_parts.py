"""Small parts of results shared by several of them: `ComponentInfo` (who produced it) and
`SimulationFailure` (why one excerpt got no usable answer). Re-exported by
`neuron_explainer.results`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from neuron_explainer.results._stats import REASON_PATTERN

__all__ = ["ComponentInfo", "SimulationFailure"]

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class ComponentInfo(BaseModel):
    """Names and settings of a component, recorded in every result it helps produce."""

    model_config = _FROZEN

    name: str
    version: str | None = None
    prompt_version: str | None = None
    settings: dict[str, JsonValue] = Field(default_factory=dict)


class SimulationFailure(BaseModel):
    """Why one excerpt could not be simulated: counted as a failure, never scored as zeros.

    Attributes:
        reason: the failure's class, a short stable label (lower-case letters, digits and
            ``_``, at most 32 characters), e.g. ``"misaligned"``; the built-in classes are
            listed in `neuron_explainer.interfaces.FAILURE_REASONS`.
        message: what went wrong, for people.

    Raises:
        pydantic.ValidationError: a reason that is not such a label.
    """

    model_config = _FROZEN

    reason: str = Field(pattern=REASON_PATTERN)
    message: str = ""
