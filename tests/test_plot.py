"""The Pareto figure: one marker per trial, the front highlighted, a self-contained HTML file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from search.front.plot import (
    FRONT_NAME,
    KNEE_NAME,
    TEACHER_NAME,
    TRIALS_NAME,
    pareto_figure,
    write_pareto_html,
)

ROWS = [
    {
        "trial": 11,
        "rougeL": 0.20,
        "params": 60_000_000,
        "encoder_layers": [0, 2, 5],
        "decoder_layers": [0, 5],
        "strategy": "spread",
        "lr": 3e-4,
    },
    {
        "trial": 12,
        "rougeL": 0.30,
        "params": 100_000_000,
        "encoder_layers": [0, 1, 2, 3, 4, 5],
        "decoder_layers": [0, 1, 2, 3, 4, 5],
        "strategy": "sft",
        "lr": 1e-4,
    },
    {
        "trial": 13,
        "rougeL": 0.10,
        "params": 80_000_000,
        "encoder_layers": np.array([5]),
        "decoder_layers": [5],
        "strategy": "last",
        "lr": 3e-4,
    },
    {
        "trial": 14,
        "rougeL": 0.15,
        "params": 30_000_000,
        "encoder_layers": [0],
        "decoder_layers": [0],
        "strategy": "first",
        "lr": 3e-4,
    },
    {
        "trial": 15,
        "rougeL": 0.12,
        "params": 90_000_000,
        "encoder_layers": [1, 3],
        "decoder_layers": [2],
        "strategy": "alternate",
        "lr": 1e-3,
    },
]


def _figure():
    return pareto_figure(ROWS, "params", "rougeL", "min", "max", title="t5-small shrink sweep")


def _trace(fig, name: str):
    (trace,) = [trace for trace in fig.data if trace.name == name]
    return trace


def test_one_marker_per_trial_split_between_front_and_others() -> None:
    fig = _figure()
    front, others = _trace(fig, FRONT_NAME), _trace(fig, TRIALS_NAME)
    assert len(front.x) + len(others.x) == len(ROWS)
    # Trials 14, 11 and 12 are on the front, sorted by parameter count for the step line.
    assert list(front.x) == [30_000_000, 60_000_000, 100_000_000]
    assert list(front.y) == [0.15, 0.20, 0.30]
    assert sorted(others.x) == [80_000_000, 90_000_000]
    assert front.line.shape == "hv"
    assert "lines" in front.mode
    assert others.mode == "markers"


def test_step_shape_follows_the_x_direction() -> None:
    fig = pareto_figure(ROWS, "rougeL", "params", "max", "min", title="swapped")
    assert _trace(fig, FRONT_NAME).line.shape == "vh"


def test_hover_text_describes_the_trial() -> None:
    front = _trace(_figure(), FRONT_NAME)
    text = front.hovertext[1]
    assert text.startswith("trial 11<br>")
    assert "encoder_layers: [0,2,5]" in text
    assert "decoder_layers: [0,5]" in text
    assert "strategy: spread" in text
    assert "lr: 0.0003" in text
    assert "params: 60,000,000" in text
    others = _trace(_figure(), TRIALS_NAME)
    assert any("encoder_layers: [5]" in text for text in others.hovertext)


def test_single_trial_is_the_whole_front() -> None:
    fig = pareto_figure(ROWS[:1], "params", "rougeL", "min", "max", title="one")
    assert len(_trace(fig, FRONT_NAME).x) == 1
    assert len(_trace(fig, TRIALS_NAME).x) == 0


def test_missing_objective_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        pareto_figure(ROWS, "latency_ms", "rougeL", "min", "max", title="x")


def test_html_embeds_plotly_js_and_trials(tmp_path: Path) -> None:
    path = write_pareto_html(_figure(), tmp_path / "plots" / "pareto.html")
    assert path == tmp_path / "plots" / "pareto.html"
    assert path.stat().st_size > 1_000_000
    html = path.read_text(encoding="utf-8")
    assert html.lower().startswith("<!doctype html>")  # full_html: a page, not a fragment
    assert "* plotly.js v" in html
    assert "cdn.plot.ly" not in html.split("* plotly.js v")[0]
    assert FRONT_NAME in html
    for row in ROWS:
        assert f"trial {row['trial']}" in html


def test_the_knee_is_drawn_as_its_own_star() -> None:
    fig = pareto_figure(ROWS, "params", "rougeL", "min", "max", title="t", knee=1)
    knee = _trace(fig, KNEE_NAME)
    assert (list(knee.x), list(knee.y)) == ([ROWS[1]["params"]], [ROWS[1]["rougeL"]])
    assert knee.marker.symbol == "star"
    assert knee.hovertext[0].startswith(f"trial {ROWS[1]['trial']}<br>")


def test_a_third_objective_colors_every_marker_on_one_scale() -> None:
    rows = [{**row, "latency_ms": 10.0 * i} for i, row in enumerate(ROWS)]
    fig = pareto_figure(
        rows, "params", "rougeL", "min", "max", title="t", knee=0, color="latency_ms"
    )
    by_x = {x: c for trace in fig.data for x, c in zip(trace.x, trace.marker.color, strict=True)}
    assert by_x == {row["params"]: row["latency_ms"] for row in rows}
    assert {(t.marker.cmin, t.marker.cmax) for t in fig.data} == {(0.0, 40.0)}
    assert _trace(fig, FRONT_NAME).marker.colorbar.title.text == "latency_ms"


def test_the_teacher_is_a_reference_point_on_no_front() -> None:
    """The base model's own summaries, at its size: drawn apart, moving no trial's marker."""
    teacher = {"trial": "teacher (untrained)", "params": 100_000_000, "rougeL": 0.35}
    fig = pareto_figure(ROWS, "params", "rougeL", "min", "max", title="t", teacher=teacher)
    point = _trace(fig, TEACHER_NAME)
    assert (list(point.x), list(point.y)) == ([100_000_000], [0.35])
    assert fig.data[-1] is point and point.hovertext[0].startswith("trial teacher (untrained)")
    # The front is the trials' own: trial 12 (0.30 at the same size) stays on it.
    assert 100_000_000 in list(_trace(fig, FRONT_NAME).x)
    # Not drawn when the plot's axes are metrics it was not scored on.
    fig = pareto_figure(ROWS, "params", "lr", "min", "max", title="t", teacher=teacher)
    assert TEACHER_NAME not in {trace.name for trace in fig.data}
