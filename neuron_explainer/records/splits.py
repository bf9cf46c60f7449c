"""Deterministic, interleaved train / calibration / valid / test splits.

Top-activating records are dealt round-robin into ``train, calibration, valid, test`` (record
``i`` goes to split ``i % 4``), so every split gets a comparable mix of the strongest and the
weaker top excerpts. Random records are dealt the same way into ``calibration, valid, test``.
The explainer only ever sees ``train``; calibration is fitted on ``calibration``; the reported
score uses ``valid`` (or ``test``). Splits are disjoint by construction, and
`plan_splits` refuses record counts that cannot fill them. When a record holds the same
excerpt twice (duplicated text in the corpus) and it lands in train and in a scored split,
`split_records` warns with `HeldOutOverlapWarning`.
"""

from __future__ import annotations

import warnings
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from neuron_explainer.errors import InsufficientRecordsError, InvalidInputError
from neuron_explainer.records import ActivationRecord, NeuronRecord

__all__ = [
    "RANDOM_SPLITS",
    "TOP_SPLITS",
    "HeldOutOverlapWarning",
    "HeldOutSet",
    "SplitName",
    "SplitPlan",
    "Splits",
    "plan_splits",
    "split_records",
]

SplitName = Literal["train", "calibration", "valid", "test"]
HeldOutName = Literal["calibration", "valid", "test"]
TOP_SPLITS: tuple[SplitName, ...] = ("train", "calibration", "valid", "test")
RANDOM_SPLITS: tuple[HeldOutName, ...] = ("calibration", "valid", "test")

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class HeldOutOverlapWarning(UserWarning):
    """Some held-out excerpts repeat, token for token, an excerpt of the train split.

    Corpora with duplicated text can put the same excerpt in two splits; the explainer has then
    seen part of what it is scored on. Deduplicate excerpts when collecting records.
    """


class SplitPlan(BaseModel):
    """Which record indices go to which split. Small enough to store with every result."""

    model_config = _FROZEN

    n_top_per_split: int = Field(ge=1)
    n_random_per_split: int = Field(ge=0)
    top: dict[SplitName, tuple[int, ...]]
    random: dict[HeldOutName, tuple[int, ...]]


class HeldOutSet(BaseModel):
    """The records of one held-out split, top and random kept apart."""

    model_config = _FROZEN

    top: tuple[ActivationRecord, ...]
    random: tuple[ActivationRecord, ...]

    @property
    def records(self) -> tuple[ActivationRecord, ...]:
        """Top records first, then random records."""
        return self.top + self.random


class Splits(BaseModel):
    """A `NeuronRecord` cut into disjoint splits (see the module docstring)."""

    model_config = _FROZEN

    plan: SplitPlan
    train: tuple[ActivationRecord, ...]
    calibration: HeldOutSet
    valid: HeldOutSet
    test: HeldOutSet

    def held_out(self, name: HeldOutName) -> HeldOutSet:
        """Return the held-out split called ``name`` ("calibration", "valid" or "test")."""
        if name not in RANDOM_SPLITS:
            raise InvalidInputError(f"no held-out split {name!r}; choose one of {RANDOM_SPLITS}")
        held: HeldOutSet = getattr(self, name)
        return held

    def overlap_with_train(self, name: HeldOutName) -> int:
        """How many records of held-out split ``name`` repeat a train excerpt's tokens exactly."""
        seen = {r.tokens for r in self.train}
        return sum(r.tokens in seen for r in self.held_out(name).records)


def _per_split(
    available: int, names: tuple[str, ...], asked: int | None, what: str, *, required: bool
) -> int:
    n_splits = len(names)
    if asked is not None:
        if asked < 0:
            raise InvalidInputError(f"{what} per split must be >= 0, got {asked}")
        if asked * n_splits > available:
            raise InsufficientRecordsError(
                f"{asked} {what} per split need {asked * n_splits} records for the "
                f"{n_splits} splits {', '.join(names)}, but only {available} are available; "
                f"ask for at most {available // n_splits} per split"
            )
        if required and asked == 0:
            raise InvalidInputError(f"{what} per split must be >= 1")
        return asked
    per_split = available // n_splits
    if per_split == 0 and (required or available > 0):
        raise InsufficientRecordsError(
            f"{available} {what} cannot fill the {n_splits} splits {', '.join(names)}; "
            f"collect at least {n_splits}"
            + ("" if required else " (or none at all, or pass n_random_per_split=0)")
        )
    return per_split


def plan_splits(
    n_top: int,
    n_random: int,
    *,
    n_top_per_split: int | None = None,
    n_random_per_split: int | None = None,
) -> SplitPlan:
    """Plan interleaved splits for ``n_top`` top records and ``n_random`` random records.

    By default every split gets as many records as divide evenly (``n_top // 4`` top records,
    ``n_random // 3`` random records); the remainder is left out of every split.

    Raises:
        InsufficientRecordsError: fewer than 4 top records, 1 or 2 random records (either give
            none or at least 3), or more records per split asked for than exist.
        InvalidInputError: a negative count, or ``n_top_per_split=0``.
    """
    if n_top < 0 or n_random < 0:
        raise InvalidInputError(f"record counts must be >= 0, got {n_top=} and {n_random=}")
    top_k = _per_split(n_top, TOP_SPLITS, n_top_per_split, "top records", required=True)
    rand_k = _per_split(
        n_random, RANDOM_SPLITS, n_random_per_split, "random records", required=False
    )
    top = {
        name: tuple(range(offset, top_k * len(TOP_SPLITS), len(TOP_SPLITS)))
        for offset, name in enumerate(TOP_SPLITS)
    }
    random = {
        name: tuple(range(offset, rand_k * len(RANDOM_SPLITS), len(RANDOM_SPLITS)))
        for offset, name in enumerate(RANDOM_SPLITS)
    }
    return SplitPlan(n_top_per_split=top_k, n_random_per_split=rand_k, top=top, random=random)


def split_records(
    record: NeuronRecord,
    *,
    n_top_per_split: int | None = None,
    n_random_per_split: int | None = None,
) -> Splits:
    """Cut ``record`` into train / calibration / valid / test (see `plan_splits`).

    Raises:
        InsufficientRecordsError: when the record has too few records for the splits.
    """
    try:
        plan = plan_splits(
            len(record.top_records),
            len(record.random_sample),
            n_top_per_split=n_top_per_split,
            n_random_per_split=n_random_per_split,
        )
    except InsufficientRecordsError as exc:
        raise InsufficientRecordsError(f"{record.unit}: {exc}") from None

    def held(name: HeldOutName) -> HeldOutSet:
        return HeldOutSet(
            top=tuple(record.top_records[i] for i in plan.top[name]),
            random=tuple(record.random_sample[i] for i in plan.random[name]),
        )

    splits = Splits(
        plan=plan,
        train=tuple(record.top_records[i] for i in plan.top["train"]),
        calibration=held("calibration"),
        valid=held("valid"),
        test=held("test"),
    )
    for name in ("valid", "test"):
        repeats = splits.overlap_with_train(name)
        if repeats:
            warnings.warn(
                f"{record.unit}: {repeats} {name} excerpt(s) repeat a train excerpt token for "
                "token, so the explainer has seen part of what it is scored on; deduplicate "
                "the excerpts when collecting records",
                HeldOutOverlapWarning,
                stacklevel=2,
            )
    return splits
