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
from neuron_explainer.report._stats import (
    SIMULATION,
    RunSummary,
    simulation_stats,
)
from neuron_explainer.report._svg import histogram_svg
from neuron_explainer.report._table import row_html, row_line, table_columns
from neuron_explainer.report._templates import Html, render, write_fragment
from neuron_explainer.report._tokens import text_html
from neuron_explainer.results import ExplanationResult, SimulationStats

__all__ = ["DEFAULT_MAX_EXCERPTS", "DEFAULT_MAX_JUDGEMENTS", "write_report"]

DEFAULT_MAX_EXCERPTS = 6
"""Held-out excerpts shown per unit by default (half top, half random)."""

DEFAULT_MAX_JUDGEMENTS = 10
"""Judged excerpts shown per classification score by default (wrong and failed ones first)."""


def _open(path: Path | None = None) -> IO[str]:
    """A text file that writes any string: lone surrogates become ``\\udXXX`` escapes."""
    if path is None:
        return tempfile.TemporaryFile("w+", encoding="utf-8", errors="backslashreplace")
    return open(path, "w", encoding="utf-8", errors="backslashreplace", newline="\n")


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _counted(counter: Counter[str]) -> Html:
    return Html(", ".join(f"{text_html(name)} ({n})" for name, n in counter.most_common()))


def _score_stats(summary: RunSummary) -> list[tuple[str, str]]:
    """The headline scores' figures (what they measure first, unless the simulation's
    correlation), the random-only mean when some unit was simulated, and the mean of every
    scorer that is not every unit's headline."""
    stats: list[tuple[str, str]] = []
    if summary.headlines and summary.headline_names.keys() != {SIMULATION}:
        stats.append(("Headline score", render("stat-text", text=summary.headline)))
    stats += [
        ("Mean score", _fmt(summary.mean)),
        ("Median score", _fmt(summary.median)),
        ("Undefined score", f"{summary.undefined:,}"),
    ]
    if summary.simulated or not summary.explained:
        stats.append(("Mean random-only", _fmt(summary.random_mean)))
    names = summary.headline_names
    headline = next(iter(names)) if len(names) == 1 else None
    stats += [
        (f"Mean {name}", _fmt(summary.scorer_mean(name)))
        for name in summary.scorers
        if name != headline
    ]
    return stats


def _stats(summary: RunSummary) -> Html:
    """The overview's figures, each a ``stat`` fragment."""
    failed = f"{summary.failed:,}"
    stats = [
        ("Explained", f"{summary.explained:,}"),
        ("Failed", render("failed-link", count=failed) if summary.failed else failed),
        *_score_stats(summary),
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
    scorers = Html("")
    if summary.other_scorers:
        scorers = render("components-scorers", scorers=_counted(summary.other_scorers))
    return render(
        "components",
        models=_counted(summary.models),
        explainers=_counted(summary.explainers),
        simulators=_counted(summary.simulators) if summary.simulators else Html("none"),
        scorers=scorers,
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

    names = summary.score_names
    columns = table_columns(names)

    def write_rows() -> None:
        rows.seek(0)
        for line in rows:
            page.write(row_html(line, names))
        if not summary.explained:
            page.write(render("no-units", columns=str(len(columns))))

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
        histogram=histogram_svg(summary.counts, summary.undefined, summary.mean, summary.headline),
        table_class=_table_class(summary),
        headers=Html(
            "".join(render("header", css=css, kind=kind, name=name) for name, css, kind in columns)
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
    max_judgements: int | None = DEFAULT_MAX_JUDGEMENTS,
) -> Path:
    """Write one self-contained static HTML page about a run.

    The page has an overview (counts, mean and median headline score, LLM usage and cost when
    any, how simulating went when measured, a histogram of the headline scores), a sortable
    table of every unit linking to the unit's section (a column per scorer, blank where a unit
    has no such score), one collapsed section per unit (explanation, every score, what
    produced it, how its simulations went and which excerpts failed, held-out excerpts shaded
    by true and simulated activation when it was simulated, each classification scorer's
    metrics and judged excerpts, each plugin scorer's details) and the failures with their
    reasons. It loads nothing from anywhere (inline CSS, script and SVG) and opens from
    ``file://``.

    The headline score is each unit's first scorer's (`ExplanationResult.score`); when they
    are not all the simulation's correlation, the overview says what they are, and gives the
    mean of every other scorer too (docs/report.md).

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
        max_judgements: the most judged excerpts shown per classification score (default
            10), the wrongly judged first, then the failed ones, then the right ones; ``None``
            shows them all.

    Raises:
        InvalidInputError: ``max_excerpts`` or ``max_judgements`` is negative.
        OSError: the page cannot be written.
    """
    for name, limit in (("max_excerpts", max_excerpts), ("max_judgements", max_judgements)):
        if limit is not None and limit < 0:
            raise InvalidInputError(f"{name} must be >= 0 or None, got {limit}")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = RunSummary()
    ids = UnitIds()
    with _open() as rows, _open() as sections:
        for result in results:
            uid = ids.new(result.unit)
            rows.write(row_line(result, uid, summary.explained))
            write_unit_section(sections.write, result, uid, max_excerpts, max_judgements)
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
