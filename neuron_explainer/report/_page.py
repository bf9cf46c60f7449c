"""``write_report``: stream results into one self-contained HTML page."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable
from html import escape
from pathlib import Path
from typing import IO

from neuron_explainer._version import __version__
from neuron_explainer.errors import InvalidInputError
from neuron_explainer.records import UnitId
from neuron_explainer.report._assets import CSP, SCRIPT, STYLE
from neuron_explainer.report._neuron import UnitIds, unit_label, write_unit_section
from neuron_explainer.report._stats import RunSummary
from neuron_explainer.report._svg import histogram_svg
from neuron_explainer.report._tokens import text_html
from neuron_explainer.results import ExplanationResult, Score

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
    ("Tokens", "n c-usage", "num"),
    ("Cost (USD)", "n c-usage", "num"),
)


def _open(path: Path | None = None) -> IO[str]:
    """A text file that writes any string: lone surrogates become ``\\udXXX`` escapes."""
    if path is None:
        return tempfile.TemporaryFile("w+", encoding="utf-8", errors="backslashreplace")
    return open(path, "w", encoding="utf-8", errors="backslashreplace", newline="\n")


def _num_cell(score: Score, css: str = "n") -> str:
    if score.value is None:
        reason = escape(score.reason or "undefined")
        return (
            f'<td class="{css}" data-v="" title="{reason}"><span class="undef">undef.</span></td>'
        )
    return f'<td class="{css}" data-v="{score.value!r}">{score.value:.3f}</td>'


def _table_row(result: ExplanationResult, uid: str, index: int) -> str:
    unit, usage, scored = result.unit, result.usage, result.scored
    tokens = usage.prompt_tokens + usage.completion_tokens
    return (
        f'<tr data-i="{index}"><td class="c-model">{text_html(unit.model)}</td>'
        f'<td class="n" data-v="{unit.layer}">{unit.layer}</td>'
        f'<td class="n" data-v="{unit.index}"><a href="#{uid}" '
        f'title="{escape(unit_label(unit))}">{unit.index}</a></td>'
        f'<td class="ex">{text_html(result.explanation.text)}</td>'
        f"{_num_cell(scored.correlation)}{_num_cell(scored.random_correlation)}"
        f"{_num_cell(scored.rsquared)}"
        f'<td class="n c-usage" data-v="{tokens}">{tokens:,}</td>'
        f'<td class="n c-usage" data-v="{usage.cost_usd!r}">{usage.cost_usd:.4f}</td></tr>\n'
    )


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _counted(counter: Counter[str]) -> str:
    return ", ".join(f"{text_html(name)} ({n})" for name, n in counter.most_common())


def _overview(summary: RunSummary) -> str:
    failed = (
        f'<a href="#failures">{summary.failed:,}</a>' if summary.failed else f"{summary.failed:,}"
    )
    stats = [
        ("Explained", f"{summary.explained:,}"),
        ("Failed", failed),
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
    cells = "".join(f'<div><dt>{k}</dt><dd class="num">{v}</dd></div>' for k, v in stats)
    components = ""
    if summary.explained:
        components = (
            f'<p class="components">Models: {_counted(summary.models)}<br>'
            f"Explainers: {_counted(summary.explainers)}<br>"
            f"Simulators: {_counted(summary.simulators)}</p>"
        )
    return (
        '<section id="overview"><h2>Overview</h2><div class="overview">'
        f'<div class="card"><dl class="stats">{cells}</dl>{components}</div>'
        f'<div class="card">{histogram_svg(summary.counts, summary.undefined, summary.mean)}'
        "</div></div></section>\n"
    )


def _table_head(summary: RunSummary) -> str:
    classes = ["units"]
    if len(summary.models) <= 1:
        classes.append("one-model")
    if not summary.has_usage:
        classes.append("no-usage")
    heads = "".join(
        f'<th class="{css}" data-type="{kind}" aria-sort="none">'
        f'<button type="button">{name}</button></th>'
        for name, css, kind in _COLUMNS
    )
    return (
        '<section id="table"><h2>Units</h2><div class="tools">'
        '<input type="search" id="filter" placeholder="Filter by explanation, layer or neuron" '
        'aria-label="Filter units"></div><div class="tablewrap">'
        f'<table id="units" class="{" ".join(classes)}"><thead><tr>{heads}</tr></thead><tbody>\n'
    )


def _failures(failures: list[tuple[UnitId, str]]) -> str:
    if not failures:
        return ""
    rows = "".join(
        f"<tr><td>{text_html(unit.model)} · {unit_label(unit)}</td>"
        f'<td class="why">{text_html(reason)}</td></tr>\n'
        for unit, reason in failures
    )
    return (
        f'<section id="failures"><h2>Failures ({len(failures):,})</h2><div class="tablewrap">'
        '<table class="units failures"><thead><tr><th>Unit</th><th>Reason</th></tr></thead>'
        f"<tbody>\n{rows}</tbody></table></div></section>\n"
    )


def _head(title: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="neuron_explainer {escape(__version__)}">\n'
        '<link rel="icon" href="data:,">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style></head>\n"
        f'<body><main><h1 id="title">{text_html(title)}</h1>\n'
    )


def write_report(
    results: Iterable[ExplanationResult],
    out: str | os.PathLike[str],
    *,
    title: str = "neuron_explainer report",
    failures: Iterable[tuple[UnitId, str]] = (),
    max_excerpts: int | None = DEFAULT_MAX_EXCERPTS,
) -> Path:
    """Write one self-contained static HTML page about a run.

    The page has an overview (counts, mean and median score, LLM usage and cost when any, a
    histogram of the scores), a sortable table of every unit linking to the unit's section,
    one collapsed section per unit (explanation, every score, what produced it, held-out
    excerpts shaded by true and simulated activation) and the failures with their reasons.
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
        part = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            with _open(part) as page:
                page.write(_head(title))
                noun = "unit" if summary.explained == 1 else "units"
                page.write(
                    f'<p class="sub">{summary.explained:,} {noun} explained, {summary.failed:,} '
                    f"failed · neuron_explainer {escape(__version__)}</p>\n"
                    '<noscript><p class="sub">Turn on JavaScript to sort the table and to see '
                    "the shaded excerpts.</p></noscript>\n"
                )
                page.write(_overview(summary))
                page.write(_table_head(summary))
                rows.seek(0)
                shutil.copyfileobj(rows, page)
                if not summary.explained:
                    page.write(
                        f'<tr><td colspan="{len(_COLUMNS)}" class="none">No units.</td></tr>'
                    )
                page.write("</tbody></table></div></section>\n")
                if summary.explained:
                    page.write(
                        '<section id="details"><h2>Details</h2><div class="tools">'
                        '<button type="button" id="expand-all">Expand all</button>'
                        '<button type="button" id="collapse-all">Collapse all</button></div>\n'
                    )
                    sections.seek(0)
                    shutil.copyfileobj(sections, page)
                    page.write("</section>\n")
                page.write(_failures(failed))
                page.write(
                    "<footer>Made by neuron_explainer; self-contained, no network needed."
                    f"</footer></main><script>{SCRIPT}</script></body></html>\n"
                )
            os.replace(part, path)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
    return path
