from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from neuron_explainer import ActivationRecord, InvalidInputError, InvalidRecordError
from neuron_explainer import SequenceSimulation as Sim
from neuron_explainer.scorers.correlation import (
    absolute_dev_explained,
    apply_calibration,
    correlation,
    fit_calibration,
    rsquared,
    score_simulations,
)

rng = np.random.default_rng(1234)


@pytest.mark.parametrize("n", [2, 3, 17, 1000])
def test_correlation_matches_scipy_on_random_data(n: int) -> None:
    for _ in range(20):
        y, p = rng.normal(size=n), rng.normal(size=n) * 3 + 1
        value = correlation(y, p).value
        assert value is not None
        assert value == pytest.approx(scipy.stats.pearsonr(y, p).statistic, abs=1e-12)


@given(
    arrays(np.float64, 30, elements=st.floats(-1e6, 1e6)),
    arrays(np.float64, 30, elements=st.floats(-1e6, 1e6)),
)
@settings(max_examples=200, deadline=None)
def test_correlation_is_defined_exactly_when_scipy_is(y: np.ndarray, p: np.ndarray) -> None:
    score = correlation(y, p)
    if np.ptp(y) == 0 or np.ptp(p) == 0:
        assert score.value is None and score.reason
        return
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the reference on inputs scaled to a max of 1: pearsonr loses subnormal inputs
        scaled = y / np.max(np.abs(y)), p / np.max(np.abs(p))
        expected = scipy.stats.pearsonr(*scaled).statistic
    if score.value is None:  # numerically degenerate: must say so, never NaN
        assert score.reason
    else:
        assert -1.0 <= score.value <= 1.0
        if np.isfinite(expected):
            assert score.value == pytest.approx(expected, abs=1e-7)


def test_correlation_survives_tiny_and_huge_values() -> None:
    y = np.array([0.0] + [1.0] * 29)
    p = np.array([2.9e-161] + [0.0] * 29)  # numpy's corrcoef underflows to -0.979 here
    assert correlation(y, p).value == pytest.approx(-1.0)
    assert correlation(y * 1e300, -p).value == pytest.approx(1.0)
    # subnormal predictions: their mean rounds to 0 unless they are scaled first (scipy's
    # pearsonr gives -0.949 on these; the exact value, in fractions, is -0.69481)
    tiny = np.array([5e-324, 5e-324] + [0.0] * 28)
    assert correlation(y, tiny).value == pytest.approx(-0.6948083337796511, abs=1e-12)


def test_constant_inputs_give_undefined_scores_with_reasons() -> None:
    y = np.array([0.0, 1.0, 2.0])
    flat = np.zeros(3)
    assert correlation(y, flat).reason == "simulation is constant (0 on every token)"
    assert correlation(flat + 2, y).reason == "true activations are constant (2 on every token)"
    assert "at least 2 tokens" in (correlation([1.0], [2.0]).reason or "")
    assert "constant" in (rsquared(flat, y).reason or "")
    assert absolute_dev_explained(flat, y).value is None
    assert rsquared([], []).reason == "no tokens to score"


def test_rsquared_and_absolute_dev_explained_match_definitions() -> None:
    y, p = rng.normal(size=200), rng.normal(size=200)
    r2 = rsquared(y, p).value
    assert r2 == pytest.approx(1 - np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2))
    assert rsquared(y, y).value == 1.0
    assert rsquared(y, np.full_like(y, y.mean())).value == pytest.approx(0.0, abs=1e-12)
    ade = absolute_dev_explained(y, p).value
    assert ade == pytest.approx(1 - np.sum(np.abs(y - p)) / np.sum(np.abs(y - np.median(y))))
    assert absolute_dev_explained(y, np.full_like(y, np.median(y))).value == pytest.approx(0.0)


def test_mismatched_lengths_and_nan_are_typed_errors() -> None:
    with pytest.raises(InvalidInputError, match="differ in length \\(3 vs 2\\)"):
        correlation([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(InvalidInputError, match="finite"):
        rsquared([1.0, np.nan], [1.0, 2.0])


def test_linear_calibration_matches_scipy_linregress() -> None:
    x = rng.uniform(0, 10, 300)
    y = 0.4 * x - 1.5 + rng.normal(scale=0.5, size=300)
    cal = fit_calibration("linear", x, y)
    fit = scipy.stats.linregress(x, y)
    assert cal.slope == pytest.approx(fit.slope) and cal.intercept == pytest.approx(fit.intercept)
    assert cal.n_tokens == 300
    # In-sample, R² of the least-squares line equals the squared correlation.
    r2 = rsquared(y, apply_calibration(cal, x)).value
    assert r2 == pytest.approx(fit.rvalue**2)


def test_linear_calibration_of_a_constant_simulation_predicts_the_mean() -> None:
    cal = fit_calibration("linear", np.zeros(4), [1.0, 2.0, 3.0, 6.0])
    assert (cal.slope, cal.intercept) == (0.0, 3.0)
    assert cal.note and "constant" in cal.note
    assert list(apply_calibration(cal, [5.0, -1.0])) == [3.0, 3.0]


def test_percentile_calibration_matches_true_distribution() -> None:
    x = rng.uniform(0, 10, 500)
    y = np.exp(x / 3)  # monotone, non-linear: percentile matching recovers it exactly
    cal = fit_calibration("percentile", x, y)
    mapped = apply_calibration(cal, x)
    assert np.allclose(np.sort(mapped), np.sort(y), rtol=1e-9)
    assert list(cal.xs) == sorted(set(cal.xs)) and list(cal.ys) == sorted(cal.ys)
    # Beyond the calibration range predictions clamp to the extremes.
    assert apply_calibration(cal, [-5.0, 50.0]).tolist() == [min(y), max(y)]


def test_percentile_calibration_handles_ties() -> None:
    # Half the simulated values are 0 (ties): they map to the true quantile at their mean rank.
    x = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0])
    y = np.arange(8.0)
    cal = fit_calibration("percentile", x, y)
    assert cal.xs == (0.0, 1.0, 2.0, 3.0, 4.0)
    assert cal.ys == pytest.approx((1.5, 4.0, 5.0, 6.0, 7.0))
    constant = fit_calibration("percentile", np.ones(3), [1.0, 5.0, 9.0])
    assert apply_calibration(constant, [0.0, 7.0]).tolist() == [5.0, 5.0]


def test_calibration_rejects_unknown_method_and_empty_input() -> None:
    with pytest.raises(InvalidInputError, match="unknown calibration method 'cubic'"):
        fit_calibration("cubic", [1.0, 2.0], [1.0, 2.0])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="needs calibration tokens"):
        fit_calibration("linear", [], [])
    assert apply_calibration(fit_calibration("none", [], []), [1.0, 2.0]).tolist() == [1.0, 2.0]


def _pair(tokens: list[str], truth: list[float], sim: list[float]) -> tuple[ActivationRecord, Sim]:
    return (
        ActivationRecord(tokens=tokens, activations=truth),
        Sim(tokens=tuple(tokens), expected_activations=tuple(sim)),
    )


def test_score_simulations_pools_tokens_not_sequences() -> None:
    top = [
        _pair(["a", "b", "c"], [0.0, 5.0, 1.0], [0.0, 8.0, 2.0]),
        _pair(["d", "e"], [4.0, 0.0], [7.0, 1.0]),
    ]
    random = [_pair(["f", "g", "h"], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0])]
    cal = fit_calibration("linear", [0.0, 10.0], [0.0, 5.0])
    scored = score_simulations("valid", top, random, cal)
    truth = [0.0, 5.0, 1.0, 4.0, 0.0, 0.0, 0.0, 0.0]
    sims = [0.0, 8.0, 2.0, 7.0, 1.0, 0.0, 1.0, 0.0]
    assert scored.correlation.value == pytest.approx(scipy.stats.pearsonr(truth, sims).statistic)
    top_truth, top_sims = truth[:5], sims[:5]
    assert scored.top_correlation.value == pytest.approx(
        scipy.stats.pearsonr(top_truth, top_sims).statistic
    )
    # The random record's truth is constant: its own score and the random-only score are
    # undefined, and the mean per-sequence correlation skips it instead of counting a zero.
    assert scored.random_correlation.value is None
    assert scored.sequences[2].correlation.value is None
    per_seq = [
        scipy.stats.pearsonr(a, b).statistic
        for a, b in (([0.0, 5.0, 1.0], [0.0, 8.0, 2.0]), ([4.0, 0.0], [7.0, 1.0]))
    ]
    assert scored.mean_sequence_correlation.value == pytest.approx(np.mean(per_seq))
    calibrated = np.array(sims) * 0.5
    assert scored.rsquared.value == pytest.approx(
        1 - np.sum((np.array(truth) - calibrated) ** 2) / np.sum((truth - np.mean(truth)) ** 2)
    )
    assert [s.source for s in scored.sequences] == ["top", "top", "random"]
    assert scored.sequences[0].calibrated == pytest.approx((0.0, 4.0, 1.0), abs=1e-12)


def test_score_simulations_refuses_misaligned_simulations() -> None:
    record, _ = _pair(["a", "b"], [1.0, 2.0], [1.0, 2.0])
    short = Sim(tokens=("a",), expected_activations=(1.0,))
    with pytest.raises(InvalidRecordError, match="valid top record 0: 1 simulated tokens for 2"):
        score_simulations("valid", [(record, short)], [], fit_calibration("none", [], []))
    other = Sim(tokens=("a", "x"), expected_activations=(1.0, 2.0))
    with pytest.raises(InvalidRecordError, match="differ from the record's tokens"):
        score_simulations("valid", [(record, other)], [], fit_calibration("none", [], []))


def test_score_simulations_without_random_records_says_so() -> None:
    scored = score_simulations(
        "test", [_pair(["a", "b"], [0.0, 1.0], [0.0, 1.0])], [], fit_calibration("none", [], [])
    )
    assert scored.correlation.value == pytest.approx(1.0)
    assert scored.random_correlation.reason == "the test split has no random records"
