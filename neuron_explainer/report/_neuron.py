"""One unit's section of the report: explanation, scores, provenance and shaded excerpts."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from html import escape

from neuron_explainer.records import UnitId
from neuron_explainer.report._stats import component_label
from neuron_explainer.report._tokens import ExcerptRow, excerpts_json, text_html
from neuron_explainer.results import (
    ComponentInfo,
    ExplanationResult,
    Score,
    ScoredSequence,
    UsageSummary,
)

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


def score_html(score: Score) -> str:
    """A score as HTML: its value to 3 decimals, or ``undefined`` with the reason."""
    if score.value is not None:
        return f'<span class="num">{score.value:.3f}</span>'
    reason = escape(score.reason or "undefined")
    return f'<span class="undef" title="{reason}">undefined</span>'


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


def _component(info: ComponentInfo) -> str:
    label = text_html(component_label(info.name, info.settings))
    details = [f"version {escape(info.version)}"] if info.version else []
    if info.prompt_version:
        details.append(f"prompt {escape(info.prompt_version)}")
    settings = []
    for key, value in info.settings.items():
        shown = json.dumps(value, ensure_ascii=False)
        if len(shown) > _SETTING_CHARS:
            shown = shown[: _SETTING_CHARS - 1] + "…"
        settings.append(f"{key}={shown}")
    extra = f' <span class="dim">({escape(", ".join(details))})</span>' if details else ""
    title = f' title="{escape("; ".join(settings))}"' if settings else ""
    return f"<span{title}>{label}</span>{extra}"


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


def _score_rows(result: ExplanationResult) -> str:
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
            value += f' <span class="reason">{text_html(score.reason or "")}</span>'
        out.append(f"<tr><th>{name}</th><td>{value}</td></tr>")
    return "".join(out)


def _meta(result: ExplanationResult) -> str:
    scored, prov = result.scored, result.provenance
    calibration = escape(scored.calibration.method)
    if scored.calibration.note:
        calibration += f' <span class="dim">({text_html(scored.calibration.note)})</span>'
    subject = text_html(prov.model)
    if prov.hook_point:
        subject += f' <span class="dim">at {escape(prov.hook_point)}</span>'
    rows = [
        ("Explainer", _component(result.explainer)),
        ("Simulator", _component(result.simulator)),
        ("Subject", subject),
    ]
    if prov.dataset:
        rows.append(("Dataset", text_html(prov.dataset)))
    rows.append(("Scored on", f"{escape(scored.split)} split, {len(scored.sequences)} excerpts"))
    rows.append(("Calibration", calibration))
    if result.usage != UsageSummary():
        rows.append(("LLM usage", escape(usage_text(result.usage))))
    created = result.created_at.strftime("%Y-%m-%d %H:%M UTC")
    rows.append(("Produced", f"{created}, neuron_explainer {escape(result.library_version)}"))
    return "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)


def _excerpt_head(seq: ScoredSequence, number: int) -> str:
    corr = seq.correlation
    r = f"r {corr.value:.2f}" if corr.value is not None else "r undefined"
    r_title = f' title="{escape(corr.reason)}"' if corr.reason else ""
    return (
        f'<div class="excerpt"><div class="excerpt-head"><span class="src {seq.source}">'
        f"{seq.source} {number}</span> {len(seq.record.tokens)} tokens · max activation "
        f"{seq.record.max_activation:.3g} · <span{r_title}>{r}</span></div>"
        '<div class="toks"></div></div>\n'
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


def write_unit_section(
    write: Write, result: ExplanationResult, uid: str, max_excerpts: int | None
) -> None:
    """Write one unit's ``<details>`` section."""
    text = text_html(result.explanation.text)
    write(
        f'<details class="unit" id="{uid}"><summary>'
        f'<span class="uname">{escape(unit_label(result.unit))}</span>'
        f'<span class="model">{text_html(result.unit.model)}</span>'
        f"{score_html(result.scored.correlation)}"
        f'<span class="sx">{text}</span></summary>\n<div class="body">'
        f'<p class="expl">{text}</p><div class="cols">'
        f'<table class="kv">{_score_rows(result)}</table>'
        f'<table class="kv">{_meta(result)}</table></div>\n'
    )
    top, rnd = pick_excerpts(result.scored.sequences, max_excerpts)
    truth_scale = neuron_scale(result)
    sims = {s.simulation.scale for s in result.scored.sequences}
    sim_note = (
        "on the simulator's 0–10 scale, full shade = 10"
        if sims == {"simulated_0_10"}
        else "in activation units, shaded like the true row"
        if sims == {"neuron_activations"}
        else "on the 0–10 scale (full shade = 10) or in activation units like the true row"
    )
    total = len(result.scored.sequences)
    shown = [*enumerate(top, start=1), *enumerate(rnd, start=1)]
    if shown:
        write(
            '<p class="legend">Held-out excerpts. Upper row: true activation, full shade = '
            f"{truth_scale:.3g} (the unit's largest known activation). Lower row: simulated, "
            f"{sim_note}. Hover a token for its values.</p>\n"
        )
    for number, seq in shown:
        write(_excerpt_head(seq, number))
    if len(shown) < total:
        write(f'<p class="dim">{total - len(shown)} more held-out excerpts not shown.</p>')
    if shown:
        rows = [_row(seq, truth_scale) for _, seq in shown]
        write(f'<script type="application/json" class="tokens">{excerpts_json(truth_scale, rows)}')
        write("</script>")
    write("</div></details>\n")
