"""Scores and calibration: how well simulated activations match the true ones.

Metric functions take two equal-length sequences (true, predicted) and return a
`Score`; a score that is undefined (constant input, too few
tokens) comes back as ``Score(value=None, reason=...)``, never as NaN.

* `correlation`: Pearson correlation. Invariant to affine calibration, so it is computed
  on the raw simulated values. The headline score pools every token of the scored records.
* `rsquared`: ``1 - SSE/SST`` with ``SST`` the variance-based total sum of squares;
  computed on calibrated predictions.
* `absolute_dev_explained`: ``1 - sum|y - y_hat| / sum|y - median(y)|``, the absolute-error
  analogue of R² (the median is the best constant under absolute error); calibrated predictions.

Calibration (`fit_calibration`) is fitted on the calibration split only and applied to the
scored split with `apply_calibration`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from neuron_explainer.errors import InvalidInputError, InvalidRecordError
from neuron_explainer.records import ActivationRecord
from neuron_explainer.results import (
    INSENSITIVE_BELOW,
    Calibration,
    FailedSequence,
    Score,
    ScoredSequence,
    ScoredSimulation,
    ScoringMode,
    Sensitivity,
    SequenceSimulation,
    predicted_values,
)

__all__ = [
    "CalibrationMethod",
    "absolute_dev_explained",
    "apply_calibration",
    "correlation",
    "fit_calibration",
    "rsquared",
    "score_simulations",
    "sensitivity",
]

CalibrationMethod = Literal["none", "linear", "percentile"]
Floats = NDArray[np.float64]


def _pair(truth: ArrayLike, predicted: ArrayLike) -> tuple[Floats, Floats]:
    y = np.asarray(truth, dtype=np.float64).ravel()
    p = np.asarray(predicted, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise InvalidInputError(
            f"true and predicted activations differ in length ({y.size} vs {p.size})"
        )
    if not (np.isfinite(y).all() and np.isfinite(p).all()):
        raise InvalidInputError("activations must be finite (found NaN or infinity)")
    return y, p


def _is_constant(x: Floats) -> bool:
    return bool(x.size == 0 or np.all(x == x[0]))


def correlation(truth: ArrayLike, predicted: ArrayLike) -> Score:
    """Pearson correlation between true and predicted activations.

    Undefined (``value=None``) for fewer than 2 tokens or when either side is constant.

    Raises:
        InvalidInputError: different lengths or non-finite values.
    """
    y, p = _pair(truth, predicted)
    if y.size < 2:
        return Score.undefined(f"correlation needs at least 2 tokens, got {y.size}")
    if _is_constant(p):
        return Score.undefined(f"simulation is constant ({p[0]:g} on every token)")
    if _is_constant(y):
        return Score.undefined(f"true activations are constant ({y[0]:g} on every token)")
    # Scale both to a max of 1 before centring (a mean of subnormal values rounds to 0), and
    # again after, so tiny or huge values neither underflow nor overflow.
    y, p = y / np.max(np.abs(y)), p / np.max(np.abs(p))
    dy, dp = y - y.mean(), p - p.mean()
    spread_y, spread_p = np.max(np.abs(dy)), np.max(np.abs(dp))
    if spread_y == 0.0 or spread_p == 0.0:
        return Score.undefined("values are numerically constant; correlation is undefined")
    dy, dp = dy / spread_y, dp / spread_p
    denominator = float(np.sqrt(np.dot(dy, dy)) * np.sqrt(np.dot(dp, dp)))
    if not np.isfinite(denominator) or denominator == 0.0:
        return Score.undefined("values are numerically constant; correlation is undefined")
    value = float(np.dot(dy, dp)) / denominator
    return Score(value=min(1.0, max(-1.0, value)))


def rsquared(truth: ArrayLike, predicted: ArrayLike) -> Score:
    """Coefficient of determination ``1 - SSE/SST`` (can be negative).

    Undefined when there are no tokens or the true activations are constant (``SST = 0``).

    Raises:
        InvalidInputError: different lengths or non-finite values.
    """
    y, p = _pair(truth, predicted)
    if y.size == 0:
        return Score.undefined("no tokens to score")
    sst = float(np.sum((y - y.mean()) ** 2))
    if sst == 0.0:
        return Score.undefined(f"true activations are constant ({y[0]:g}); R² is undefined")
    return Score(value=1.0 - float(np.sum((y - p) ** 2)) / sst)


def absolute_dev_explained(truth: ArrayLike, predicted: ArrayLike) -> Score:
    """Absolute deviation explained: ``1 - sum|y - y_hat| / sum|y - median(y)|``.

    Undefined when there are no tokens or every true value equals the median.

    Raises:
        InvalidInputError: different lengths or non-finite values.
    """
    y, p = _pair(truth, predicted)
    if y.size == 0:
        return Score.undefined("no tokens to score")
    total = float(np.sum(np.abs(y - np.median(y))))
    if total == 0.0:
        return Score.undefined("true activations have no absolute deviation from their median")
    return Score(value=1.0 - float(np.sum(np.abs(y - p))) / total)


def fit_calibration(
    method: CalibrationMethod, simulated: ArrayLike, truth: ArrayLike
) -> Calibration:
    """Fit a map from simulated values to true activations (use calibration records only).

    ``"linear"`` fits least squares; if the simulation is constant it predicts the mean true
    activation and says so in ``note``. ``"percentile"`` maps each simulated value to the true
    activation at the same percentile rank.

    Raises:
        InvalidInputError: unknown method, different lengths, non-finite values, or no tokens
            for a method other than ``"none"``.
    """
    if method == "none":
        return Calibration(method="none")
    y, p = _pair(truth, simulated)
    if y.size == 0:
        raise InvalidInputError(f"{method} calibration needs calibration tokens; got none")
    if method == "linear":
        if _is_constant(p):
            return Calibration(
                method="linear",
                slope=0.0,
                intercept=float(y.mean()),
                n_tokens=y.size,
                note="simulation was constant on the calibration records; predicting their mean",
            )
        slope, intercept = np.polyfit(p, y, 1)
        return Calibration(
            method="linear", slope=float(slope), intercept=float(intercept), n_tokens=y.size
        )
    if method == "percentile":
        order = np.argsort(p, kind="stable")
        p_sorted, y_sorted = p[order], np.sort(y)
        # Every distinct simulated value maps to the true quantile at its mean rank.
        xs, first, counts = np.unique(p_sorted, return_index=True, return_counts=True)
        mean_rank = first + (counts - 1) / 2.0
        levels = mean_rank / max(1, y.size - 1)
        ys = np.quantile(y_sorted, levels)
        note = None
        if xs.size == 1:
            note = "simulation was constant on the calibration records; predicting their median"
        return Calibration(
            method="percentile",
            xs=tuple(map(float, xs)),
            ys=tuple(map(float, ys)),
            n_tokens=y.size,
            note=note,
        )
    raise InvalidInputError(
        f"unknown calibration method {method!r}; choose 'none', 'linear' or 'percentile'"
    )


def apply_calibration(calibration: Calibration, simulated: ArrayLike) -> Floats:
    """Map simulated values through a fitted `Calibration`."""
    x = np.asarray(simulated, dtype=np.float64)
    if calibration.method == "none":
        return x.copy()
    if calibration.method == "linear":
        # Calibration's validator guarantees both parameters for a linear fit.
        return float(calibration.slope or 0.0) * x + float(calibration.intercept or 0.0)
    if len(calibration.xs) == 1:
        return np.full_like(x, calibration.ys[0])
    return np.interp(x, calibration.xs, calibration.ys)


def _check_alignment(record: ActivationRecord, simulation: SequenceSimulation, where: str) -> None:
    if simulation.tokens != record.tokens:
        detail = (
            f"{len(simulation.tokens)} simulated tokens for {len(record.tokens)} true tokens"
            if len(simulation.tokens) != len(record.tokens)
            else "the simulated tokens differ from the record's tokens"
        )
        raise InvalidRecordError(f"{where}: {detail}; a simulation must cover the record exactly")


def sensitivity(
    pairs: Sequence[tuple[SequenceSimulation, SequenceSimulation]],
    neutral: str,
    threshold: float = INSENSITIVE_BELOW,
) -> Sensitivity:
    """How much predictions depend on their explanation: 1 minus the Pearson correlation
    between each explanation's simulation and the neutral explanation's simulation of the same
    excerpt (``pairs``: (explanation's, neutral's)), pooled over every token (`Sensitivity`).

    Raises:
        InvalidInputError: a pair's simulations cover different tokens.
    """
    for i, (mine, theirs) in enumerate(pairs):
        if mine.tokens != theirs.tokens:
            raise InvalidInputError(f"sensitivity: pair {i} covers different tokens")

    def made(value: Score) -> Sensitivity:
        return Sensitivity(
            value=value, neutral=neutral, n_sequences=len(pairs), threshold=threshold
        )

    if not pairs:
        return made(Score.undefined("no scored excerpt was simulated under both explanations"))
    own = np.concatenate([o.expected_activations for o, _ in pairs]).astype(np.float64)
    base = np.concatenate([b.expected_activations for _, b in pairs]).astype(np.float64)
    if np.array_equal(own, base):
        return made(Score(value=0.0))
    if _is_constant(own):
        return made(Score.undefined(f"the prediction is constant ({own[0]:g} on every token)"))
    if _is_constant(base):
        return made(Score(value=1.0))
    r = correlation(own, base)
    if r.value is None:  # pragma: no cover - both sides vary and are finite
        return made(r)
    return made(Score(value=float(1.0 - r.value)))


def score_simulations(
    split: Literal["calibration", "valid", "test"],
    top: Sequence[tuple[ActivationRecord, SequenceSimulation]],
    random: Sequence[tuple[ActivationRecord, SequenceSimulation]],
    calibration: Calibration,
    *,
    failed: Sequence[FailedSequence] = (),
    scoring: ScoringMode = "plain",
    neutral_top: Sequence[SequenceSimulation | None] = (),
    neutral_random: Sequence[SequenceSimulation | None] = (),
    neutral_text: str | None = None,
) -> ScoredSimulation:
    """Score simulations of one held-out split against the truth.

    ``top`` and ``random`` pair each simulated held-out record with its simulation;
    ``calibration`` was fitted beforehand on the calibration split (on the same values that
    are scored); ``failed`` lists the excerpts that could not be simulated (kept in the
    result, left out of the scores).

    ``neutral_top`` / ``neutral_random``, when given, hold the neutral explanation's
    (``neutral_text``) simulation of each of those excerpts (``None`` where it failed): each
    sequence keeps it, and the result's ``sensitivity`` is measured over the excerpts that
    have one. With ``scoring="contrastive"`` every score is of the simulation minus the
    neutral simulation (every excerpt must have one).

    Raises:
        InvalidRecordError: a simulation does not cover its record token for token.
        InvalidInputError: neutral simulations given for another number of excerpts, without
            ``neutral_text``, or missing where contrastive scoring needs them.
    """
    measured = bool(neutral_top or neutral_random)
    if measured and (len(neutral_top) != len(top) or len(neutral_random) != len(random)):
        raise InvalidInputError(
            f"{len(neutral_top)} + {len(neutral_random)} neutral simulations for "
            f"{len(top)} top and {len(random)} random excerpts"
        )
    if measured and not neutral_text:
        raise InvalidInputError("neutral simulations given without neutral_text")
    contrastive = scoring == "contrastive"
    sequences: list[ScoredSequence] = []
    for source, pairs, baselines in (
        ("top", top, neutral_top),
        ("random", random, neutral_random),
    ):
        for i, (record, simulation) in enumerate(pairs):
            where = f"{split} {source} record {i}"
            _check_alignment(record, simulation, where)
            neutral = baselines[i] if measured else None
            if neutral is not None:
                _check_alignment(record, neutral, f"{where} (neutral explanation)")
            if contrastive and neutral is None:
                raise InvalidInputError(
                    f"contrastive scoring needs the neutral simulation of {where}"
                )
            predicted = predicted_values(simulation, neutral if contrastive else None)
            sequences.append(
                ScoredSequence(
                    record=record,
                    source=source,
                    simulation=simulation,
                    calibrated=tuple(map(float, apply_calibration(calibration, predicted))),
                    correlation=correlation(record.activations, predicted),
                    neutral=neutral,
                    contrastive=contrastive,
                )
            )

    def pooled(which: tuple[str, ...]) -> tuple[Floats, Floats, Floats]:
        chosen = [s for s in sequences if s.source in which]
        if not chosen:
            empty = np.zeros(0)
            return empty, empty, empty
        return (
            np.concatenate([s.record.activations for s in chosen]),
            np.concatenate([s.predicted for s in chosen]),
            np.concatenate([s.calibrated for s in chosen]),
        )

    def pooled_correlation(which: tuple[str, ...], label: str) -> Score:
        truth, simulated, _ = pooled(which)
        if truth.size == 0:
            if any(f.split == split and f.source in which for f in failed):
                return Score.undefined(f"no {label} record of the {split} split was simulated")
            return Score.undefined(f"the {split} split has no {label} records")
        return correlation(truth, simulated)

    truth, _, calibrated_all = pooled(("top", "random"))
    defined = [s.correlation.value for s in sequences if s.correlation.value is not None]
    mean_seq = (
        Score(value=float(np.mean(defined)))
        if defined
        else Score.undefined("no sequence has a defined correlation")
    )
    measured_sensitivity = (
        sensitivity(
            [(s.simulation, s.neutral) for s in sequences if s.neutral is not None],
            neutral_text or "",
        )
        if measured
        else None
    )
    return ScoredSimulation(
        split=split,
        sequences=tuple(sequences),
        calibration=calibration,
        correlation=pooled_correlation(("top", "random"), "top or random"),
        random_correlation=pooled_correlation(("random",), "random"),
        top_correlation=pooled_correlation(("top",), "top"),
        mean_sequence_correlation=mean_seq,
        rsquared=rsquared(truth, calibrated_all),
        absolute_dev_explained=absolute_dev_explained(truth, calibrated_all),
        failed=tuple(failed),
        scoring=scoring,
        sensitivity=measured_sensitivity,
        neutral_explanation=neutral_text if measured else None,
    )
