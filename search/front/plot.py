"""The sweep's Pareto plot: every finished trial, with the front highlighted.

The figure is written as one self-contained HTML file (plotly.js embedded) because the MLflow
UI shows HTML artifacts in a sandboxed frame, often on machines with no internet access.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from search.front.pareto import pareto_front

FRONT_NAME = "Pareto front"
TRIALS_NAME = "trials"
KNEE_NAME = "knee (export's pick)"
TEACHER_NAME = "teacher (its own summaries, untrained)"


def pareto_figure(
    rows: Sequence[Mapping[str, Any]],
    x: str,
    y: str,
    x_mode: str,
    y_mode: str,
    title: str,
    knee: int | None = None,
    color: str | None = None,
    teacher: Mapping[str, Any] | None = None,
) -> go.Figure:
    """Plots every trial against two objectives and highlights their Pareto front.

    Each row becomes exactly one marker: front rows in the "Pareto front" trace (joined by a
    step line that traces the boundary of the region they dominate), the rest in the "trials"
    trace. Hovering a marker shows the trial id, both objectives and every other key of the
    row (layers kept, strategy, training settings), compactly formatted.

    Args:
        rows: One mapping per finished trial, holding at least "trial", `x` and `y`.
        x: Key of the objective on the horizontal axis, e.g. "params".
        y: Key of the objective on the vertical axis, e.g. "rougeL".
        x_mode: "max" or "min" for `x`.
        y_mode: "max" or "min" for `y`.
        title: Figure title.
        knee: Index in `rows` of the trial `shrink-sweep export` picks by default, drawn
            again as a large star in a third trace.
        color: Key of a third objective, shown as the markers' color (with a color bar).
        teacher: The base model scored on its own summaries, drawn as a reference point (not
            a trial: it is on no front) in a last trace, when it has both `x` and `y`.

    Returns:
        The figure, with the "trials" trace first, the "Pareto front" trace second, the
        knee's trace third if there is one, and the teacher's last if it is drawn.

    Raises:
        KeyError: If a row lacks `x` or `y`.
        ValueError: If a mode is neither "max" nor "min" or an objective value is NaN.
    """
    on_front = pareto_front([[row[x], row[y]] for row in rows], [x_mode, y_mode])
    front = [row for row, kept in zip(rows, on_front, strict=True) if kept]
    others = [row for row, kept in zip(rows, on_front, strict=True) if not kept]
    front.sort(key=lambda row: row[x])
    fig = go.Figure(
        [
            _scatter(others, x, y, name=TRIALS_NAME, color="#9aa5b1", symbol="circle"),
            _scatter(front, x, y, name=FRONT_NAME, color="#d62728", symbol="diamond"),
        ]
    )
    fig.data[1].update(mode="lines+markers", line={"shape": _step_shape(x_mode)})
    if knee is not None:
        star = _scatter([rows[knee]], x, y, name=KNEE_NAME, color="#ffbf00", symbol="star")
        star.marker.update(size=18, line={"color": "#333333", "width": 1})
        fig.add_trace(star)
    if color is not None:  # one color scale over every trace, its bar beside the front's
        values = [float(row[color]) for row in rows]
        scale = {"colorscale": "Viridis", "cmin": min(values), "cmax": max(values)}
        groups = [others, front] + ([[rows[knee]]] if knee is not None else [])
        for trace, group in zip(fig.data, groups, strict=True):
            trace.marker.update(color=[row[color] for row in group], **scale)
        fig.data[1].marker.update(colorbar={"title": color}, showscale=True)
    if teacher is not None and x in teacher and y in teacher:
        point = _scatter([teacher], x, y, name=TEACHER_NAME, color="#1f77b4", symbol="x")
        point.marker.update(size=14)
        fig.add_trace(point)
    fig.update_layout(
        title=title,
        xaxis_title=f"{x} ({_better(x_mode)})",
        yaxis_title=f"{y} ({_better(y_mode)})",
        hovermode="closest",
        template="plotly_white",
    )
    return fig


def write_pareto_html(fig: go.Figure, path: str | Path) -> Path:
    """Writes the figure as a standalone HTML page with plotly.js embedded.

    Args:
        fig: The figure, typically from `pareto_figure`.
        path: Where to write; missing parent directories are created.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Embedding the ~4.8 MB bundle, rather than a CDN link, lets it render with no internet.
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    return path


def _scatter(
    rows: Sequence[Mapping[str, Any]], x: str, y: str, name: str, color: str, symbol: str
) -> go.Scatter:
    """One marker trace for `rows`, with hover text describing each trial."""
    return go.Scatter(
        x=[row[x] for row in rows],
        y=[row[y] for row in rows],
        mode="markers",
        name=name,
        marker={"color": color, "symbol": symbol, "size": 9},
        hovertext=[_hover_text(row, x, y) for row in rows],
        hoverinfo="text",
    )


def _step_shape(x_mode: str) -> str:
    """Plotly line shape that draws the dominated region's boundary between front points."""
    # Front points are sorted by x. When smaller x is better, each point's y holds until the
    # next point's x ("hv"); when larger x is better, the next point's y holds from here ("vh").
    return "hv" if x_mode == "min" else "vh"


def _better(mode: str) -> str:
    return "higher is better" if mode == "max" else "lower is better"


def _hover_text(row: Mapping[str, Any], x: str, y: str) -> str:
    """Trial id, the two objectives, then every other key of the row, one per line."""
    # Trial ids stay verbatim: digit grouping would turn trial 1234 into "1,234".
    lines = [f"trial {row.get('trial', '?')}"]
    lines += [f"{key}: {_format_value(row[key])}" for key in (y, x)]
    lines += [
        f"{key}: {_format_value(value)}" for key, value in row.items() if key not in ("trial", x, y)
    ]
    return "<br>".join(lines)


def _format_value(value: Any) -> str:
    """Short text for a hover line: grouped integers, 4 significant digits, compact lists."""
    if isinstance(value, bool | np.bool_ | str):
        return str(value)
    if isinstance(value, Integral):
        return f"{int(value):,}"
    if isinstance(value, Real):
        return f"{float(value):.4g}"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}={_format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence | np.ndarray):
        return "[" + ",".join(_format_value(v) for v in value) + "]"
    return str(value)
