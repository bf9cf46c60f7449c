"""One unit's section of the report: explanation, scores, provenance, the simulation's shaded
excerpts (when it was simulated) and the other scorers' sections (``_scorers``), from the
fragments of ``templates/unit.html``."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from html import escape

from neuron_explainer.records import ActivationRecord, UnitId
from neuron_explainer.report._scorers import (
    component_html,
    kv_rows,
    score_html,
    score_row,
    score_with_reason,
    scorer_section,
)
from neuron_explainer.report._stats import SIMULATION, counts_text
from neuron_explainer.report._templates import Html, render
from neuron_explainer.report._tokens import ExcerptRow, excerpts_json, text_html
from neuron_explainer.results import (
    ClassificationScore,
    ExplanationResult,
    FailedSequence,
    ScoredSequence,
    ScoredSimulation,
    SimulationStats,
    UsageSummary,
)
from neuron_explainer.runs.revision import describe_revision

__all__ = [
    "UnitIds",
    "neuron_scale",
    "pick_excerpts",
    "unit_label",
    "write_unit_section",
]

Write = Callable[[str], object]

_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")
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
    """``layer 5 neuron 131`` (the kind spelled out when it is not an MLP neuron; a latent or
    direction also names its SAE or vector, ``of sha256:2fcd3a1e62b7c592``, so two SAEs' latent
    7 read apart)."""
    kind = "neuron" if unit.kind == "mlp_neuron" else unit.kind.replace("_", " ")
    label = f"layer {unit.layer} {kind} {unit.index}"
    return label if unit.source is None else f"{label} of {unit.source}"


def _held_out(result: ExplanationResult) -> Iterator[ActivationRecord]:
    """The held-out excerpts the report shows: the simulated ones, the judged ones."""
    if result.scored is not None:
        yield from (s.record for s in result.scored.sequences)
    for score in result.scores.values():
        if isinstance(score, ClassificationScore):
            yield from (j.record for j in score.judgements)


def neuron_scale(result: ExplanationResult) -> float:
    """The activation that truth shading treats as full intensity.

    The unit's largest known activation: the larger of the explainer's prompt scale maximum
    (the largest activation in the records it was shown) and the largest held-out activation
    (of the simulated and the judged excerpts). When no activation is positive, the largest
    absolute activation (so negative values still shade); 0 when every activation is 0.
    """
    peak = max((max(r.activations) for r in _held_out(result)), default=0.0)
    scale = result.explanation.scale
    if scale is not None:
        peak = max(peak, scale.max_activation)
    if peak > 0:
        return peak
    return max((abs(a) for r in _held_out(result) for a in r.activations), default=0)


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


def _simulation_rows(scored: ScoredSimulation, headline: bool) -> list[tuple[str, str]]:
    rows = (
        (
            "Score (top-and-random correlation)" if headline else "Top-and-random correlation",
            scored.correlation,
        ),
        ("Random-only correlation", scored.random_correlation),
        ("Top-only correlation", scored.top_correlation),
        ("Mean per-excerpt correlation", scored.mean_sequence_correlation),
        ("R² (calibrated)", scored.rsquared),
        ("Absolute deviation explained", scored.absolute_dev_explained),
    )
    out: list[tuple[str, str]] = [(name, score_with_reason(score)) for name, score in rows]
    if scored.sensitivity is not None:
        out.append(("Sensitivity to the explanation", text_html(scored.sensitivity.describe())))
    return out


def _score_rows(result: ExplanationResult) -> Html:
    """Every score, in the order the scorers were asked for (the headline first): the
    simulation's six and its sensitivity, one row for any other."""
    out: list[tuple[str, str]] = []
    for i, (name, score) in enumerate(result.scores.items()):
        if name == SIMULATION and result.scored is not None:
            out += _simulation_rows(result.scored, headline=i == 0)
        else:
            out.append(score_row(name, score, headline=i == 0))
    return kv_rows(out)


def _scored_on(scored: ScoredSimulation) -> list[tuple[str, str]]:
    text = f"{scored.split} split, {scored.n_sequences} excerpts"
    if scored.n_failed:
        text += f" ({scored.n_failed} more could not be simulated)"
    return [("Scored on", text)]


def _scoring(scored: ScoredSimulation) -> list[tuple[str, str]]:
    """How it was scored, contrastively, and the calibration."""
    rows: list[tuple[str, str]] = []
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
    calibration = Html(escape(scored.calibration.method))
    if scored.calibration.note:
        calibration = Html(calibration + render("note", note=text_html(scored.calibration.note)))
    rows.append(("Calibration", calibration))
    return rows


def _failed_rows(scored: ScoredSimulation) -> list[tuple[str, str]]:
    if not scored.failed:
        return []
    failed = "".join(_failed_excerpt(f) for f in scored.failed[:_FAILED_SHOWN])
    if len(scored.failed) > _FAILED_SHOWN:
        failed += render("failed-more", count=str(len(scored.failed) - _FAILED_SHOWN))
    return [("Failed excerpts", Html(failed))]


def _meta(result: ExplanationResult) -> Html:
    """Who and what produced the unit's result; the simulation's rows when it was simulated
    (the simulator, the split scored, the calibration, the excerpts that failed)."""
    scored, prov = result.scored, result.provenance
    subject = text_html(prov.model)
    if prov.hook_point:
        subject = Html(subject + render("hook", hook=prov.hook_point))
    rows: list[tuple[str, str]] = [("Explainer", component_html(result.explainer))]
    if scored is not None:
        rows.append(("Simulator", component_html(result.simulator)))
    rows.append(("Subject", subject))
    if prov.dataset:
        rows.append(("Dataset", text_html(prov.dataset)))
    if scored is not None:
        rows += _scored_on(scored)
    if (revision := describe_revision(result.explanation)) is not None:
        rows.append(("Revision", text_html(revision)))
    if scored is not None:
        rows += _scoring(scored)
    if result.usage != UsageSummary():
        rows.append(("LLM usage", usage_text(result.usage)))
    if result.simulation is not None:
        rows.append(("Simulations", simulation_text(result.simulation)))
    if scored is not None:
        rows += _failed_rows(scored)
    created = result.created_at.strftime("%Y-%m-%d %H:%M UTC")
    rows.append(("Produced", f"{created}, neuron_explainer {result.library_version}"))
    return kv_rows(rows)


def _attended(record: ActivationRecord) -> Html:
    """Where an attention head looked from the excerpt's top token (empty for other units)."""
    seen = record.attended
    if seen is None:
        return Html("")
    where = "before the excerpt" if seen.source is None else f"token {seen.source + 1}"
    return render(
        "attended",
        top=record.tokens[seen.position].strip() or record.tokens[seen.position],
        position=str(seen.position + 1),
        source=seen.source_token.strip() or seen.source_token,
        where=where,
        weight=f"{seen.weight:.2f}",
    )


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
        attended=_attended(seq.record),
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


def _sim_note(scored: ScoredSimulation) -> Html:
    """What full shade means on the simulated row: the simulators' scale(s)."""
    sims = {s.simulation.scale for s in scored.sequences}
    if sims == {"simulated_0_10"}:
        return render("sim-0-10")
    if sims == {"neuron_activations"}:
        return render("sim-activations")
    return render("sim-mixed")


def _excerpts(scored: ScoredSimulation, truth_scale: float, max_excerpts: int | None) -> Html:
    """The legend, the boxes of the excerpts shown, a note on the others, and their data."""
    top, rnd = pick_excerpts(scored.sequences, max_excerpts)
    total = len(scored.sequences)
    shown = [*enumerate(top, start=1), *enumerate(rnd, start=1)]
    parts = []
    if shown:
        parts.append(render("legend", scale=f"{truth_scale:.3g}", sim_note=_sim_note(scored)))
    parts.extend(_excerpt_head(seq, number) for number, seq in shown)
    if len(shown) < total:
        parts.append(render("not-shown", count=str(total - len(shown))))
    if shown:
        rows = [_row(seq, truth_scale) for _, seq in shown]
        parts.append(render("tokens", tokens=Html(excerpts_json(truth_scale, rows))))
    return Html("".join(parts))


def write_unit_section(
    write: Write,
    result: ExplanationResult,
    uid: str,
    max_excerpts: int | None,
    max_judgements: int | None = None,
) -> None:
    """Write one unit's ``<details>`` section (the ``unit`` fragment of
    ``templates/unit.html``): the simulated excerpts when it was simulated, then a section per
    other scorer (``_scorers``), at most ``max_judgements`` judged excerpts each."""
    truth_scale = neuron_scale(result)
    scored = result.scored
    others = "".join(
        scorer_section(name, score, truth_scale, max_judgements)
        for name, score in result.scores.items()
        if name != SIMULATION
    )
    write(
        render(
            "unit",
            uid=uid,
            label=unit_label(result.unit),
            model=text_html(result.unit.model),
            score=score_html(next(iter(result.scores.values())).value),
            explanation=text_html(result.explanation.text),
            scores=_score_rows(result),
            provenance=_meta(result),
            excerpts=_excerpts(scored, truth_scale, max_excerpts) if scored else Html(""),
            scorers=Html(others),
        )
    )
