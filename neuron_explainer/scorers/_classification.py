"""Metrics of classification scorers: how well a judge's yes/no answers, and its probability
of "yes", tell the excerpts that activate a unit from those that do not.

A classification scorer (detection: "does this excerpt activate the unit, given the
explanation?"; fuzzing: "are the highlighted tokens the ones that fire?") makes judgements,
each a true label, the judge's answer (``None`` when the answer failed or could not be parsed)
and its probability of "yes" (``None`` when the backend returned no logprobs).
`classification_metrics` turns them into `ClassificationMetrics`:

* counts per class: positives, negatives, the failed judgements of each (never dropped
  silently), the "yes" answers among the judged ones. Every metric but the pessimistic one
  rests on the judged judgements (answer not ``None``).
* balanced accuracy: the mean of recall (on the positives) and specificity (on the
  negatives). A judge that always says "yes" scores 0.5, one answering at random 0.5 on
  average, whatever the class balance; pooled accuracy would reward the majority answer.
* pessimistic balanced accuracy: the same on every judgement, a failed one counted as a wrong
  answer; a judge cannot raise it by failing on the hard excerpts.
* precision, recall, specificity and F1 (``2TP / (2TP + FP + FN)``, as scikit-learn).
* AUROC of the probability of "yes" (Mann-Whitney U with average ranks for ties), when every
  judged judgement has one.

Each defined value has a percentile bootstrap interval: resamples drawn with replacement
within each class (the judged positives, the judged negatives; all positives and negatives
for the pessimistic metric), so each class keeps its size and both are in every resample.
An undefined metric is an `IntervalScore` with ``value=None`` and the reason, never 0 or NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydantic import ConfigDict

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.results._metrics import (
    ClassificationMetrics,
    ConfidenceInterval,
    IntervalScore,
)

__all__ = [
    "ClassificationMetrics",
    "ConfidenceInterval",
    "IntervalScore",
    "classification_metrics",
    "consistent_with_chance",
]

Floats = NDArray[np.float64]
Bools = NDArray[np.bool_]
Indices = NDArray[np.intp]

_FROZEN = ConfigDict(extra="forbid", frozen=True)


def consistent_with_chance(
    score: ClassificationMetrics | IntervalScore, chance: float = 0.5
) -> bool | None:
    """Whether a score is consistent with chance: its interval contains ``chance``.

    For `ClassificationMetrics` the score is its balanced accuracy (chance is 0.5 for it, as
    for AUROC, whatever the class balance).

    Returns:
        ``None`` when the score is undefined or has no interval (nothing to say).
    """
    if isinstance(score, ClassificationMetrics):
        score = score.balanced_accuracy
    if score.interval is None:
        return None
    return score.interval.contains(chance)


@dataclass(frozen=True)
class _Classes:
    """The judgements split by true label, as arrays."""

    pos_yes: Bools  # the answers of the judged positives
    neg_yes: Bools  # the answers of the judged negatives
    pos_code: Indices  # their probabilities of "yes" as dense codes (equal values, equal codes)
    neg_code: Indices
    missing: int  # judged judgements without a probability
    pos_right: Bools  # every positive: answered yes (a failure is wrong)
    neg_right: Bools  # every negative: answered no (a failure is wrong)


def classification_metrics(
    truth: Sequence[bool],
    answers: Sequence[bool | None],
    probabilities: Sequence[float | None] | None = None,
    *,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    rng: np.random.Generator | int = 0,
) -> ClassificationMetrics:
    """The `ClassificationMetrics` of judgements given as parallel sequences.

    Args:
        truth: each judgement's true label (``True``: the excerpt activates the unit / the
            highlighted tokens are the ones that fire).
        answers: the judge's answer, ``None`` where it failed or could not be parsed.
        probabilities: the judge's probability of "yes", ``None`` where the backend gave
            none; ``None`` for all (AUROC then undefined).
        confidence: the intervals' nominal coverage.
        n_resamples: bootstrap resamples (0: no intervals).
        rng: a seed, or a generator (which this advances); the same seed gives the same
            intervals.

    Raises:
        InvalidInputError: no judgements, sequences of different lengths, a label or answer
            that is not a bool, a probability that is not a number in [0, 1] (NaN included),
            a confidence not in (0, 1), a negative ``n_resamples`` or seed.
    """
    labels = _labels(truth)
    said = _answers(answers, len(labels))
    probs = _probabilities(probabilities, len(labels))
    generator = _generator(rng, confidence, n_resamples)
    judged = said >= 0
    yes = said == 1
    codes = np.unique(probs, return_inverse=True)[1].astype(np.intp).ravel()
    classes = _Classes(
        pos_yes=yes[labels & judged],
        neg_yes=yes[~labels & judged],
        pos_code=codes[labels & judged],
        neg_code=codes[~labels & judged],
        missing=int(np.isnan(probs[judged]).sum()),
        pos_right=yes[labels],
        neg_right=~yes[~labels] & judged[~labels],
    )
    reasons = _reasons(classes, labels, said, probabilities is None)
    # Row 0 of every draw is the sample itself (the point estimate), the others resamples.
    stats = _stats(
        classes,
        _draw(generator, classes.pos_yes.size, n_resamples),
        _draw(generator, classes.neg_yes.size, n_resamples),
    )
    stats["pessimistic_balanced_accuracy"] = _pessimistic(
        classes,
        _draw(generator, classes.pos_right.size, n_resamples),
        _draw(generator, classes.neg_right.size, n_resamples),
    )
    return ClassificationMetrics(
        positives=int(labels.sum()),
        negatives=int((~labels).sum()),
        failed_positives=int((labels & ~judged).sum()),
        failed_negatives=int((~labels & ~judged).sum()),
        true_positives=int(classes.pos_yes.sum()),
        false_positives=int(classes.neg_yes.sum()),
        missing_probabilities=classes.missing,
        **{name: _estimate(stats[name], reason, confidence) for name, reason in reasons.items()},
        confidence=confidence,
        n_resamples=n_resamples,
    )


def _is_bool(x: object) -> bool:
    return isinstance(x, bool | np.bool_)


def _labels(truth: Sequence[bool]) -> Bools:
    if len(truth) == 0:
        raise InvalidInputError("no judgements: a classification score needs at least one")
    for i, x in enumerate(truth):
        if not _is_bool(x):
            raise InvalidInputError(f"true labels must be bools; label {i} is {x!r}")
    return np.asarray(truth, dtype=np.bool_)


def _answers(answers: Sequence[bool | None], n: int) -> NDArray[np.int8]:
    """-1 where the answer failed, 0 for no, 1 for yes."""
    if len(answers) != n:
        raise InvalidInputError(f"{n} true labels but {len(answers)} answers")
    for i, x in enumerate(answers):
        if x is not None and not _is_bool(x):
            raise InvalidInputError(f"answers must be bools or None; answer {i} is {x!r}")
    return np.array([-1 if x is None else int(x) for x in answers], dtype=np.int8)


def _probabilities(probabilities: Sequence[float | None] | None, n: int) -> Floats:
    """The probabilities of "yes", NaN where there is none."""
    if probabilities is None:
        return np.full(n, np.nan)
    if len(probabilities) != n:
        raise InvalidInputError(f"{n} true labels but {len(probabilities)} probabilities")
    for i, p in enumerate(probabilities):
        number = isinstance(p, int | float | np.floating | np.integer) and not _is_bool(p)
        if p is not None and not (number and 0.0 <= float(p) <= 1.0):  # NaN fails here
            raise InvalidInputError(
                f"probabilities must be numbers in [0, 1] or None; probability {i} is {p!r}"
            )
    return np.array([np.nan if p is None else float(p) for p in probabilities])


def _generator(
    rng: np.random.Generator | int, confidence: float, n_resamples: int
) -> np.random.Generator:
    if not 0.0 < confidence < 1.0:  # NaN fails here
        raise InvalidInputError(f"confidence must be in (0, 1), got {confidence!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 0:
        raise InvalidInputError(f"n_resamples must be an integer >= 0, got {n_resamples!r}")
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, bool) or not isinstance(rng, int | np.integer) or rng < 0:
        raise InvalidInputError(f"rng must be a numpy Generator or a seed >= 0, got {rng!r}")
    return np.random.default_rng(int(rng))


def _class_reason(labels: Bools, said: NDArray[np.int8], positive: bool) -> str | None:
    """Why nothing can be measured on one class, or ``None`` when some of it was judged."""
    name = "positive" if positive else "negative"
    members = said[labels == positive]
    if members.size == 0:
        return f"no {name} judgements"
    if (members < 0).all():
        return f"all {members.size} {name} judgements failed"
    return None


def _reasons(
    classes: _Classes, labels: Bools, said: NDArray[np.int8], no_probabilities: bool
) -> dict[str, str | None]:
    """Why each metric is undefined, ``None`` for the defined ones."""
    pos = _class_reason(labels, said, positive=True)
    neg = _class_reason(labels, said, positive=False)
    both = "; ".join(r for r in (pos, neg) if r) or None
    precision = both
    if both is None and not (classes.pos_yes.any() or classes.neg_yes.any()):
        precision = "the judge never answered yes"
    auroc = both
    if auroc is None and no_probabilities:
        auroc = "no probabilities of yes were given"
    elif auroc is None and classes.missing:
        judged = classes.pos_yes.size + classes.neg_yes.size
        auroc = f"{classes.missing} of {judged} judged judgements have no probability of yes"
    empty = [
        name for name, n in (("positive", labels.sum()), ("negative", (~labels).sum())) if not n
    ]
    pessimistic = "; ".join(f"no {name} judgements" for name in empty)
    return {
        "balanced_accuracy": both,
        "precision": precision,
        "recall": pos,
        "specificity": neg,
        "f1": both,
        "auroc": auroc,
        "pessimistic_balanced_accuracy": pessimistic or None,
    }


def _draw(rng: np.random.Generator, n: int, n_resamples: int) -> Indices:
    """``range(n)``, then ``n_resamples`` rows of ``n`` indices drawn from it with
    replacement."""
    if n == 0:
        return np.empty((n_resamples + 1, 0), dtype=np.intp)
    drawn = rng.integers(0, n, size=(n_resamples, n), dtype=np.intp)
    return np.concatenate([np.arange(n, dtype=np.intp)[None, :], drawn])


def _ratio(numerator: Floats, denominator: Floats | float) -> Floats:
    """``numerator / denominator``, NaN where the denominator is 0 (no warning)."""
    den = np.broadcast_to(np.asarray(denominator, dtype=np.float64), numerator.shape)
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, den, out=out, where=den > 0)
    return out


def _stats(classes: _Classes, pos: Indices, neg: Indices) -> dict[str, Floats]:
    """Every metric on the judged judgements, per resample (rows of indices into the judged
    positives and negatives); NaN where undefined."""
    m, n = pos.shape[1], neg.shape[1]
    tp = classes.pos_yes[pos].sum(axis=1).astype(np.float64)
    fp = classes.neg_yes[neg].sum(axis=1).astype(np.float64)
    recall = _ratio(tp, m)
    specificity = 1.0 - _ratio(fp, n)
    stats = {
        "balanced_accuracy": (recall + specificity) / 2,
        "precision": _ratio(tp, tp + fp),
        "recall": recall,
        "specificity": specificity,
        "f1": _ratio(2 * tp, 2 * tp + fp + (m - tp)),
        "auroc": np.full(tp.shape, np.nan),
    }
    if m and n and not classes.missing:
        stats["auroc"] = _auroc(classes.pos_code[pos], classes.neg_code[neg])
    return stats


def _auroc(pos: Indices, neg: Indices) -> Floats:
    """AUROC per row of dense score codes (equal codes for equal scores):
    ``P(pos > neg) + P(pos == neg) / 2``, the Mann-Whitney U over ``m * n``, as from average
    ranks. Each positive counts the negatives of its row below it (``left``) and not above it
    (``right``) by a binary search; offsetting row ``r`` by ``r * k`` (``k`` above every code)
    searches every row at once, exactly (integers)."""
    rows, m = pos.shape
    n = neg.shape[1]
    k = int(max(pos.max(), neg.max())) + 1
    offset = np.arange(rows, dtype=np.int64)[:, None] * k
    flat = (np.sort(neg, axis=1) + offset).ravel()
    shifted = (np.sort(pos, axis=1) + offset).ravel()  # sorted keys: a faster search
    left = np.searchsorted(flat, shifted, side="left")
    right = np.searchsorted(flat, shifted, side="right")
    below = (left + right).reshape(rows, m) / 2 - np.arange(rows)[:, None] * n
    return np.asarray(below.sum(axis=1) / (m * n), dtype=np.float64)


def _pessimistic(classes: _Classes, pos: Indices, neg: Indices) -> Floats:
    """Balanced accuracy on every judgement, a failed one wrong, per resample (rows of
    indices into all positives and all negatives)."""
    recall = _ratio(classes.pos_right[pos].sum(axis=1).astype(np.float64), pos.shape[1])
    specificity = _ratio(classes.neg_right[neg].sum(axis=1).astype(np.float64), neg.shape[1])
    return (recall + specificity) / 2


def _estimate(stats: Floats, reason: str | None, confidence: float) -> IntervalScore:
    """The `IntervalScore` of one metric: its value on the sample (``stats[0]``), or why it is
    undefined, with the percentile interval of its defined resamples (``stats[1:]``)."""
    value = float(stats[0])
    if reason is not None or not np.isfinite(value):
        return IntervalScore.undefined(reason or "undefined on these judgements")
    samples = stats[1:]
    defined = samples[np.isfinite(samples)]
    if defined.size == 0:  # no resamples asked for, or the metric undefined in all
        return IntervalScore(value=value)
    low, high = np.quantile(defined, [(1 - confidence) / 2, (1 + confidence) / 2])
    interval = ConfidenceInterval(
        low=float(low),
        high=float(high),
        confidence=confidence,
        resamples=int(defined.size),
        undefined_resamples=int(samples.size - defined.size),
    )
    return IntervalScore(value=value, interval=interval)
