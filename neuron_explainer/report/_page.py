"""``write_report``: stream results into one self-contained HTML page, from the fragments of
``templates/page.html``."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from neuron_explainer._version import __version__
from neuron_explainer.errors import InvalidInputError
from neuron_explainer.records import UnitId
from neuron_explainer.report._assets import CSP, SCRIPT, STYLE
from neuron_explainer.report._neuron import UnitIds, unit_label, write_unit_section
from neuron_explainer.report._stats import RunSummary, simulation_stats
from neuron_explainer.report._svg import histogram_svg
from neuron_explainer.report._templates import Html, render, write_fragment
from neuron_explainer.report._tokens import text_html
from neuron_explainer.results import ExplanationResult, Score, Sensitivity, SimulationStats

__all__ = ["DEFAULT_MAX_EXCERPTS", "write_report"]

DEFAULT_MAX_EXCERPTS = 6
"""Held-out excerpts shown per unit by default (half top, half random)."""

_COLUMNS = (
    # (header, CSS class, sort type)
    ("Model", "c-model", "text"),
    ("Layer", "n", "num"),
    ("Neuron", "n", "num"),
    ("Explanation", "", "text"),
    ("Score", "n", "num"),
    ("Random-only", "n", "num"),
    ("R²", "n", "num"),
    ("Sensitivity", "n c-sens", "num"),
    ("Tokens", "n c-usage", "num"),
    ("Cost (USD)", "n c-usage", "num"),
)


def _open(path: Path | None = None) -> IO[str]:
    """A text file that writes any string: lone surrogates become ``\\udXXX`` escapes."""
    if path is None:
        return tempfile.TemporaryFile("w+", encoding="utf-8", errors="backslashreplace")
    return open(path, "w", encoding="utf-8", errors="backslashreplace", newline="\n")


def _num_cell(score: Score, css: str = "n") -> Html:
    if score.value is None:
        return render("undefined-cell", css=css, reason=score.reason or "undefined")
    return render("score-cell", css=css, value=repr(score.value), shown=f"{score.value:.3f}")


def _sensitivity_cell(sensitivity: Sensitivity | None) -> Html:
    """The units table's sensitivity cell: blank when not measured, flagged when low."""
    if sensitivity is None:
        return render("blank-cell", css="n c-sens")
    value = sensitivity.value
    if value.value is None:
        return render("undefined-cell", css="n c-sens", reason=value.reason or "undefined")
    template = "flagged-cell" if sensitivity.flagged else "score-cell"
    return render(template, css="n c-sens", value=repr(value.value), shown=f"{value.value:.2f}")


def _table_row(result: ExplanationResult, uid: str, index: int) -> Html:
    unit, usage, scored = result.unit, result.usage, result.scored
    tokens = usage.prompt_tokens + usage.completion_tokens
    return render(
        "row",
        index=str(index),
        model=text_html(unit.model),
        layer=str(unit.layer),
        neuron=str(unit.index),
        uid=uid,
        label=unit_label(unit),
        explanation=text_html(result.explanation.text),
        score=_num_cell(scored.correlation),
        random_score=_num_cell(scored.random_correlation),
        rsquared=_num_cell(scored.rsquared),
        sensitivity=_sensitivity_cell(scored.sensitivity),
        tokens=str(tokens),
        tokens_shown=f"{tokens:,}",
        cost=repr(usage.cost_usd),
        cost_shown=f"{usage.cost_usd:.4f}",
    )


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _counted(counter: Counter[str]) -> Html:
    return Html(", ".join(f"{text_html(name)} ({n})" for name, n in counter.most_common()))


def _stats(summary: RunSummary) -> Html:
    """The overview's figures, each a ``stat`` fragment."""
    failed = f"{summary.failed:,}"
    stats = [
        ("Explained", f"{summary.explained:,}"),
        ("Failed", render("failed-link", count=failed) if summary.failed else failed),
        ("Mean score", _fmt(summary.mean)),
        ("Median score", _fmt(summary.median)),
        ("Undefined score", f"{summary.undefined:,}"),
        ("Mean random-only", _fmt(summary.random_mean)),
    ]
    if summary.has_usage:
        u = summary.usage
        stats += [
            ("LLM tokens", f"{u.prompt_tokens + u.completion_tokens:,}"),
            ("LLM calls", f"{u.calls:,}" + (f" + {u.cache_hits:,} cached" if u.cache_hits else "")),
            ("Cost (est.)", f"${u.cost_usd:,.4f}"),
        ]
    if summary.simulation.attempted:
        stats += simulation_stats(summary.simulation)
    if summary.sensitivity_measured:
        stats.append(
            (
                "Flagged insensitive",
                f"{summary.flagged:,} of {summary.sensitivity_measured:,}",
            )
        )
    return Html("".join(render("stat", name=k, value=v) for k, v in stats))


def _components(summary: RunSummary) -> Html:
    if not summary.explained:
        return Html("")
    return render(
        "components",
        models=_counted(summary.models),
        explainers=_counted(summary.explainers),
        simulators=_counted(summary.simulators),
    )


def _table_class(summary: RunSummary) -> str:
    classes = ["units"]
    if len(summary.models) <= 1:
        classes.append("one-model")
    if not summary.has_usage:
        classes.append("no-usage")
    if not summary.sensitivity_measured:
        classes.append("no-sens")
    return " ".join(classes)


def _failures(failures: list[tuple[UnitId, str]]) -> Html:
    if not failures:
        return Html("")
    rows = "".join(
        render(
            "failure", model=text_html(unit.model), label=unit_label(unit), reason=text_html(why)
        )
        for unit, why in failures
    )
    return render("failures", count=f"{len(failures):,}", rows=Html(rows))


def _write_page(
    page: IO[str],
    title: str,
    summary: RunSummary,
    rows: IO[str],
    sections: IO[str],
    failed: list[tuple[UnitId, str]],
) -> None:
    """Write the ``page`` fragment, copying the table rows and the units' sections from their
    temporary files."""

    def write_rows() -> None:
        rows.seek(0)
        shutil.copyfileobj(rows, page)
        if not summary.explained:
            page.write(render("no-units", columns=str(len(_COLUMNS))))

    def write_sections() -> None:
        sections.seek(0)
        shutil.copyfileobj(sections, page)

    def write_details() -> None:
        if summary.explained:
            write_fragment(page.write, "details", {"sections": write_sections})

    write_fragment(
        page.write,
        "page",
        {"rows": write_rows, "details": write_details},
        csp=CSP,
        version=__version__,
        title=title,
        style=STYLE,
        heading=text_html(title),
        explained=f"{summary.explained:,}",
        noun="unit" if summary.explained == 1 else "units",
        failed=f"{summary.failed:,}",
        stats=_stats(summary),
        components=_components(summary),
        histogram=histogram_svg(summary.counts, summary.undefined, summary.mean),
        table_class=_table_class(summary),
        headers=Html(
            "".join(render("header", css=css, kind=kind, name=name) for name, css, kind in _COLUMNS)
        ),
        failures=_failures(failed),
        script=SCRIPT,
    )


def write_report(
    results: Iterable[ExplanationResult],
    out: str | os.PathLike[str],
    *,
    title: str = "neuron_explainer report",
    failures: Iterable[tuple[UnitId, str]] = (),
    max_excerpts: int | None = DEFAULT_MAX_EXCERPTS,
    simulation: SimulationStats | None = None,
) -> Path:
    """Write one self-contained static HTML page about a run.

    The page has an overview (counts, mean and median score, LLM usage and cost when any, how
    simulating went when measured, a histogram of the scores), a sortable table of every unit
    linking to the unit's section, one collapsed section per unit (explanation, every score,
    what produced it, how its simulations went and which excerpts failed, held-out excerpts
    shaded by true and simulated activation) and the failures with their reasons.
    It loads nothing from anywhere (inline CSS, script and SVG) and opens from ``file://``.

    ``results`` is read once, as a stream: each unit's section is written to a temporary
    file as it comes, so thousands of units need little memory. The page is written to a
    temporary file beside ``out`` and moved into place at the end.

    Args:
        results: the explained units, e.g. ``RunStore(path).results()``.
        out: the HTML file to write (its parent directories are created).
        title: the page title.
        failures: ``(unit, reason)`` for each unit that could not be explained.
        max_excerpts: the most held-out excerpts shown per unit, split between top and random
            excerpts; ``None`` shows them all.
        simulation: how the run's simulations went, failed units' included (e.g.
            ``RunStore(path).simulation()``); default: the sum of the results' own.

    Returns:
        The path of the written page.

    Raises:
        InvalidInputError: ``max_excerpts`` is negative.
        OSError: the page cannot be written.
    """
    if max_excerpts is not None and max_excerpts < 0:
        raise InvalidInputError(f"max_excerpts must be >= 0 or None, got {max_excerpts}")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = RunSummary()
    ids = UnitIds()
    with _open() as rows, _open() as sections:
        for result in results:
            uid = ids.new(result.unit)
            rows.write(_table_row(result, uid, summary.explained))
            write_unit_section(sections.write, result, uid, max_excerpts)
            summary.add(result)
        failed = [(unit, str(reason)) for unit, reason in failures]
        summary.failed = len(failed)
        if simulation is not None:
            summary.simulation = simulation
        part = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            with _open(part) as page:
                _write_page(page, title, summary, rows, sections, failed)
            os.replace(part, path)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
    return path
