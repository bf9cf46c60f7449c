"""The units table: its columns, which depend on the scorers met, and its rows.

A row is written as each result comes, before every scorer of the run is known, so it is kept
as one line of JSON (`row_line`: the row's values, already escaped, and its score cells by
scorer) and made into the ``row`` fragment of ``templates/page.html`` once the columns are
known (`row_html`), a blank cell standing for each score the unit does not have.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from html import escape

from neuron_explainer.report._neuron import unit_label
from neuron_explainer.report._stats import SIMULATION, column_label
from neuron_explainer.report._templates import Html, render
from neuron_explainer.report._tokens import text_html
from neuron_explainer.results import (
    ClassificationScore,
    ExplanationResult,
    Score,
    ScoredSimulation,
    ScorerScore,
    Sensitivity,
)

__all__ = ["Column", "row_html", "row_line", "table_columns"]

Column = tuple[str, str, str]
"""A column: (header, CSS class, sort type)."""

_BEFORE: tuple[Column, ...] = (
    ("Model", "c-model", "text"),
    ("Layer", "n", "num"),
    ("Neuron", "n", "num"),
    ("Explanation", "", "text"),
)
_AFTER: tuple[Column, ...] = (
    ("Tokens", "n c-usage", "num"),
    ("Cost (USD)", "n c-usage", "num"),
)
_SIMULATION_AFTER: tuple[Column, ...] = (
    ("Random-only", "n", "num"),
    ("R²", "n", "num"),
    ("Sensitivity", "n c-sens", "num"),
)


def _score_columns(names: Sequence[str]) -> list[Column]:
    """The simulation scorer's four columns (its headline named "Score" when it is the only
    scorer, as in every report before other scorers existed), one column for any other."""
    columns: list[Column] = []
    for name in names:
        if name == SIMULATION:
            header = "Score" if list(names) == [SIMULATION] else "Correlation"
            columns += [(header, "n", "num"), *_SIMULATION_AFTER]
        else:
            columns.append((column_label(name), "n", "num"))
    return columns


def table_columns(names: Sequence[str]) -> list[Column]:
    """Every column of a table whose units were scored by the scorers ``names``."""
    return [*_BEFORE, *_score_columns(names), *_AFTER]


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


def _simulation_cells(scored: ScoredSimulation) -> Html:
    return Html(
        _num_cell(scored.correlation)
        + _num_cell(scored.random_correlation)
        + _num_cell(scored.rsquared)
        + _sensitivity_cell(scored.sensitivity)
    )


def _score_cell(score: ScorerScore) -> Html:
    """A score's cell: its value; a classification score's with its interval on hover."""
    value = score.value.value
    interval = score.headline_score.interval if isinstance(score, ClassificationScore) else None
    if value is None or interval is None:
        return _num_cell(score.value)
    return render(
        "interval-cell",
        css="n",
        value=repr(value),
        shown=f"{value:.3f}",
        interval=f"{interval.confidence:.0%} interval [{interval.low:.3f}, {interval.high:.3f}]",
    )


def _blank_cells(name: str) -> Html:
    """The cells of a scorer the unit was not scored by: blank (–), never zero."""
    return Html("".join(render("blank-cell", css=css) for _, css, _ in _score_columns([name])))


def _escaped(values: Mapping[str, str]) -> dict[str, str]:
    """``values`` as `render` substitutes them: plain strings escaped, markup as it is."""
    return {k: v if isinstance(v, Html) else escape(v) for k, v in values.items()}


def row_line(result: ExplanationResult, uid: str, index: int) -> str:
    """One unit's row as a line of JSON, for `row_html` once the columns are known."""
    unit, usage = result.unit, result.usage
    tokens = usage.prompt_tokens + usage.completion_tokens
    values = {
        "index": str(index),
        "model": text_html(unit.model),
        "layer": str(unit.layer),
        "neuron": str(unit.index),
        "uid": uid,
        "label": unit_label(unit),
        "explanation": text_html(result.explanation.text),
        "tokens": str(tokens),
        "tokens_shown": f"{tokens:,}",
        "cost": repr(usage.cost_usd),
        "cost_shown": f"{usage.cost_usd:.4f}",
    }
    cells = {
        name: _simulation_cells(result.scored)
        if name == SIMULATION and result.scored is not None
        else _score_cell(entry)
        for name, entry in result.scores.items()
    }
    return json.dumps({"values": _escaped(values), "scores": cells}) + "\n"


def row_html(line: str, names: Sequence[str]) -> Html:
    """The ``row`` fragment of a `row_line`, with a cell for each of scorers ``names``."""
    data = json.loads(line)
    cells = data["scores"]
    scores = "".join(cells[name] if name in cells else _blank_cells(name) for name in names)
    values = {key: Html(value) for key, value in data["values"].items()}
    return render("row", scores=Html(scores), **values)
