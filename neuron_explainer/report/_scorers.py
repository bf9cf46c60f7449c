"""A unit's scores other than the simulation's, from the fragments of ``templates/scores.html``:
a row of the unit's scores table each (`score_row`), and a section each (`scorer_section`): a
classification score's metrics and the excerpts it judged, right and wrong; a plugin score's
details. Also the parts every section of a unit shares: a score, a component, key-value rows.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

from neuron_explainer.report._stats import column_label, component_label, measure_label
from neuron_explainer.report._templates import Html, render
from neuron_explainer.report._tokens import JudgedRow, judged_json, text_html
from neuron_explainer.results import (
    ClassificationScore,
    ComponentInfo,
    IntervalScore,
    Judgement,
    PluginScore,
    Score,
    ScorerScore,
)

__all__ = [
    "component_html",
    "interval_html",
    "kv_rows",
    "pick_judgements",
    "score_html",
    "score_row",
    "score_with_reason",
    "scorer_section",
]

_SETTING_CHARS = 160
_JSON_CHARS = 4000
_CLASSES = {
    "detection": ("activating", "non-activating"),
    "fuzzing": ("right highlights", "wrong highlights"),
}
_ANSWERS = {
    ("detection", True): "yes (activating)",
    ("detection", False): "no (not activating)",
    ("fuzzing", True): "yes (right highlight)",
    ("fuzzing", False): "no (wrong highlight)",
}
_VERDICTS = {"wrong": "✗ wrong", "failed": "! failed", "right": "✓ right"}


def score_html(score: Score) -> Html:
    """A score as HTML: its value to 3 decimals, or ``undefined`` with the reason."""
    if score.value is not None:
        return render("score", value=f"{score.value:.3f}")
    return render("undefined-score", reason=score.reason or "undefined")


def score_with_reason(score: Score) -> Html:
    """`score_html`, followed by the reason when the score is undefined."""
    value = score_html(score)
    if score.value is None:
        value = Html(value + render("reason", reason=text_html(score.reason or "")))
    return value


def interval_html(score: IntervalScore) -> Html:
    """A metric: its value with its interval (``0.950 [0.900, 1.000]``), or undefined with
    the reason."""
    if score.interval is None:
        return score_with_reason(score)
    low, high = score.interval.low, score.interval.high
    return Html(score_html(score) + render("interval", low=f"{low:.3f}", high=f"{high:.3f}"))


def component_html(info: ComponentInfo) -> Html:
    """Who produced a part: name (with its LLM), version, prompt version; settings on hover."""
    label = text_html(component_label(info.name, info.settings))
    details = [f"version {info.version}"] if info.version else []
    if info.prompt_version:
        details.append(f"prompt {info.prompt_version}")
    settings = []
    for key, value in info.settings.items():
        shown = json.dumps(value, ensure_ascii=False)
        if len(shown) > _SETTING_CHARS:
            shown = shown[: _SETTING_CHARS - 1] + "…"
        settings.append(f"{key}={shown}")
    extra = render("note", note=", ".join(details)) if details else Html("")
    if settings:
        return render(
            "component-settings", settings="; ".join(settings), label=label, details=extra
        )
    return render("component", label=label, details=extra)


def kv_rows(rows: Sequence[tuple[str, str]]) -> Html:
    """Rows of a key-value table (``kv-row`` fragments)."""
    return Html("".join(render("kv-row", name=name, value=value) for name, value in rows))


def score_row(name: str, score: ScorerScore, headline: bool) -> tuple[str, Html]:
    """The unit's scores table's row of scorer ``name`` (not the simulation's):
    ``("Detection balanced accuracy", "0.950 [0.900, 1.000]")``, ``"Score (…)"`` when it is
    the headline."""
    measure = measure_label(name, score)
    label = f"Score ({measure})" if headline else column_label(measure)
    if isinstance(score, ClassificationScore) and score.value.value is not None:
        return label, interval_html(score.headline_score)
    return label, score_with_reason(score.value)


def pick_judgements(
    judgements: Sequence[Judgement], limit: int | None
) -> tuple[list[tuple[int, Judgement]], list[Judgement]]:
    """The judgements to show, with their position among ``judgements``: the wrong ones, then
    the failed ones, then the right ones, at most ``limit`` (``None``: all); and the others."""

    def rank(item: tuple[int, Judgement]) -> int:
        return {False: 0, None: 1, True: 2}[item[1].correct]

    ordered = sorted(enumerate(judgements), key=rank)
    end = len(ordered) if limit is None else limit
    return ordered[:end], [j for _, j in ordered[end:]]


def _verdict(judgement: Judgement) -> str:
    return {False: "wrong", None: "failed", True: "right"}[judgement.correct]


def _judge_said(judgement: Judgement) -> Html:
    if judgement.failure is not None:
        failure = judgement.failure
        return render("judge-failed", reason=failure.reason, message=failure.message)
    p_yes = "" if judgement.p_yes is None else f", p(yes) {judgement.p_yes:.2f}"
    return render("judge-answer", answer="yes" if judgement.answer else "no", p_yes=p_yes)


def _judgement(judgement: Judgement, kind: str, number: int) -> Html:
    verdict = _verdict(judgement)
    return render(
        "judgement",
        verdict=verdict,
        verdict_text=_VERDICTS[verdict],
        source=judgement.source,
        number=str(number),
        tokens=str(len(judgement.record.tokens)),
        max_activation=f"{judgement.record.max_activation:.3g}",
        label=_ANSWERS[kind, judgement.label],
        answer=_judge_said(judgement),
    )


def _verdict_counts(judgements: Sequence[Judgement]) -> str:
    counts = Counter(_verdict(j) for j in judgements)
    return ", ".join(f"{counts[v]:,} {v}" for v in _VERDICTS if counts[v])


def _judged(score: ClassificationScore, truth_scale: float, limit: int | None) -> Html:
    """The legend, a box per judgement shown (wrong first), a note on the others, the data."""
    shown, hidden = pick_judgements(score.judgements, limit)
    parts = []
    if shown:
        parts.append(
            render(
                "judged-legend",
                scale=f"{truth_scale:.3g}",
                threshold=f"{score.firing_threshold:.3g}",
                highlight=render("judged-highlight") if score.kind == "fuzzing" else Html(""),
            )
        )
    parts.extend(_judgement(j, score.kind, i + 1) for i, j in shown)
    if hidden:
        parts.append(
            render("judged-not-shown", count=f"{len(hidden):,}", detail=_verdict_counts(hidden))
        )
    if shown:
        rows = [
            JudgedRow(j.record.tokens, j.record.activations, j.highlighted or ()) for _, j in shown
        ]
        parts.append(render("judged-tokens", tokens=Html(judged_json(truth_scale, rows))))
    return Html("".join(parts))


def _negatives(score: ClassificationScore) -> str:
    if score.negatives == "wrong_highlight":
        return "the activating excerpts, with as many other tokens highlighted"
    kind = "hard (those with a top token first)" if score.negatives == "hard" else "random"
    negatives = score.metrics.negatives
    return f"{kind}; {score.hard_negatives:,} of {negatives:,} contain a top token"


def _not_judged(score: ClassificationScore) -> str:
    if score.kind == "fuzzing":
        return f"{score.not_judged:,} activating excerpts with too few other tokens to highlight"
    return f"{score.not_judged:,} excerpts neither activating nor non-activating"


def _counts(score: ClassificationScore) -> str:
    """``38 of 40 judged (19 of 20 activating, 19 of 20 non-activating); 2 failed (5.0%);
    35 right, 3 wrong``."""
    m = score.metrics
    yes, no = _CLASSES[score.kind]
    right = sum(j.correct is True for j in score.judgements)
    wrong = sum(j.correct is False for j in score.judgements)
    return (
        f"{m.judged:,} of {m.total:,} judged ({m.judged_positives:,} of {m.positives:,} {yes}, "
        f"{m.judged_negatives:,} of {m.negatives:,} {no}); {m.failed:,} failed "
        f"({m.failed_fraction:.1%}); {right:,} right, {wrong:,} wrong"
    )


def _classification_rows(score: ClassificationScore) -> Html:
    m = score.metrics
    rows: list[tuple[str, str]] = [
        ("Balanced accuracy", interval_html(m.balanced_accuracy)),
        ("AUROC (of p(yes))", interval_html(m.auroc)),
        ("Precision", interval_html(m.precision)),
        ("Recall", interval_html(m.recall)),
        ("F1", interval_html(m.f1)),
    ]
    if m.failed:
        rows.append(
            ("Balanced accuracy, failed = wrong", interval_html(m.pessimistic_balanced_accuracy))
        )
    intervals = (
        f"{m.confidence:.0%} bootstrap, {m.n_resamples:,} resamples" if m.n_resamples else "none"
    )
    rows += [
        ("Intervals", intervals),
        ("Judged", _counts(score)),
        (
            "Firing threshold",
            f"{score.firing_threshold:.3g} ({score.firing_fraction:g} × the unit's largest "
            "activation)",
        ),
        ("Negatives", _negatives(score)),
    ]
    if score.not_judged:
        rows.append(("Not judged", _not_judged(score)))
    rows += [
        ("Judged on", f"{score.split} split, {score.excerpts_per_request} excerpts per request"),
        ("Scorer", component_html(score.scorer)),
    ]
    return kv_rows(rows)


def _details_json(details: object) -> Html:
    text = json.dumps(details, ensure_ascii=False, indent=2)
    if len(text) > _JSON_CHARS:
        text = text[: _JSON_CHARS - 1] + "…"
    return render("details-json", json=text_html(text))


def scorer_section(
    name: str, score: ScorerScore, truth_scale: float, max_judgements: int | None
) -> Html:
    """The section of scorer ``name``'s score (not the simulation's): a classification score's
    metrics and judged excerpts, a plugin score's value, scorer and details; nothing for
    another kind (its value is in the unit's scores table)."""
    if isinstance(score, ClassificationScore):
        return render(
            "classification",
            name=column_label(name),
            rows=_classification_rows(score),
            judged=_judged(score, truth_scale, max_judgements),
        )
    if isinstance(score, PluginScore):
        rows: list[tuple[str, str]] = [
            ("Score", score_with_reason(score.value)),
            ("Scorer", component_html(score.scorer)),
            ("Details", _details_json(score.details)),
        ]
        return render("plugin", name=column_label(name), rows=kv_rows(rows))
    return Html("")
