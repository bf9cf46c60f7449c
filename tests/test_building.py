from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from conftest import make_record, number_rule, synthetic_excerpts

from neuron_explainer import ActivationRecord, InvalidInputError, UnitId, build_neuron_record
from neuron_explainer.records.building import moments
from neuron_explainer.records.splits import HeldOutOverlapWarning, split_records

UNIT = UnitId(model="m", layer=3, index=9)


def test_top_records_equal_a_brute_force_ranking() -> None:
    excerpts = synthetic_excerpts(number_rule, n=120, seed=4)
    record = build_neuron_record(UNIT, excerpts, top_k=15, n_random=10, seed=2)
    brute = sorted(excerpts, key=lambda r: -max(r.activations))[:15]
    assert list(record.top_records) == brute


def test_random_sample_is_seeded_and_disjoint_from_top() -> None:
    excerpts = synthetic_excerpts(number_rule, n=100, seed=1)
    a = build_neuron_record(UNIT, excerpts, top_k=10, n_random=20, seed=7)
    b = build_neuron_record(UNIT, excerpts, top_k=10, n_random=20, seed=7)
    c = build_neuron_record(UNIT, excerpts, top_k=10, n_random=20, seed=8)
    assert a.random_sample == b.random_sample and a.random_sample != c.random_sample
    assert len(a.random_sample) == 20 and len(set(a.random_sample)) == 20
    assert not set(a.random_sample) & set(a.top_records)


def test_quantile_samples_fall_inside_their_bins() -> None:
    excerpts = synthetic_excerpts(number_rule, n=400, seed=2)
    record = build_neuron_record(UNIT, excerpts, quantile_levels=(0.5, 0.9), n_per_quantile=4)
    maxes = [max(r.activations) for r in excerpts]
    assert record.quantile_boundaries == pytest.approx(tuple(np.quantile(maxes, [0.5, 0.9])))
    assert record.quantile_levels == (0.5, 0.9)
    edges = (-np.inf, *record.quantile_boundaries, np.inf)
    assert len(record.quantile_samples) == 3
    for i, sample in enumerate(record.quantile_samples):
        assert len(sample) == 4
        for excerpt in sample:
            assert edges[i] <= max(excerpt.activations) <= edges[i + 1]


def test_moments_match_scipy_and_count_every_token() -> None:
    excerpts = synthetic_excerpts(number_rule, n=50, seed=3)
    record = build_neuron_record(UNIT, [*excerpts, excerpts[0]], top_k=5, n_random=5)
    values = np.concatenate([e.activations for e in [*excerpts, excerpts[0]]])
    assert record.mean == pytest.approx(values.mean())
    assert record.variance == pytest.approx(values.var())
    assert record.skewness == pytest.approx(scipy.stats.skew(values))
    assert record.kurtosis == pytest.approx(scipy.stats.kurtosis(values))
    assert moments([2.0, 2.0]) == {"mean": 2.0, "variance": 0.0, "skewness": None, "kurtosis": None}


def test_duplicate_excerpts_are_kept_once() -> None:
    one = ActivationRecord(tokens=["a", "b"], activations=[9.0, 1.0])
    other = ActivationRecord(tokens=["c", "d"], activations=[1.0, 2.0])
    record = build_neuron_record(
        UNIT, [one, one, other, one], top_k=5, n_random=0, quantile_levels=()
    )
    assert record.top_records == (one, other)


def test_bad_arguments_are_typed() -> None:
    with pytest.raises(InvalidInputError, match="no excerpts"):
        build_neuron_record(UNIT, [])
    with pytest.raises(InvalidInputError, match="quantile_levels must ascend"):
        build_neuron_record(UNIT, synthetic_excerpts(number_rule, n=5), quantile_levels=(0.9, 0.5))


def test_repeated_excerpts_across_splits_warn() -> None:
    record = make_record(8, 0)
    tops = list(record.top_records)
    tops[2] = tops[0]  # index 0 -> train, index 2 -> valid
    with pytest.warns(HeldOutOverlapWarning, match="1 valid excerpt"):
        split_records(record.model_copy(update={"top_records": tuple(tops)}))
