"""Line charts as inline SVG: the report page must open anywhere with nothing fetched (no CDN, no
script) and carry no dependency beyond the standard library, so the few charts it needs are drawn here
rather than with a plotting library."""

from __future__ import annotations

from html import escape

#: Colour-blind-safe palette (Okabe & Ito, 2008).
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 460, 250, 56, 12, 28, 40


def _label(value: float) -> str:
    return f"{value:.3g}"


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    return [low + (high - low) * i / count for i in range(count + 1)]


def line_chart(title: str, series: dict[str, list[tuple[float, float]]]) -> str:
    """An SVG element: one polyline (with dots) per named series, axes with min/max ticks, a legend."""
    points = [p for values in series.values() for p in values]
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys)
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def at(x: float, y: float) -> tuple[float, float]:
        return LEFT + (x - x0) / (x1 - x0) * plot_w, TOP + (1 - (y - y0) / (y1 - y0)) * plot_h

    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT + 18 * len(series)}" '
            f'role="img" aria-label="{escape(title)}" font-family="sans-serif" font-size="11">'
        ),
        f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>',
    ]
    for y in _ticks(y0, y1):
        _, py = at(x0, y)
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{py:.1f}" y2="{py:.1f}" stroke="#eee"/>'
            f'<text x="{LEFT - 4}" y="{py + 4:.1f}" text-anchor="end">{_label(y)}</text>'
        )
    for x in _ticks(x0, x1):
        px, _ = at(x, y0)
        parts.append(f'<text x="{px:.1f}" y="{TOP + plot_h + 14}" text-anchor="middle">{_label(x)}</text>')
    parts.append(f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h + 30}" text-anchor="middle">step</text>')
    for index, (name, values) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        coords = [at(x, y) for x, y in values]
        if len(coords) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
        if len(coords) <= 30:
            parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>' for x, y in coords]
        legend_y = HEIGHT + 18 * index + 4
        parts.append(
            f'<rect x="{LEFT}" y="{legend_y}" width="12" height="4" fill="{colour}"/>'
            f'<text x="{LEFT + 18}" y="{legend_y + 6}">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
