"""One unit's section of the report: explanation, scores, provenance and shaded excerpts, from
the fragments of ``templates/unit.html``."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from html import escape

from neuron_explainer.records import UnitId
from neuron_explainer.report._stats import component_label, counts_text
from neuron_explainer.report._templates import Html, render
from neuron_explainer.report._tokens import ExcerptRow, excerpts_json, text_html
from neuron_explainer.results import (
    ComponentInfo,
    ExplanationResult,
    FailedSequence,
    Score,
    ScoredSequence,
    SimulationStats,
    UsageSummary,
)
from neuron_explainer.runs.revision import describe_revision

__all__ = [
    "UnitIds",
    "neuron_scale",
    "pick_excerpts",
    "score_html",
    "unit_label",
    "write_unit_section",
]

Write = Callable[[str], object]

_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")
_SETTING_CHARS = 160
_EXCERPT_CHARS = 80
_FAILED_SHOWN = 20


class UnitIds:
    """Unique, readable HTML ids for units (``u-gpt2-5-mlp_neuron-131``)."""

    def __init__(self) -> None:
        self._used: set[str] = set()

    def new(self, unit: UnitId, prefix: str = "u") -> str:
        """A fresh id for ``unit``; a unit seen before gets a numbered suffix."""
        model = _SLUG.sub("-", unit.model).strip("-") or "model"
        base = f"{prefix}-{model}-{unit.layer}-{unit.kind}-{unit.index}"
        uid, n = base, 1
        while uid in self._used:
            n += 1
            uid = f"{base}-{n}"
        self._used.add(uid)
        return uid


def unit_label(unit: UnitId) -> str:
    """``layer 5 neuron 131`` (the kind spelled out when it is not an MLP neuron)."""
    kind = "neuron" if unit.kind == "mlp_neuron" else unit.kind.replace("_", " ")
    return f"layer {unit.layer} {kind} {unit.index}"


def score_html(score: Score) -> Html:
    """A score as HTML: its value to 3 decimals, or ``undefined`` with the reason."""
    if score.value is not None:
        return render("score", value=f"{score.value:.3f}")
    return render("undefined-score", reason=score.reason or "undefined")


def neuron_scale(result: ExplanationResult) -> float:
    """The activation that truth shading treats as full intensity.

    The unit's largest known activation: the larger of the explainer's prompt scale maximum
    (the largest activation in the records it was shown) and the largest held-out activation.
    When no activation is positive, the largest absolute activation (so negative values still
    shade); 0 when every activation is 0.
    """
    peak = max((max(s.record.activations) for s in result.scored.sequences), default=0.0)
    scale = result.explanation.scale
    if scale is not None:
        peak = max(peak, scale.max_activation)
    if peak > 0:
        return peak
    return max((abs(a) for s in result.scored.sequences for a in s.record.activations), default=0)


def pick_excerpts(
    sequences: Sequence[ScoredSequence], limit: int | None
) -> tuple[list[ScoredSequence], list[ScoredSequence]]:
    """The top and random excerpts to show: all, or at most ``limit`` split between the two
    (half each, one source filling in for the other when it has fewer), in stored order."""
    top = [s for s in sequences if s.source == "top"]
    rnd = [s for s in sequences if s.source == "random"]
    if limit is None:
        return top, rnd
    n_top = min(len(top), max(limit - len(rnd), (limit + 1) // 2))
    return top[:n_top], rnd[: max(0, limit - n_top)]


def _component(info: ComponentInfo) -> Html:
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


def usage_text(usage: UsageSummary) -> str:
    """``1,234 tokens (1,000 prompt + 234 completion), 3 calls, 1 cached, $0.0012``."""
    tokens = usage.prompt_tokens + usage.completion_tokens
    text = (
        f"{tokens:,} tokens ({usage.prompt_tokens:,} prompt + {usage.completion_tokens:,} "
        f"completion), {usage.calls:,} calls"
    )
    if usage.cache_hits:
        text += f", {usage.cache_hits:,} from cache"
    return text + f", ${usage.cost_usd:.4f}"


def simulation_text(stats: SimulationStats) -> str:
    """``24 of 26 excerpts simulated, 2 failed (misaligned 2), 3 constant, 1 retried
    (misaligned 1), 1,500 simulator tokens (1,200 prompt + 300 completion)``."""
    text = f"{stats.simulated:,} of {stats.attempted:,} excerpts simulated, {stats.failed:,} failed"
    if stats.failed:
        text += f" ({counts_text(stats.failure_reasons)})"
    text += f", {stats.constant:,} constant, {stats.retried:,} retried"
    if stats.retried:
        text += f" ({counts_text(stats.retry_reasons)})"
    tokens = stats.prompt_tokens + stats.completion_tokens
    return text + (
        f", {tokens:,} simulator tokens ({stats.prompt_tokens:,} prompt + "
        f"{stats.completion_tokens:,} completion)"
    )


def _failed_excerpt(failed: FailedSequence) -> Html:
    text = "".join(failed.record.tokens)
    if len(text) > _EXCERPT_CHARS:
        text = text[: _EXCERPT_CHARS - 1] + "…"
    return render(
        "failed-excerpt",
        where=f"{failed.split} {failed.source} {failed.index + 1}",
        reason=failed.failure.reason,
        message=failed.failure.message,
        text=text_html(text),
    )


def _kv_rows(rows: Sequence[tuple[str, str]]) -> Html:
    return Html("".join(render("kv-row", name=name, value=value) for name, value in rows))


def _score_rows(result: ExplanationResult) -> Html:
    scored = result.scored
    rows = (
        ("Score (top-and-random correlation)", scored.correlation),
        ("Random-only correlation", scored.random_correlation),
        ("Top-only correlation", scored.top_correlation),
        ("Mean per-excerpt correlation", scored.mean_sequence_correlation),
        ("R² (calibrated)", scored.rsquared),
        ("Absolute deviation explained", scored.absolute_dev_explained),
    )
    out = []
    for name, score in rows:
        value = score_html(score)
        if score.value is None:
            value = Html(value + render("reason", reason=text_html(score.reason or "")))
        out.append((name, value))
    if scored.sensitivity is not None:
        out.append(("Sensitivity to the explanation", text_html(scored.sensitivity.describe())))
    return _kv_rows(out)


def _meta(result: ExplanationResult) -> Html:
    scored, prov = result.scored, result.provenance
    calibration = Html(escape(scored.calibration.method))
    if scored.calibration.note:
        calibration = Html(calibration + render("note", note=text_html(scored.calibration.note)))
    subject = text_html(prov.model)
    if prov.hook_point:
        subject = Html(subject + render("hook", hook=prov.hook_point))
    rows: list[tuple[str, str]] = [
        ("Explainer", _component(result.explainer)),
        ("Simulator", _component(result.simulator)),
        ("Subject", subject),
    ]
    if prov.dataset:
        rows.append(("Dataset", text_html(prov.dataset)))
    scored_on = f"{scored.split} split, {scored.n_sequences} excerpts"
    if scored.n_failed:
        scored_on += f" ({scored.n_failed} more could not be simulated)"
    rows.append(("Scored on", scored_on))
    if (revision := describe_revision(result.explanation)) is not None:
        rows.append(("Revision", text_html(revision)))
    if scored.scoring == "contrastive":
        rows.append(
            (
                "Scoring",
                text_html(
                    "contrastive: the prediction minus the prediction under the neutral "
                    f"explanation {scored.neutral_explanation!r}"
                ),
            )
        )
    rows.append(("Calibration", calibration))
    if result.usage != UsageSummary():
        rows.append(("LLM usage", usage_text(result.usage)))
    if result.simulation is not None:
        rows.append(("Simulations", simulation_text(result.simulation)))
    if scored.failed:
        failed = "".join(_failed_excerpt(f) for f in scored.failed[:_FAILED_SHOWN])
        if len(scored.failed) > _FAILED_SHOWN:
            failed += render("failed-more", count=str(len(scored.failed) - _FAILED_SHOWN))
        rows.append(("Failed excerpts", Html(failed)))
    created = result.created_at.strftime("%Y-%m-%d %H:%M UTC")
    rows.append(("Produced", f"{created}, neuron_explainer {result.library_version}"))
    return _kv_rows(rows)


def _excerpt_head(seq: ScoredSequence, number: int) -> Html:
    corr = seq.correlation
    r = f"r {corr.value:.2f}" if corr.value is not None else "r undefined"
    return render(
        "excerpt",
        source=seq.source,
        number=str(number),
        tokens=str(len(seq.record.tokens)),
        max_activation=f"{seq.record.max_activation:.3g}",
        correlation=render("correlation-why", reason=corr.reason, value=r)
        if corr.reason
        else render("correlation", value=r),
    )


def _row(seq: ScoredSequence, truth_scale: float) -> ExcerptRow:
    on_0_10 = seq.simulation.scale == "simulated_0_10"
    return ExcerptRow(
        tokens=seq.record.tokens,
        activations=seq.record.activations,
        simulated=seq.simulation.expected_activations,
        calibrated=seq.calibrated,
        sim_scale=10.0 if on_0_10 else truth_scale,
        sim_unit="/10" if on_0_10 else "",
    )


def _sim_note(result: ExplanationResult) -> Html:
    """What full shade means on the simulated row: the simulators' scale(s)."""
    sims = {s.simulation.scale for s in result.scored.sequences}
    if sims == {"simulated_0_10"}:
        return render("sim-0-10")
    if sims == {"neuron_activations"}:
        return render("sim-activations")
    return render("sim-mixed")


def _excerpts(result: ExplanationResult, max_excerpts: int | None) -> Html:
    """The legend, the boxes of the excerpts shown, a note on the others, and their data."""
    top, rnd = pick_excerpts(result.scored.sequences, max_excerpts)
    truth_scale = neuron_scale(result)
    total = len(result.scored.sequences)
    shown = [*enumerate(top, start=1), *enumerate(rnd, start=1)]
    parts = []
    if shown:
        parts.append(render("legend", scale=f"{truth_scale:.3g}", sim_note=_sim_note(result)))
    parts.extend(_excerpt_head(seq, number) for number, seq in shown)
    if len(shown) < total:
        parts.append(render("not-shown", count=str(total - len(shown))))
    if shown:
        rows = [_row(seq, truth_scale) for _, seq in shown]
        parts.append(render("tokens", tokens=Html(excerpts_json(truth_scale, rows))))
    return Html("".join(parts))


def write_unit_section(
    write: Write, result: ExplanationResult, uid: str, max_excerpts: int | None
) -> None:
    """Write one unit's ``<details>`` section (the ``unit`` fragment of
    ``templates/unit.html``)."""
    write(
        render(
            "unit",
            uid=uid,
            label=unit_label(result.unit),
            model=text_html(result.unit.model),
            score=score_html(result.scored.correlation),
            explanation=text_html(result.explanation.text),
            scores=_score_rows(result),
            provenance=_meta(result),
            excerpts=_excerpts(result, max_excerpts),
        )
    )
