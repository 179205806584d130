"""Small server-rendered SVG charts: no script, readable without colour, with a text title."""

from __future__ import annotations

import math
from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 76, 16, 16, 40
COLOURS = ("#1d4ed8", "#b45309", "#047857", "#7c3aed")  # all ≥ 4.5:1 on white


def _scale_max(values: Sequence[float | None], *, counts: bool = False) -> float:
    """A round axis maximum at or above every value, split by four grid lines."""
    top = max([1, *(v for v in values if v is not None)])
    if counts:  # whole numbers on every grid line
        return float(4 * math.ceil(top / 4))
    magnitude = 10 ** math.floor(math.log10(top))
    return float(next(s * magnitude for s in (1, 2, 5, 10) if s * magnitude >= top))


def _frame(title: str, top: float, unit: str, labels: Sequence[str],
           low: float = 0.0) -> list[str]:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = [f'<title>{escape(title)}</title>']
    for i in range(5):
        y = TOP + plot_h - plot_h * i / 4
        value = low + (top - low) * i / 4
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'class="grid"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{value:g}{escape(unit)}</text>')
    every = math.ceil(len(labels) / 7)
    for i, label in enumerate(labels):
        if i % every == 0:
            x = LEFT + plot_w * (i + 0.5) / max(len(labels), 1)
            parts.append(f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 18}" '
                         f'text-anchor="middle">{escape(label)}</text>')
    return parts


def _svg(title: str, parts: list[str]) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        + "".join(parts) + "</svg>"
    )


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float], *,
              unit: str = "") -> Markup:
    """An SVG bar chart, one bar per label, on an axis of whole numbers.

    `labels` and `values` must be as long as each other (ValueError otherwise).
    """
    top = _scale_max(values, counts=True)
    parts = _frame(title, top, unit, labels)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(labels), 1)
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = plot_h * value / top
        parts.append(
            f'<rect x="{LEFT + slot * i + slot * 0.15:.1f}" y="{TOP + plot_h - h:.1f}" '
            f'width="{slot * 0.7:.1f}" height="{h:.1f}" fill="{COLOURS[0]}">'
            f'<title>{escape(label)}: {value:g}{escape(unit)}</title></rect>'
        )
    return _svg(title, parts)


def line_chart(title: str, labels: Sequence[str], series: dict[str, Sequence[float | None]],
               *, unit: str = "", bounds: tuple[float, float] | None = None) -> Markup:
    """An SVG line chart, one line per series, with a legend of the series' names.

    Each series has one value per label (ValueError otherwise). A None value gets no
    point, and the line joins the points either side of it. `bounds` fixes the axis
    (values outside it are clamped); by default it runs from 0 to a round maximum.
    """
    low, top = bounds or (0.0, _scale_max([v for values in series.values() for v in values]))
    parts = _frame(title, top, unit, labels, low)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    for n, (name, values) in enumerate(series.items()):
        colour, dash = COLOURS[n % len(COLOURS)], ("", ' stroke-dasharray="6 4"')[n % 2]
        points = [
            (LEFT + plot_w * (i + 0.5) / len(labels),
             TOP + plot_h - plot_h * (min(max(v, low), top) - low) / (top - low), label, v)
            for i, (label, v) in enumerate(zip(labels, values, strict=True)) if v is not None
        ]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                         f'stroke-width="2"{dash}/>')
        for x, y, label, v in points:
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}">'
                         f'<title>{escape(name)} {escape(label)}: {v:g}{escape(unit)}</title>'
                         f'</circle>')
        parts.append(f'<rect x="{LEFT + 8 + 110 * n}" y="{TOP + 2}" width="12" height="4" '
                     f'fill="{colour}"/><text x="{LEFT + 24 + 110 * n}" y="{TOP + 8}">'
                     f'{escape(name)}</text>')
    return _svg(title, parts)


def hbar_chart(title: str, items: Sequence[tuple[str, int]]) -> Markup:
    """Horizontal bars with their counts written out: for categories like outcomes."""
    row, label_w = 26, 200
    height = max(row * len(items) + 8, 40)
    top = max((count for _, count in items), default=1) or 1
    parts = [f'<title>{escape(title)}</title>']
    for i, (label, count) in enumerate(items):
        y = 4 + row * i
        w = (WIDTH - label_w - 60) * count / top
        parts.append(f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end">'
                     f'{escape(label)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="16" '
                     f'fill="{COLOURS[2]}"/>')
        parts.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 16}">{count}</text>')
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        + "".join(parts) + "</svg>"
    )
