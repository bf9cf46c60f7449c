"""`SimulationStats`: how a unit's (or a run's) simulations went; re-exported by
`neuron_explainer.results`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, model_validator

__all__ = ["REASON_PATTERN", "SimulationStats"]

REASON_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
"""What a failure's reason class looks like: a short lower-case label (``"misaligned"``)."""
_REASON = re.compile(REASON_PATTERN)


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{key} {n}" for key, n in sorted(counts.items(), key=lambda kv: -kv[1]))


class SimulationStats(BaseModel):
    """How simulating went, summed over every simulation of a unit (or of a run).

    Attributes:
        attempted: excerpts a simulation was asked for: the scored and calibration splits',
            and each best-of-k candidate's calibration excerpts.
        failed: excerpts that could not be simulated; by reason class in
            ``failure_reasons`` (`neuron_explainer.interfaces.FAILURE_REASONS`).
        constant: simulated excerpts of two or more tokens whose predictions are all equal.
        retried: requests a simulator sent again within a simulation (reported with
            `neuron_explainer.interfaces.record_retry`); by reason in ``retry_reasons``.
        prompt_tokens, completion_tokens: the tokens the simulator's LLM calls used (answers
            from a response cache count none).

    Raises:
        pydantic.ValidationError: counts that do not add up (``failed`` is the sum of
            ``failure_reasons``, ``retried`` of ``retry_reasons``; at most ``attempted``
            failed, and constant ones are among the simulated ones).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempted: NonNegativeInt = 0
    failed: NonNegativeInt = 0
    failure_reasons: dict[str, NonNegativeInt] = Field(default_factory=dict)
    constant: NonNegativeInt = 0
    retried: NonNegativeInt = 0
    retry_reasons: dict[str, NonNegativeInt] = Field(default_factory=dict)
    prompt_tokens: NonNegativeInt = 0
    completion_tokens: NonNegativeInt = 0

    @model_validator(mode="after")
    def _counts_add_up(self) -> Self:
        if self.failed != sum(self.failure_reasons.values()):
            raise ValueError(f"failed ({self.failed}) must be the sum of failure_reasons")
        if self.retried != sum(self.retry_reasons.values()):
            raise ValueError(f"retried ({self.retried}) must be the sum of retry_reasons")
        if self.failed > self.attempted or self.constant > self.attempted - self.failed:
            raise ValueError("failed and constant excerpts must be among the attempted ones")
        if not all(map(_REASON.match, (*self.failure_reasons, *self.retry_reasons))):
            raise ValueError(f"reasons must be short labels matching {REASON_PATTERN}")
        return self

    @property
    def simulated(self) -> int:
        """Excerpts simulated: ``attempted - failed``."""
        return self.attempted - self.failed

    def __add__(self, other: SimulationStats) -> SimulationStats:
        def merged(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
            return {k: a.get(k, 0) + b.get(k, 0) for k in sorted({*a, *b})}

        return SimulationStats(
            attempted=self.attempted + other.attempted,
            failed=self.failed + other.failed,
            failure_reasons=merged(self.failure_reasons, other.failure_reasons),
            constant=self.constant + other.constant,
            retried=self.retried + other.retried,
            retry_reasons=merged(self.retry_reasons, other.retry_reasons),
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )

    def describe(self) -> str:
        """One line for people: ``"24 of 26 simulated (2 failed: misaligned 2), 3 constant,
        1 retried (misaligned 1), 1200 prompt + 300 completion tokens"``."""
        failed = f" ({self.failed} failed: {_counts(self.failure_reasons)})" if self.failed else ""
        retried = f" ({_counts(self.retry_reasons)})" if self.retried else ""
        return (
            f"{self.simulated} of {self.attempted} simulated{failed}, {self.constant} constant, "
            f"{self.retried} retried{retried}, {self.prompt_tokens} prompt + "
            f"{self.completion_tokens} completion tokens"
        )
