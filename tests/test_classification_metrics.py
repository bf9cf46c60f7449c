"""The metrics of classification scorers (`neuron_explainer.scorers._classification`): hand
computed cases, balanced against pooled accuracy, chance-level judges, failures, undefined
metrics, AUROC with ties against a brute-force count, the bootstrap and the JSON form."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.results import Score
from neuron_explainer.scorers._classification import (
    ClassificationMetrics,
    ConfidenceInterval,
    IntervalScore,
    _auroc,
    classification_metrics,
    consistent_with_chance,
)

# 4 positives answered yes, yes, yes, no (TP 3, FN 1), 6 negatives answered yes then no five
# times (FP 1, TN 5), then one failed positive and one failed negative.
TRUTH = [True] * 4 + [False] * 6 + [True, False]
ANSWERS: list[bool | None] = [True, True, True, False, True] + [False] * 5 + [None, None]
PROBS: list[float | None] = [0.9, 0.8, 0.6, 0.3, 0.6, 0.2, 0.1, 0.1, 0.4, 0.3, 0.5, None]


def value(score: Score) -> float:
    assert score.value is not None, score.reason
    return score.value


def brute_auroc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(pos > neg) + P(pos == neg) / 2 over every pair."""
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def random_judge(seed: int, n: int, positive_rate: float, yes_rate: float) -> ClassificationMetrics:
    r = np.random.default_rng(seed)
    truth = [bool(x) for x in r.random(n) < positive_rate]
    answers = [bool(x) for x in r.random(n) < yes_rate]
    return classification_metrics(truth, answers, list(r.random(n)), n_resamples=0)


def test_hand_computed_counts_and_metrics() -> None:
    m = classification_metrics(TRUTH, ANSWERS, PROBS)
    assert (m.positives, m.negatives, m.failed_positives, m.failed_negatives) == (5, 7, 1, 1)
    assert (m.judged_positives, m.judged_negatives, m.judged, m.failed, m.total) == (
        4,
        6,
        10,
        2,
        12,
    )
    assert (m.true_positives, m.false_positives, m.missing_probabilities) == (3, 1, 0)
    assert m.failed_fraction == pytest.approx(2 / 12)
    assert value(m.recall) == pytest.approx(3 / 4)
    assert value(m.specificity) == pytest.approx(5 / 6)
    assert value(m.balanced_accuracy) == pytest.approx((3 / 4 + 5 / 6) / 2)
    assert value(m.precision) == pytest.approx(3 / 4)
    assert value(m.f1) == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    # 0.9 and 0.8 beat all six negatives; 0.6 beats five and ties one; 0.3 beats three, ties one.
    assert value(m.auroc) == pytest.approx((6 + 6 + 5.5 + 3.5) / 24)
    # Failures counted wrong: 3 of 5 positives and 5 of 7 negatives right.
    assert value(m.pessimistic_balanced_accuracy) == pytest.approx((3 / 5 + 5 / 7) / 2)


def test_f1_is_the_harmonic_mean_of_precision_and_recall() -> None:
    m = classification_metrics(TRUTH, ANSWERS, n_resamples=0)
    p, r = value(m.precision), value(m.recall)
    assert value(m.f1) == pytest.approx(2 * p * r / (p + r))


def test_balanced_accuracy_is_not_fooled_by_imbalanced_classes_as_pooled_accuracy_is() -> None:
    truth = [True] * 10 + [False] * 90
    always_no = [False] * 100
    pooled = sum(t == a for t, a in zip(truth, always_no, strict=True)) / 100
    assert pooled == 0.9
    m = classification_metrics(truth, always_no)
    assert value(m.balanced_accuracy) == 0.5
    assert consistent_with_chance(m) is True
    # A judge finding 8 of 10 positives and 60 of 90 negatives is better than always "no",
    # though pooled accuracy ranks it below (0.68 < 0.9).
    answers = [True] * 8 + [False] * 2 + [True] * 30 + [False] * 60
    better = classification_metrics(truth, answers)
    assert value(better.balanced_accuracy) == pytest.approx((0.8 + 60 / 90) / 2)
    assert consistent_with_chance(better) is False


@pytest.mark.parametrize("positives", [1, 10, 50, 90])
def test_an_always_yes_judge_scores_exactly_one_half(positives: int) -> None:
    truth = [True] * positives + [False] * (100 - positives)
    m = classification_metrics(truth, [True] * 100, [0.99] * 100)
    assert value(m.balanced_accuracy) == 0.5
    assert m.balanced_accuracy.interval is not None
    assert (m.balanced_accuracy.interval.low, m.balanced_accuracy.interval.high) == (0.5, 0.5)
    assert value(m.auroc) == 0.5  # every score tied
    assert (value(m.recall), value(m.specificity)) == (1.0, 0.0)
    assert consistent_with_chance(m) is True
    assert consistent_with_chance(m.auroc) is True


@pytest.mark.parametrize(("positive_rate", "yes_rate"), [(0.5, 0.5), (0.2, 0.5), (0.3, 0.9)])
def test_a_random_judge_averages_one_half_over_many_seeds(
    positive_rate: float, yes_rate: float
) -> None:
    values = [
        value(random_judge(s, 100, positive_rate, yes_rate).balanced_accuracy) for s in range(200)
    ]
    assert np.mean(values) == pytest.approx(0.5, abs=0.015)
    aurocs = [value(random_judge(s, 100, positive_rate, yes_rate).auroc) for s in range(50)]
    assert np.mean(aurocs) == pytest.approx(0.5, abs=0.03)


def test_a_random_judge_on_many_judgements_scores_one_half_within_five_hundredths() -> None:
    r = np.random.default_rng(3)
    truth = [bool(x) for x in r.random(1000) < 0.3]
    m = classification_metrics(truth, [bool(x) for x in r.random(1000) < 0.5], list(r.random(1000)))
    assert abs(value(m.balanced_accuracy) - 0.5) <= 0.05
    assert abs(value(m.auroc) - 0.5) <= 0.05
    assert consistent_with_chance(m) is True


def test_a_random_judge_is_mostly_consistent_with_chance() -> None:
    hits = []
    for seed in range(60):
        r = np.random.default_rng(seed)
        truth = [bool(x) for x in r.random(100) < 0.4]
        answers = [bool(x) for x in r.random(100) < 0.5]
        hits.append(consistent_with_chance(classification_metrics(truth, answers, rng=seed)))
    assert sum(h is True for h in hits) >= 50  # nominal 95 %


def test_failures_are_counted_per_class_and_the_metrics_rest_on_the_judged_ones() -> None:
    m = classification_metrics(TRUTH, ANSWERS, PROBS, n_resamples=0)
    judged_only = classification_metrics(TRUTH[:10], ANSWERS[:10], PROBS[:10], n_resamples=0)
    assert (m.failed_positives, m.failed_negatives) == (1, 1)
    assert (judged_only.failed_positives, judged_only.failed_negatives) == (0, 0)
    for name in ("balanced_accuracy", "precision", "recall", "specificity", "f1", "auroc"):
        assert getattr(m, name) == getattr(judged_only, name), name
    assert value(m.pessimistic_balanced_accuracy) < value(m.balanced_accuracy)
    assert value(judged_only.pessimistic_balanced_accuracy) == value(judged_only.balanced_accuracy)
    assert "10 of 12 judged" in m.describe()
    assert "2 failed (16.7%)" in m.describe()


def test_failures_only_in_one_class_lower_only_that_class() -> None:
    truth = [True] * 4 + [False] * 4
    answers = [True, True, None, None, False, False, False, False]
    m = classification_metrics(truth, answers, n_resamples=0)
    assert (m.failed_positives, m.failed_negatives, m.failed_fraction) == (2, 0, 0.25)
    assert value(m.balanced_accuracy) == 1.0
    assert value(m.pessimistic_balanced_accuracy) == pytest.approx((2 / 4 + 1) / 2)


def test_a_class_with_no_judged_excerpt_leaves_the_metrics_that_need_it_undefined() -> None:
    m = classification_metrics([True, True, False, False], [True, False, None, None], [0.1] * 4)
    assert value(m.recall) == 0.5
    for name in ("balanced_accuracy", "precision", "specificity", "f1", "auroc"):
        score = getattr(m, name)
        assert score.value is None, name
        assert score.reason == "all 2 negative judgements failed", name
        assert score.interval is None
    # Failures count as wrong: the negatives are all wrong, the positives half right.
    assert value(m.pessimistic_balanced_accuracy) == 0.25
    assert consistent_with_chance(m) is None


def test_without_negatives_only_recall_is_defined() -> None:
    m = classification_metrics([True, True], [True, False])
    assert value(m.recall) == 0.5
    assert m.balanced_accuracy.reason == "no negative judgements"
    assert m.pessimistic_balanced_accuracy.reason == "no negative judgements"
    assert m.specificity.reason == "no negative judgements"
    assert "undefined (no negative judgements)" in m.describe()


def test_precision_is_undefined_when_the_judge_never_says_yes() -> None:
    m = classification_metrics([True, False, False], [False, False, False])
    assert m.precision.value is None
    assert m.precision.reason == "the judge never answered yes"
    assert value(m.f1) == 0.0  # 2TP / (2TP + FP + FN) = 0 / 1: it found no positive
    assert value(m.balanced_accuracy) == 0.5


def test_auroc_needs_a_probability_for_every_judged_judgement() -> None:
    truth, answers = [True, False, True], [True, False, None]
    assert classification_metrics(truth, answers).auroc.reason == (
        "no probabilities of yes were given"
    )
    missing = classification_metrics(truth, answers, [0.9, None, 0.5])
    assert missing.auroc.reason == "1 of 2 judged judgements have no probability of yes"
    assert missing.missing_probabilities == 1
    assert value(missing.balanced_accuracy) == 1.0  # the answers are still scored
    # A failed judgement without a probability does not matter: it is not judged.
    assert value(classification_metrics(truth, answers, [0.9, 0.2, None]).auroc) == 1.0


def test_undefined_metrics_are_none_in_json_never_nan_or_zero() -> None:
    m = classification_metrics([True, False], [None, None], [0.5, 0.5])
    positives, negatives = "all 1 positive judgements failed", "all 1 negative judgements failed"
    reason = f"{positives}; {negatives}"
    expected = {"recall": positives, "specificity": negatives}
    for name in ("balanced_accuracy", "precision", "recall", "specificity", "f1", "auroc"):
        score = getattr(m, name)
        assert (score.value, score.interval) == (None, None), name
        assert score.reason == expected.get(name, reason), name
    assert value(m.pessimistic_balanced_accuracy) == 0.0  # every failure counted wrong

    def refuse(constant: str) -> float:
        raise AssertionError(f"{constant} in the JSON")

    data = json.loads(m.model_dump_json(), parse_constant=refuse)
    assert data["balanced_accuracy"] == {"value": None, "reason": reason, "interval": None}


@given(
    st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), min_size=1, max_size=12),
    st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), min_size=1, max_size=12),
)
@settings(max_examples=200, deadline=None)
def test_auroc_with_ties_matches_a_brute_force_pair_count(
    pos: list[float], neg: list[float]
) -> None:
    truth = [True] * len(pos) + [False] * len(neg)
    m = classification_metrics(truth, [True] * len(truth), pos + neg, n_resamples=0)
    assert value(m.auroc) == pytest.approx(brute_auroc(pos, neg), abs=1e-12)


def test_resampled_aurocs_match_a_brute_force_pair_count_row_by_row() -> None:
    r = np.random.default_rng(11)
    pos = r.integers(0, 4, size=(50, 7)).astype(np.intp)
    neg = r.integers(0, 4, size=(50, 5)).astype(np.intp)
    got = _auroc(pos, neg)
    expected = [brute_auroc(list(p), list(q)) for p, q in zip(pos, neg, strict=True)]
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_auroc_is_the_mann_whitney_u_over_the_pairs() -> None:
    r = np.random.default_rng(4)
    pos, neg = list(np.round(r.random(40), 1)), list(np.round(r.random(60) - 0.1, 1).clip(0))
    m = classification_metrics([True] * 40 + [False] * 60, [True] * 100, pos + neg)
    u = scipy.stats.mannwhitneyu(pos, neg).statistic
    assert value(m.auroc) == pytest.approx(u / (40 * 60), abs=1e-12)


def test_auroc_matches_scikit_learn_when_it_is_installed() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    r = np.random.default_rng(5)
    truth = [bool(x) for x in r.random(200) < 0.3]
    probs = list(np.round(r.random(200), 1))  # rounded: many ties
    m = classification_metrics(truth, [True] * 200, probs, n_resamples=0)
    assert value(m.auroc) == pytest.approx(metrics.roc_auc_score(truth, probs), abs=1e-12)


def test_the_bootstrap_is_reproducible_with_a_seed_and_changes_with_another() -> None:
    r = np.random.default_rng(0)
    truth = [bool(x) for x in r.random(80) < 0.5]
    answers = [bool(x) for x in r.random(80) < 0.6]
    probs = list(r.random(80))
    a = classification_metrics(truth, answers, probs, rng=7)
    assert a == classification_metrics(truth, answers, probs, rng=7)
    assert a == classification_metrics(truth, answers, probs, rng=np.random.default_rng(7))
    other = classification_metrics(truth, answers, probs, rng=8)
    assert other.balanced_accuracy.value == a.balanced_accuracy.value
    assert other.balanced_accuracy.interval != a.balanced_accuracy.interval
    assert other.auroc.interval != a.auroc.interval
    generator = np.random.default_rng(7)
    first = classification_metrics(truth, answers, probs, rng=generator)
    assert classification_metrics(truth, answers, probs, rng=generator) != first  # advanced


def test_intervals_contain_the_point_estimates() -> None:
    r = np.random.default_rng(2)
    truth = [bool(x) for x in r.random(150) < 0.4]
    # A judge right 80 % of the time, its probability noisy around its answer.
    answers = [t if x < 0.8 else not t for t, x in zip(truth, r.random(150), strict=True)]
    probs = [
        min(1.0, max(0.0, 0.5 + (0.3 if a else -0.3) + n))
        for a, n in zip(answers, r.normal(0, 0.2, 150), strict=True)
    ]
    m = classification_metrics(truth, answers, probs, confidence=0.9, n_resamples=2000)
    for name in (
        "balanced_accuracy",
        "pessimistic_balanced_accuracy",
        "precision",
        "recall",
        "specificity",
        "f1",
        "auroc",
    ):
        score: IntervalScore = getattr(m, name)
        assert score.interval is not None, name
        assert score.interval.contains(value(score)), name
        assert score.interval.low < score.interval.high, name
        assert score.interval.confidence == 0.9
        assert score.interval.resamples == 2000
    assert consistent_with_chance(m) is False


def test_a_wider_confidence_gives_a_wider_interval() -> None:
    truth = [True] * 30 + [False] * 30
    answers = [True] * 20 + [False] * 10 + [True] * 10 + [False] * 20
    narrow = classification_metrics(truth, answers, confidence=0.5).balanced_accuracy.interval
    wide = classification_metrics(truth, answers, confidence=0.99).balanced_accuracy.interval
    assert narrow is not None
    assert wide is not None
    assert wide.low < narrow.low
    assert wide.high > narrow.high


def test_resamples_where_a_metric_is_undefined_are_counted_and_left_out() -> None:
    # One "yes" among 40 judgements: many resamples draw no "yes", so no precision.
    truth = [True] * 20 + [False] * 20
    answers = [True] + [False] * 39
    precision = classification_metrics(truth, answers, n_resamples=500).precision
    assert precision.interval is not None
    assert precision.interval.undefined_resamples > 0
    assert precision.interval.resamples + precision.interval.undefined_resamples == 500
    assert (precision.interval.low, precision.interval.high) == (1.0, 1.0)


def test_no_resamples_means_no_intervals() -> None:
    m = classification_metrics(TRUTH, ANSWERS, PROBS, n_resamples=0)
    assert m.n_resamples == 0
    assert m.balanced_accuracy.interval is None
    assert m.auroc.interval is None
    assert consistent_with_chance(m) is None
    assert value(m.balanced_accuracy) == pytest.approx((3 / 4 + 5 / 6) / 2)


def test_json_round_trip() -> None:
    for m in (
        classification_metrics(TRUTH, ANSWERS, PROBS),
        classification_metrics([True, True], [None, True]),
    ):
        again = ClassificationMetrics.model_validate_json(m.model_dump_json())
        assert again == m
        assert isinstance(again.auroc, IntervalScore)
        assert again.describe() == m.describe()


@pytest.mark.parametrize(
    ("truth", "answers", "probs", "message"),
    [
        ([], [], None, "no judgements"),
        ([True, False], [True], None, "2 true labels but 1 answers"),
        ([True, False], [True, False], [0.5], "2 true labels but 1 probabilities"),
        ([True], [True], [1.5], r"probability 0 is 1\.5"),
        ([True], [True], [-0.1], r"probability 0 is -0\.1"),
        ([True, False], [True, False], [0.5, math.nan], "probability 1 is nan"),
        ([True], [True], ["0.5"], "probability 0 is '0.5'"),
        ([True], [True], [True], "probability 0 is True"),
        ([1, 0], [True, False], None, "label 0 is 1"),
        ([True, False], [True, "yes"], None, "answer 1 is 'yes'"),
    ],
)
def test_bad_input_raises_a_clear_error(
    truth: list[object], answers: list[object], probs: list[object] | None, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        classification_metrics(truth, answers, probs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"confidence": 0.0}, "confidence"),
        ({"confidence": 1.0}, "confidence"),
        ({"confidence": math.nan}, "confidence"),
        ({"n_resamples": -1}, "n_resamples"),
        ({"n_resamples": 2.5}, "n_resamples"),
        ({"rng": -1}, "seed"),
        ({"rng": "seed"}, "seed"),
    ],
)
def test_bad_options_raise_a_clear_error(options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        classification_metrics([True, False], [True, False], **options)  # type: ignore[arg-type]


def test_numpy_arrays_are_accepted() -> None:
    truth = np.array([True, False, True, False])
    m = classification_metrics(truth, list(truth), np.array([0.8, 0.1, 0.7, 0.3]))  # type: ignore[arg-type]
    assert value(m.balanced_accuracy) == 1.0
    assert value(m.auroc) == 1.0


def test_the_models_refuse_inconsistent_data() -> None:
    interval = ConfidenceInterval(low=0.4, high=0.6, confidence=0.95, resamples=10)
    with pytest.raises(ValidationError, match="no interval"):
        IntervalScore(value=None, reason="undefined", interval=interval)
    with pytest.raises(ValidationError, match="above high"):
        ConfidenceInterval(low=0.7, high=0.6, confidence=0.95, resamples=10)
    with pytest.raises(ValidationError, match="either a value or a reason"):
        IntervalScore(value=None)
    data = classification_metrics(TRUTH, ANSWERS, PROBS).model_dump()
    for field, bad, message in (
        ("failed_positives", 6, "among the positives"),
        ("true_positives", 5, "judged positives"),
        ("false_positives", 7, "judged negatives"),
        ("missing_probabilities", 11, "judged judgements"),
    ):
        with pytest.raises(ValidationError, match=message):
            ClassificationMetrics.model_validate({**data, field: bad})
    with pytest.raises(ValidationError, match="at least one judgement"):
        ClassificationMetrics.model_validate(
            {
                **data,
                "positives": 0,
                "negatives": 0,
                "failed_positives": 0,
                "failed_negatives": 0,
                "true_positives": 0,
                "false_positives": 0,
                "missing_probabilities": 0,
            }
        )


def test_an_interval_score_is_a_score() -> None:
    score = IntervalScore.undefined("no negative judgements")
    assert isinstance(score, Score)
    assert not score.defined
    assert score.interval is None
