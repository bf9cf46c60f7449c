"""The score histogram as inline SVG (no script, no external resource)."""

from __future__ import annotations

from neuron_explainer.report._stats import bin_edges

__all__ = ["histogram_svg"]

_WIDTH, _HEIGHT = 720, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 40, 12, 14, 34
_UNDEF_GAP, _UNDEF_WIDTH = 18, 34


def _n(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def histogram_svg(counts: list[int], undefined: int, mean: float | None) -> str:
    """Bars of ``counts`` over ``[-1, 1]``, one more bar for the undefined scores.

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

    parts = [
        f'<svg class="hist" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" '
        'aria-labelledby="hist-title" xmlns="http://www.w3.org/2000/svg">'
        '<title id="hist-title">Distribution of scores (top-and-random correlation)</title>',
        f'<line class="axis" x1="{_LEFT}" y1="{base}" x2="{plot_right}" y2="{base}"/>',
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{base}"/>',
        f'<text class="tick" x="{_LEFT - 6}" y="{_TOP + 4}" text-anchor="end">{peak}</text>',
        f'<text class="tick" x="{_LEFT - 6}" y="{base}" text-anchor="end">0</text>',
    ]
    for tick in (-1.0, -0.5, 0.0, 0.5, 1.0):
        x = x_of(tick)
        parts.append(
            f'<line class="grid" x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{base}"/>'
            f'<text class="tick" x="{x:.1f}" y="{base + 16}" text-anchor="middle">'
            f"{_n(tick)}</text>"
        )
    for i, ((lo, hi), count) in enumerate(zip(bin_edges(len(counts)), counts, strict=True)):
        h = height_of(count)
        bracket = "]" if i == len(counts) - 1 else ")"
        plural = "unit" if count == 1 else "units"
        parts.append(
            f'<rect class="bar" x="{_LEFT + i * bar_width + 1:.1f}" y="{base - h:.1f}" '
            f'width="{bar_width - 2:.1f}" height="{h:.1f}" data-lo="{_n(lo)}" '
            f'data-hi="{_n(hi)}" data-count="{count}"><title>score in [{_n(lo)}, {_n(hi)}'
            f"{bracket}: {count} {plural}</title></rect>"
        )
    ux = plot_right + _UNDEF_GAP
    h = height_of(undefined)
    parts.append(
        f'<rect class="bar undef" x="{ux}" y="{base - h:.1f}" width="{_UNDEF_WIDTH}" '
        f'height="{h:.1f}" data-undefined="" data-count="{undefined}"><title>undefined score: '
        f"{undefined} {'unit' if undefined == 1 else 'units'}</title></rect>"
        f'<text class="tick" x="{ux + _UNDEF_WIDTH / 2}" y="{base + 16}" '
        'text-anchor="middle">undef.</text>'
    )
    if mean is not None:
        x = x_of(max(-1.0, min(1.0, mean)))
        left = x > plot_right - 90  # label on the line's left near the right edge
        parts.append(
            f'<line class="mean" x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{base}"/>'
            f'<text class="meanlabel" x="{x - 4 if left else x + 4:.1f}" y="{_TOP + 10}" '
            f'text-anchor="{"end" if left else "start"}">mean {mean:.3f}</text>'
        )
    parts.append(
        f'<text class="axislabel" x="{_LEFT + plot_width / 2}" y="{_HEIGHT - 2}" '
        'text-anchor="middle">score (top-and-random correlation)</text></svg>'
    )
    return "".join(parts)
