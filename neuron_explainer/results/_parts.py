"""Small parts of results shared by several of them: `ComponentInfo` (who produced it),
`SimulationFailure` (why one excerpt got no usable answer) and `UsageSummary` (what LLM calls
consumed). Re-exported by `neuron_explainer.results`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from neuron_explainer.results._stats import REASON_PATTERN

__all__ = ["ComponentInfo", "SimulationFailure", "UsageSummary"]

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


class UsageSummary(BaseModel):
    """What LLM calls consumed: tokens, calls, cache hits and estimated cost.

    ``calls`` counts requests sent to a server; ``cache_hits`` counts answers served from a
    response cache, whose tokens are not counted again (they cost nothing this time).
    """

    model_config = _FROZEN

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    calls: int = 0
    cache_hits: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: UsageSummary) -> UsageSummary:
        return UsageSummary(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            calls=self.calls + other.calls,
            cache_hits=self.cache_hits + other.cache_hits,
            cost_usd=self.cost_usd + other.cost_usd,
        )
