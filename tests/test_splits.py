from __future__ import annotations

import pytest
from conftest import make_record
from hypothesis import given, settings
from hypothesis import strategies as st

from neuron_explainer import (
    ActivationRecord,
    InsufficientRecordsError,
    InvalidInputError,
    NeuronRecord,
    WindowId,
    split_records,
)
from neuron_explainer.records.splits import RANDOM_SPLITS, TOP_SPLITS, SplitPlan, plan_splits


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


# --- quantile samples and window ids --------------------------------------------------------


def named(record: ActivationRecord, document: int) -> ActivationRecord:
    return record.model_copy(update={"window_id": WindowId(document=document, start=0)})


def record_with_quantiles() -> NeuronRecord:
    """8 top, 6 random and two quantile bins, every excerpt named by its window; bin 1 repeats
    top record 0 (train) and top record 1 (calibration)."""
    base = make_record(8, 6)
    top = tuple(named(r, i) for i, r in enumerate(base.top_records))
    random = tuple(named(r, 100 + i) for i, r in enumerate(base.random_sample))
    extra = make_record(10, 0).top_records
    low = tuple(
        named(r.model_copy(update={"tokens": (f" q{i}",) * len(r)}), 200 + i)
        for i, r in enumerate(extra[:3])
    )
    high = (
        top[0],
        top[1],
        *(
            named(r.model_copy(update={"tokens": (f" h{i}",) * len(r)}), 300 + i)
            for i, r in enumerate(extra[:4])
        ),
    )
    return base.model_copy(
        update={
            "top_records": top,
            "random_sample": random,
            "quantile_boundaries": (1.0,),
            "quantile_samples": (low, high),
        }
    )


def test_quantile_samples_are_dealt_into_held_out_splits_only() -> None:
    plan = plan_splits(8, 6, quantile=[range(7), [], [4, 1, 9]])
    assert plan.quantile == {
        "calibration": ((0, 3), (), (4,)),
        "valid": ((1, 4), (), (1,)),
        "test": ((2, 5), (), (9,)),
    }
    assert plan_splits(8, 6).quantile == {"calibration": (), "valid": (), "test": ()}
    with pytest.raises(InvalidInputError, match=r"quantile bin 1: .* distinct"):
        plan_splits(8, 6, quantile=[[0], [2, 2]])


@given(sizes=st.lists(st.integers(0, 40), max_size=6))
@settings(max_examples=200, deadline=None)
def test_quantile_bins_split_evenly_and_disjointly(sizes: list[int]) -> None:
    plan = plan_splits(8, 3, quantile=[range(n) for n in sizes])
    assert plan.quantile is not None
    for b, n in enumerate(sizes):
        parts = [set(plan.quantile[name][b]) for name in RANDOM_SPLITS]
        assert all(len(p) == n // 3 for p in parts)
        assert set().union(*parts) == set(range(n // 3 * 3))  # disjoint, no gaps


def test_a_quantile_sample_repeating_another_record_is_left_out() -> None:
    record = record_with_quantiles()
    splits = split_records(record)
    assert splits.plan.quantile == {
        "calibration": ((0,), (2,)),
        "valid": ((1,), (3,)),
        "test": ((2,), (4,)),
    }  # bin 1: samples 0 and 1 are top records, so 2.. are dealt (5 is left over)
    assert splits.valid.quantile == (
        (record.quantile_samples[0][1],),
        (record.quantile_samples[1][3],),
    )
    assert splits.valid.records == splits.valid.top + splits.valid.random  # what is simulated
    assert splits.valid.all_records == splits.valid.records + splits.valid.quantile_records
    assert record.top_records[0] in splits.train
    assert splits.check_disjoint() == 2 + 3 * (2 + 2 + 2)
    assert splits.windows("train") == {WindowId(document=0, start=0), WindowId(document=4, start=0)}
    assert WindowId(document=300, start=0) in splits.windows("calibration")


def test_check_disjoint_finds_a_train_window_in_a_held_out_split() -> None:
    splits = split_records(record_with_quantiles())
    leaked = splits.valid.model_copy(update={"quantile": ((splits.train[0],), ())})
    broken = splits.model_copy(update={"valid": leaked})
    assert broken.overlap_with_train("valid") == 1  # token for token
    with pytest.raises(
        InvalidInputError, match=r"document 0 token 0 is in both the train and the valid"
    ):
        broken.check_disjoint()
    twice = splits.test.model_copy(update={"quantile": ((splits.test.top[0],), ())})
    with pytest.raises(InvalidInputError, match="test split holds 1 window"):
        splits.model_copy(update={"test": twice}).check_disjoint()


def test_records_without_window_ids_cannot_be_checked_by_identity() -> None:
    splits = split_records(make_record(16, 9))
    with pytest.raises(
        InvalidInputError, match="4 of the 4 records of the train split have no window id"
    ):
        splits.windows("train")
    with pytest.raises(InvalidInputError, match="no window id"):
        splits.check_disjoint()
    with pytest.raises(InvalidInputError, match="no held-out split 'dev'"):
        splits.windows("dev")  # type: ignore[arg-type]


def test_a_split_plan_stored_without_quantile_part_still_loads_and_agrees() -> None:
    stored = SplitPlan.model_validate_json(
        '{"n_top_per_split": 2, "n_random_per_split": 2, "top": {"train": [0, 4], '
        '"calibration": [1, 5], "valid": [2, 6], "test": [3, 7]}, "random": {"calibration": '
        '[0, 3], "valid": [1, 4], "test": [2, 5]}}'
    )
    assert stored.quantile is None
    now = plan_splits(8, 6, quantile=[range(6)])
    assert now.agrees_with(stored) and not stored.agrees_with(now)
    assert not plan_splits(8, 7, n_random_per_split=1).agrees_with(stored)
    assert now.agrees_with(now) and SplitPlan.model_validate_json(now.model_dump_json()) == now
