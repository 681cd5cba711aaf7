"""The front in the sweep's record: the finished, feasible trial rows read from MLflow, and the
front recomputed and logged to the sweep's parent run (hypervolume, front size, pareto.csv,
pareto.html) as each trial ends."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from search.front.pareto import hypervolume, knee
from search.front.rows import (
    drop_dominated_weights,
    front_rows,
    objective_pairs,
    plot_rows,
    plot_title,
    reference_point,
    scored_rows,
    write_front_csv,
)
from search.record.store import TEACHER_PREFIX
from search.record.tracker import Tracker
from search.space.config import SweepConfig
from search.space.constraints import feasible


def teacher_metrics(score: Any) -> dict[str, float]:
    """The sweep run's metrics for the base model's own summaries of the evaluation split
    (a `trainables.teacher.TeacherScore`)."""
    metrics = {f"{TEACHER_PREFIX}{name}": value for name, value in score.rouge.items()}
    metrics[f"{TEACHER_PREFIX}words"] = score.words
    metrics["reference_words"] = score.reference_words
    return metrics


def teacher_row(tracker: Tracker, parent_params: int) -> dict[str, Any] | None:
    """The teacher as the plot shows it, from the sweep run's metrics: the base model's
    parameters and its own summaries' scores; None if the sweep did not score it."""
    metrics = tracker.sweep_metrics()
    scores = {
        name.removeprefix(TEACHER_PREFIX): value
        for name, value in metrics.items()
        if name.startswith(TEACHER_PREFIX)
    }
    if not scores:
        return None
    return {"trial": "teacher (untrained)", "params": float(parent_params), **scores}


def candidate_rows(tracker: Tracker, config: SweepConfig) -> list[dict[str, Any]]:
    """The sweep's finished trials that keep every constraint: what the front, the plot and
    `export` choose from."""
    return [r for r in tracker.trials.rows("finished") if feasible(config.constraints, r)]


def update_front(
    tracker: Tracker, config: SweepConfig, parent_params: int
) -> tuple[list[dict[str, Any]], float]:
    """Recompute the front over every finished trial and log it to the sweep's parent run.

    Logs the hypervolume and front size (at the step of the finished trials' count) and
    pareto.csv and pareto.html; with `keep_weights: pareto`, deletes the dominated trials'
    weights.

    Returns:
        All finished trial rows (each with `on_front`) and the front's hypervolume.
    """
    objectives = objective_pairs(config)
    metrics = [metric for metric, _ in objectives]
    rows = scored_rows(candidate_rows(tracker, config), metrics)
    if not rows:
        return [], 0.0
    front = front_rows(rows, objectives)
    on_front = {row["run_id"] for row in front}
    for row in rows:
        row["on_front"] = row["run_id"] in on_front
    values = [[row[m] for m in metrics] for row in front]
    modes = [mode for _, mode in objectives]
    hv = hypervolume(values, modes, reference_point(config, parent_params))
    tracker.log_sweep_metrics({"hypervolume": hv, "front_size": len(front)}, step=len(rows))
    _log_front_artifacts(tracker, config, rows, hv, teacher_row(tracker, parent_params))
    if config.keep_weights == "pareto":
        drop_dominated_weights(rows)
    return rows, hv


def _log_front_artifacts(
    tracker: Tracker,
    config: SweepConfig,
    rows: list[dict[str, Any]],
    hv: float,
    teacher: dict[str, Any] | None,
) -> None:
    from search.front.plot import pareto_figure, write_pareto_html

    y, x = config.objectives[0], config.objectives[min(1, len(config.objectives) - 1)]
    third = config.objectives[2].metric if len(config.objectives) > 2 else None
    objectives = objective_pairs(config)
    knee_row = knee([[row[m] for m, _ in objectives] for row in rows], [m for _, m in objectives])
    counts = {"finished": len(rows), "on the front": sum(row["on_front"] for row in rows)}
    counts |= {o: len(tracker.trials.rows(o)) for o in ("stopped", "failed", "infeasible")}
    title = plot_title(tracker.run_info(tracker.sweep_run_id).run_name, config, counts, hv)
    with tempfile.TemporaryDirectory() as tmp:
        table = write_front_csv(rows, Path(tmp) / "pareto.csv")
        fig = pareto_figure(
            plot_rows(rows), x.metric, y.metric, x.mode, y.mode, title, knee_row, third, teacher
        )
        html = write_pareto_html(fig, Path(tmp) / "pareto.html")
        tracker.log_sweep_artifact(table)
        tracker.log_sweep_artifact(html)
