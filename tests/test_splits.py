from __future__ import annotations

import pytest
from conftest import make_record
from hypothesis import given, settings
from hypothesis import strategies as st

from neuron_explainer import InsufficientRecordsError, InvalidInputError, split_records
from neuron_explainer.records.splits import RANDOM_SPLITS, TOP_SPLITS, plan_splits


def test_interleaving_follows_the_documented_rule() -> None:
    plan = plan_splits(10, 7)
    assert plan.n_top_per_split == 2 and plan.n_random_per_split == 2
    assert plan.top == {"train": (0, 4), "calibration": (1, 5), "valid": (2, 6), "test": (3, 7)}
    assert plan.random == {"calibration": (0, 3), "valid": (1, 4), "test": (2, 5)}


@given(
    n_top=st.integers(0, 300),
    n_random=st.integers(0, 300),
    top_k=st.none() | st.integers(0, 80),
    rand_k=st.none() | st.integers(0, 110),
)
@settings(max_examples=400, deadline=None)
def test_splits_are_disjoint_and_cover_for_any_counts(
    n_top: int, n_random: int, top_k: int | None, rand_k: int | None
) -> None:
    try:
        plan = plan_splits(n_top, n_random, n_top_per_split=top_k, n_random_per_split=rand_k)
    except InsufficientRecordsError as exc:
        # Refused only when the counts really cannot fill the splits, and the message says why.
        cannot = (
            (top_k is None and n_top < 4)
            or (top_k is not None and top_k * 4 > n_top)
            or (rand_k is None and 0 < n_random < 3)
            or (rand_k is not None and rand_k * 3 > n_random)
        )
        assert cannot, (n_top, n_random, top_k, rand_k)
        assert "split" in str(exc)  # noqa: PT017
        return
    except InvalidInputError:
        assert top_k == 0
        return
    k, r = plan.n_top_per_split, plan.n_random_per_split
    assert k == (top_k if top_k is not None else n_top // 4) and k >= 1
    assert r == (rand_k if rand_k is not None else n_random // 3)
    top_sets = [set(plan.top[name]) for name in TOP_SPLITS]
    random_sets = [set(plan.random[name]) for name in RANDOM_SPLITS]
    for sets, per, total in ((top_sets, k, n_top), (random_sets, r, n_random)):
        assert all(len(s) == per for s in sets)
        union = set().union(*sets)
        assert len(union) == per * len(sets)  # pairwise disjoint
        assert union == set(range(per * len(sets)))  # cover the first k*n records, no gaps
        assert all(0 <= i < total for i in union)


@pytest.mark.parametrize(
    ("n_top", "n_random", "message"),
    [
        (3, 9, "3 top records cannot fill the 4 splits train, calibration, valid, test"),
        (8, 2, "2 random records cannot fill the 3 splits"),
        (0, 0, "0 top records cannot fill"),
    ],
)
def test_too_few_records_is_a_clear_error(n_top: int, n_random: int, message: str) -> None:
    with pytest.raises(InsufficientRecordsError, match=message) as info:
        split_records(make_record(n_top, n_random))
    assert "test-model layer 1 mlp_neuron 2" in str(info.value)


def test_asking_for_more_than_exists_says_the_maximum() -> None:
    with pytest.raises(InsufficientRecordsError, match="ask for at most 2 per split"):
        plan_splits(9, 0, n_top_per_split=3)


def test_random_records_are_optional_and_can_be_turned_off() -> None:
    assert plan_splits(8, 0).n_random_per_split == 0
    assert plan_splits(8, 2, n_random_per_split=0).random["valid"] == ()


def test_split_records_hands_each_split_its_records() -> None:
    record = make_record(16, 9)
    splits = split_records(record)
    assert splits.train == tuple(record.top_records[i] for i in (0, 4, 8, 12))
    assert splits.valid.top == tuple(record.top_records[i] for i in (2, 6, 10, 14))
    assert splits.valid.random == tuple(record.random_sample[i] for i in (1, 4, 7))
    assert splits.test.records == splits.test.top + splits.test.random
    held_out = [r for name in RANDOM_SPLITS for r in splits.held_out(name).records]
    assert not set(map(id, splits.train)) & set(map(id, held_out))
    with pytest.raises(InvalidInputError, match="no held-out split 'train'"):
        splits.held_out("train")  # type: ignore[arg-type]
