"""Deterministic, interleaved train / calibration / valid / test splits.

Top-activating records are dealt round-robin into ``train, calibration, valid, test`` (record
``i`` goes to split ``i % 4``), so every split gets a comparable mix of the strongest and the
weaker top excerpts. Random records are dealt the same way into ``calibration, valid, test``,
and so are the samples of each quantile bin (the ``j``-th sample of a bin that may be dealt
goes to held-out split ``j % 3``): quantile samples are held out only, never shown to the
explainer. A quantile sample that repeats, token for token, a top or random record (or an
earlier quantile sample) of the same `NeuronRecord` is left out: it is dealt once, as that
record, so no excerpt is in two splits.

The explainer only ever sees ``train``; calibration is fitted on ``calibration``; the reported
score uses ``valid`` (or ``test``). Splits are disjoint by construction, and `plan_splits`
refuses record counts that cannot fill them. When a record holds the same excerpt twice
(duplicated text in the corpus) and it lands in train and in a scored split, `split_records`
warns with `HeldOutOverlapWarning`. Records that carry window ids (every record a subject
recorded over a corpus) can be checked by identity too: `Splits.windows` and
`Splits.check_disjoint`.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from neuron_explainer.errors import InsufficientRecordsError, InvalidInputError
from neuron_explainer.records import ActivationRecord, NeuronRecord, WindowId

__all__ = [
    "RANDOM_SPLITS",
    "TOP_SPLITS",
    "HeldOutName",
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
    """Which record indices go to which split. Small enough to store with every result.

    Attributes:
        n_top_per_split: top records in each of the four splits.
        n_random_per_split: random records in each held-out split.
        top: the indices into ``top_records`` of each split.
        random: the indices into ``random_sample`` of each held-out split.
        quantile: for each held-out split, one tuple per quantile bin: the indices into that
            bin of ``quantile_samples``. ``None`` in a plan stored before quantile samples
            were split (results of format 4 and older): it says nothing about them.
    """

    model_config = _FROZEN

    n_top_per_split: int = Field(ge=1)
    n_random_per_split: int = Field(ge=0)
    top: dict[SplitName, tuple[int, ...]]
    random: dict[HeldOutName, tuple[int, ...]]
    quantile: dict[HeldOutName, tuple[tuple[int, ...], ...]] | None = None

    def agrees_with(self, stored: SplitPlan) -> bool:
        """Whether this plan deals records as ``stored`` did: the plans are equal, or
        ``stored`` predates quantile splits (its ``quantile`` is ``None``) and the top and
        random parts are equal."""
        if stored.quantile is None:
            return self.model_copy(update={"quantile": None}) == stored
        return self == stored


class HeldOutSet(BaseModel):
    """The records of one held-out split, top, random and quantile samples kept apart.

    Attributes:
        top: its top records.
        random: its random records.
        quantile: its quantile samples, one tuple per bin of the record's
            ``quantile_samples`` (empty when the record has none).
    """

    model_config = _FROZEN

    top: tuple[ActivationRecord, ...]
    random: tuple[ActivationRecord, ...]
    quantile: tuple[tuple[ActivationRecord, ...], ...] = ()

    @property
    def records(self) -> tuple[ActivationRecord, ...]:
        """Top records first, then random records: what simulation scoring scores."""
        return self.top + self.random

    @property
    def quantile_records(self) -> tuple[ActivationRecord, ...]:
        """The quantile samples of every bin, lowest bin first."""
        return tuple(itertools.chain.from_iterable(self.quantile))

    @property
    def all_records(self) -> tuple[ActivationRecord, ...]:
        """Every record of the split: top, random, then quantile samples."""
        return self.records + self.quantile_records


class Splits(BaseModel):
    """A `NeuronRecord` cut into disjoint splits (see the module docstring)."""

    model_config = _FROZEN

    plan: SplitPlan
    train: tuple[ActivationRecord, ...]
    calibration: HeldOutSet
    valid: HeldOutSet
    test: HeldOutSet

    def held_out(self, name: HeldOutName) -> HeldOutSet:
        """Return the held-out split called ``name`` ("calibration", "valid" or "test").

        Raises:
            InvalidInputError: ``name`` is not a held-out split.
        """
        if name not in RANDOM_SPLITS:
            raise InvalidInputError(f"no held-out split {name!r}; choose one of {RANDOM_SPLITS}")
        held: HeldOutSet = getattr(self, name)
        return held

    def overlap_with_train(self, name: HeldOutName) -> int:
        """How many records of held-out split ``name`` (top, random and quantile samples)
        repeat a train excerpt's tokens exactly.

        Raises:
            InvalidInputError: ``name`` is not a held-out split.
        """
        seen = {r.tokens for r in self.train}
        return sum(r.tokens in seen for r in self.held_out(name).all_records)

    def windows(self, name: SplitName) -> frozenset[WindowId]:
        """The window ids of every record of split ``name``: the train records, or a held-out
        split's top, random and quantile samples.

        Raises:
            InvalidInputError: ``name`` is not a split, or a record of it has no window id
                (built by hand, or read from a file written before window ids), so the split
                cannot be checked by identity.
        """
        records = self.train if name == "train" else self.held_out(name).all_records
        missing = sum(r.window_id is None for r in records)
        if missing:
            raise InvalidInputError(
                f"{missing} of the {len(records)} records of the {name} split have no window "
                "id (records built by hand, or read from a file written before window ids); "
                "record them with a subject to check the splits by identity"
            )
        return frozenset(r.window_id for r in records if r.window_id is not None)

    def check_disjoint(self) -> int:
        """Check by identity that no window is in two splits, quantile samples included, so
        no excerpt the explainer saw (train) is judged and no held-out split repeats another.

        Returns:
            How many distinct windows the splits hold together.

        Raises:
            InvalidInputError: two splits share a window (the message names both and the
                window), or a record has no window id (see `windows`).
        """
        where: dict[WindowId, SplitName] = {}
        for name in TOP_SPLITS:
            ids = self.windows(name)
            if name != "train":
                held = self.held_out(name).all_records
                if len(ids) < len(held):
                    raise InvalidInputError(
                        f"the {name} split holds {len(held) - len(ids)} window(s) twice"
                    )
            for window in sorted(ids, key=lambda w: (w.document, w.start)):
                if window in where:
                    raise InvalidInputError(
                        f"the window at {window} is in both the {where[window]} and the "
                        f"{name} split"
                    )
                where[window] = name
        return len(where)


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
    quantile: Sequence[Sequence[int]] = (),
) -> SplitPlan:
    """Plan interleaved splits for ``n_top`` top records, ``n_random`` random records and the
    quantile samples ``quantile`` may deal.

    By default every split gets as many records as divide evenly (``n_top // 4`` top records,
    ``n_random // 3`` random records); the remainder is left out of every split. ``quantile``
    holds, for each quantile bin, the indices of the samples of that bin that may be dealt (in
    order; `split_records` leaves out those that repeat another record): each held-out split
    gets ``len(indices) // 3`` of them, the ``j``-th going to split ``j % 3``, and the remainder
    is left out. Quantile samples never go to train.

    Raises:
        InsufficientRecordsError: fewer than 4 top records, 1 or 2 random records (either give
            none or at least 3), or more records per split asked for than exist.
        InvalidInputError: a negative count, ``n_top_per_split=0``, or a bin's indices that
            are negative or repeat.
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
    bins = [tuple(int(i) for i in indices) for indices in quantile]
    for b, indices in enumerate(bins):
        if any(i < 0 for i in indices) or len(set(indices)) != len(indices):
            raise InvalidInputError(
                f"quantile bin {b}: sample indices must be >= 0 and distinct, got {indices}"
            )
    n = len(RANDOM_SPLITS)
    dealt = {
        name: tuple(indices[offset : len(indices) // n * n : n] for indices in bins)
        for offset, name in enumerate(RANDOM_SPLITS)
    }
    return SplitPlan(
        n_top_per_split=top_k, n_random_per_split=rand_k, top=top, random=random, quantile=dealt
    )


def _dealable_quantile_samples(record: NeuronRecord) -> list[list[int]]:
    """For each quantile bin of ``record``, the indices of the samples `split_records` may deal:
    those that repeat no top or random record and no earlier quantile sample, token for token.
    """
    seen = {r.tokens for r in (*record.top_records, *record.random_sample)}
    bins = []
    for sample in record.quantile_samples:
        kept = []
        for j, excerpt in enumerate(sample):
            if excerpt.tokens not in seen:
                seen.add(excerpt.tokens)
                kept.append(j)
        bins.append(kept)
    return bins


def split_records(
    record: NeuronRecord,
    *,
    n_top_per_split: int | None = None,
    n_random_per_split: int | None = None,
) -> Splits:
    """Cut ``record`` into train / calibration / valid / test (see `plan_splits`): top records
    into all four, random records and quantile samples into the three held-out splits. A
    quantile sample that repeats a top or random record (or an earlier quantile sample) token
    for token is left out of every split.

    Raises:
        InsufficientRecordsError: when the record has too few records for the splits.
    """
    try:
        plan = plan_splits(
            len(record.top_records),
            len(record.random_sample),
            n_top_per_split=n_top_per_split,
            n_random_per_split=n_random_per_split,
            quantile=_dealable_quantile_samples(record),
        )
    except InsufficientRecordsError as exc:
        raise InsufficientRecordsError(f"{record.unit}: {exc}") from None
    quantile = plan.quantile or {}

    def held(name: HeldOutName) -> HeldOutSet:
        return HeldOutSet(
            top=tuple(record.top_records[i] for i in plan.top[name]),
            random=tuple(record.random_sample[i] for i in plan.random[name]),
            quantile=tuple(
                tuple(sample[i] for i in indices)
                for sample, indices in zip(record.quantile_samples, quantile[name], strict=True)
            ),
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
