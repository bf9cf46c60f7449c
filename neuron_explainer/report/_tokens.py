"""Text and tokens made safe for the page.

* `text_html`: free text (explanations, reasons) HTML-escaped, invisible characters shown.
* `excerpts_json` (and `judged_json`, the excerpts a classification scorer judged): a unit's
  excerpts as JSON that can sit inside a ``<script>`` data block: no
  ``<``, ``>`` or ``&`` appears in it (they are written ``\\u003c``...), so no token can end
  the block. The page's script turns it into shaded tokens with ``textContent`` only (never
  ``innerHTML``), showing a newline as ``↵``, a tab as ``⇥``, a carriage return as ``␍`` and
  other control, format (bidi overrides such as U+202E) and separator characters as
  ``\\uXXXX``, the same characters `text_html` shows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from typing import NamedTuple

from neuron_explainer.report._templates import Html, render

__all__ = ["LEVELS", "ExcerptRow", "JudgedRow", "excerpts_json", "judged_json", "text_html"]

LEVELS = 10
"""Shading steps: a value is shown at one of ``LEVELS`` intensities (0 = unshaded)."""

_SYMBOLS = {"\n": "↵", "\t": "⇥", "\r": "␍"}


def _visible(char: str) -> str:
    symbol = _SYMBOLS.get(char)
    if symbol is None:
        code = ord(char)
        symbol = (
            f"\\x{code:02x}"
            if code < 0x100
            else f"\\u{code:04x}"
            if code < 0x10000
            else (f"\\U{code:08x}")
        )
    return render("marker", symbol=symbol)


def text_html(text: str) -> Html:
    """Free text (an explanation, a reason) as HTML: escaped, with newlines and tabs kept but
    other control and format characters (bidi overrides such as U+202E) shown as ``\\uXXXX``,
    so they cannot reorder or hide what is displayed."""
    if text.isprintable():
        return Html(escape(text))
    return Html(
        "".join(
            escape(char) if char in " \n\t" or char.isprintable() else _visible(char)
            for char in text
        )
    )


_SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def _numbers(values: Sequence[float]) -> str:
    # 3 significant digits: enough for shading and tooltips, a third of the bytes of repr().
    return "[" + ",".join(f"{v:.3g}" for v in values) + "]"


class ExcerptRow(NamedTuple):
    """One excerpt as the page's script draws it."""

    tokens: Sequence[str]
    activations: Sequence[float]
    simulated: Sequence[float]
    calibrated: Sequence[float]
    sim_scale: float
    """The simulated value drawn at full shade (10 on the 0-10 scale)."""
    sim_unit: str
    """Shown after simulated values in tooltips (``"/10"`` or ``""``)."""


def _json_string_list(tokens: Sequence[str]) -> str:
    text = json.dumps(list(tokens), ensure_ascii=False, separators=(",", ":"))
    if text.isprintable():
        return text
    # Keep the page source free of invisible characters too (bidi overrides, U+2028...).
    return "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in text)


def excerpts_json(scale: float, rows: Sequence[ExcerptRow]) -> str:
    """``{"scale": S, "rows": [[tokens, acts, sims, cals, sim_scale, sim_unit], ...]}`` as
    script-safe JSON; ``scale`` is the true activation drawn at full shade. Numbers are written
    with 3 significant digits."""
    parts = [
        f"[{_json_string_list(row.tokens)},"
        f"{_numbers(row.activations)},{_numbers(row.simulated)},{_numbers(row.calibrated)},"
        f"{row.sim_scale:.6g},{json.dumps(row.sim_unit)}]"
        for row in rows
    ]
    return f'{{"scale":{scale:.6g},"rows":[{",".join(parts)}]}}'.translate(_SCRIPT_SAFE)


class JudgedRow(NamedTuple):
    """One judged excerpt as the page's script draws it: its true activations, and the
    positions shown highlighted to the judge (fuzzing; none for detection)."""

    tokens: Sequence[str]
    activations: Sequence[float]
    highlighted: Sequence[int]


def judged_json(scale: float, rows: Sequence[JudgedRow]) -> str:
    """``{"scale": S, "rows": [[tokens, acts, highlighted], ...]}`` as script-safe JSON, like
    `excerpts_json`."""
    parts = [
        f"[{_json_string_list(row.tokens)},{_numbers(row.activations)},"
        f"[{','.join(str(int(i)) for i in row.highlighted)}]]"
        for row in rows
    ]
    return f'{{"scale":{scale:.6g},"rows":[{",".join(parts)}]}}'.translate(_SCRIPT_SAFE)
