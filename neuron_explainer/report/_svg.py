"""The score histogram as inline SVG (no script, no external resource), from the fragments of
``templates/histogram.html``."""

from __future__ import annotations

from neuron_explainer.report._stats import bin_edges
from neuron_explainer.report._templates import Html, render

__all__ = ["histogram_svg"]

_WIDTH, _HEIGHT = 720, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 40, 12, 14, 34
_UNDEF_GAP, _UNDEF_WIDTH = 18, 34


def _n(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _units(count: int) -> str:
    return "unit" if count == 1 else "units"


def histogram_svg(
    counts: list[int],
    undefined: int,
    mean: float | None,
    measure: str = "top-and-random correlation",
) -> Html:
    """Bars of ``counts`` over ``[-1, 1]``, one more bar for the undefined scores; ``measure``
    says what the scores are (in the title and the axis label).

    Every bar carries ``data-count`` (and ``data-lo``/``data-hi``, or ``data-undefined``) and a
    ``<title>`` tooltip; bins with no unit are drawn with zero height.
    """
    plot_right = _WIDTH - _RIGHT - _UNDEF_GAP - _UNDEF_WIDTH
    plot_width = plot_right - _LEFT
    plot_height = _HEIGHT - _TOP - _BOTTOM
    base = _TOP + plot_height
    peak = max([*counts, undefined, 1])
    bar_width = plot_width / len(counts)

    def x_of(value: float) -> float:
        return _LEFT + (value + 1) / 2 * plot_width

    def height_of(count: int) -> float:
        return count / peak * plot_height

    frame = {"top": str(_TOP), "base": str(base), "tick_y": str(base + 16)}
    grid = [
        render("grid", x=f"{x_of(tick):.1f}", label=_n(tick), **frame)
        for tick in (-1.0, -0.5, 0.0, 0.5, 1.0)
    ]
    bars = [
        render(
            "bar",
            x=f"{_LEFT + i * bar_width + 1:.1f}",
            y=f"{base - height_of(count):.1f}",
            width=f"{bar_width - 2:.1f}",
            height=f"{height_of(count):.1f}",
            lo=_n(lo),
            hi=_n(hi),
            close="]" if i == len(counts) - 1 else ")",
            count=str(count),
            noun=_units(count),
        )
        for i, ((lo, hi), count) in enumerate(zip(bin_edges(len(counts)), counts, strict=True))
    ]
    marked = Html("")
    if mean is not None:
        x = x_of(max(-1.0, min(1.0, mean)))
        left = x > plot_right - 90  # label on the line's left near the right edge
        marked = render(
            "mean",
            x=f"{x:.1f}",
            label_x=f"{x - 4 if left else x + 4:.1f}",
            label_y=str(_TOP + 10),
            anchor="end" if left else "start",
            mean=f"{mean:.3f}",
            **frame,
        )
    ux = plot_right + _UNDEF_GAP
    return render(
        "histogram",
        width=str(_WIDTH),
        height=str(_HEIGHT),
        left=str(_LEFT),
        right=str(plot_right),
        label_x=str(_LEFT - 6),
        peak_y=str(_TOP + 4),
        peak=str(peak),
        grid=Html("".join(grid)),
        bars=Html("".join(bars)),
        undef_x=str(ux),
        undef_y=f"{base - height_of(undefined):.1f}",
        undef_width=str(_UNDEF_WIDTH),
        undef_height=f"{height_of(undefined):.1f}",
        undefined=str(undefined),
        undef_noun=_units(undefined),
        undef_label_x=str(ux + _UNDEF_WIDTH / 2),
        mean=marked,
        measure=measure,
        axis_x=str(_LEFT + plot_width / 2),
        axis_y=str(_HEIGHT - 2),
        **frame,
    )
