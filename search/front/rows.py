"""The sweep's Pareto front as rows: which finished trials are on it, the hypervolume's reference
point, the CSV table and the rows the plot shows.

Rows in, rows out: no Ray, no torch, no MLflow (`search.record.front_log` reads the rows from
the record and logs what this makes), so that `shrink-sweep pareto` stays quick.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from search.front.pareto import front_table
from search.space.config import METRICS, SweepConfig

# Metrics a trial reports that are logged to MLflow (Ray adds many bookkeeping keys).
TRIAL_METRICS = (
    *METRICS,
    "train_loss",
    "eval_loss",
    "train_seconds",
    "examples_per_second",
    "startup_seconds",
    "micro_batch_size",  # what `train.micro_batch_size: auto` picked
)


def trial_metrics(result: Mapping[str, Any]) -> dict[str, Any]:
    """The `TRIAL_METRICS` of a trial's result or row, without Ray's bookkeeping keys."""
    return {k: result[k] for k in TRIAL_METRICS if k in result}


def objective_pairs(config: SweepConfig) -> list[tuple[str, str]]:
    """The sweep's objectives as (metric, mode) pairs, e.g. [("rougeL", "max"), ...]."""
    return [(o.metric, o.mode) for o in config.objectives]


def scored_rows(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Copies of the rows that report every metric, those metrics as floats."""
    out = []
    for row in rows:
        if all(row.get(m) is not None for m in metrics):
            out.append({**row, **{m: float(row[m]) for m in metrics}})
    return out


def front_rows(
    rows: Sequence[Mapping[str, Any]], objectives: Sequence[tuple[str, str]]
) -> list[dict[str, Any]]:
    """The finished trials on the Pareto front, best first by the first objective.

    Args:
        rows: Finished trial rows (`TrialRuns.rows`); rows lacking an objective are left out.
        objectives: (metric, mode) pairs, e.g. [("rougeL", "max"), ("params", "min")].

    Returns:
        Copies of the front rows, objectives as floats.
    """
    scored = scored_rows(rows, [metric for metric, _ in objectives])
    return front_table(scored, objectives) if scored else []


def reference_point(config: SweepConfig, parent_params: int) -> list[float]:
    """The hypervolume's reference point, one value per objective.

    A value given in space.yaml's `reference_point` is used as is. Otherwise a maximized
    metric gets 0, a minimized parameter count (`params`, `params_non_embedding`) the base
    model's parameter count, and any other minimized metric (size_mb, latency_ms) 1e12, far
    beyond any trial, so that every trial adds to the hypervolume.
    """
    point = []
    for objective in config.objectives:
        if objective.metric in config.reference_point:
            point.append(config.reference_point[objective.metric])
        elif objective.mode == "max":
            point.append(0.0)
        else:
            point.append(float(parent_params) if objective.metric.startswith("params") else 1e12)
    return point


def write_front_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Every finished trial, front first, with the columns a user compares."""
    columns = ["trial", "on_front", *TRIAL_METRICS, "strategy", "encoder_layers", "decoder_layers"]
    extra = sorted({k for r in rows for k in r} - set(columns) - {"run_id", "outcome"})
    ordered = sorted(rows, key=lambda r: (not r.get("on_front"), r.get("trial") or ""))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, [*columns, *extra], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(ordered)
    return path


def plot_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows as the plot shows them: the trial, its settings and its metrics, nothing else
    (every key of a row becomes a line of its marker's hover text)."""
    keep = ("trial", "strategy", "encoder_layers", "decoder_layers", "learning_rate", "max_steps")
    return [{**{k: row[k] for k in keep if k in row}, **trial_metrics(row)} for row in rows]


def drop_dominated_weights(rows: Sequence[Mapping[str, Any]]) -> None:
    """A dominated trial stays dominated, so its weights can go (keep_weights: pareto)."""
    for row in rows:
        checkpoint = row.get("checkpoint")
        if not row["on_front"] and checkpoint and Path(checkpoint).is_dir():
            shutil.rmtree(checkpoint, ignore_errors=True)


def plot_title(sweep: str, config: SweepConfig, counts: Mapping[str, int], hv: float) -> str:
    """The plot's title: the sweep, its objectives, its trials by outcome and the hypervolume."""
    objectives = " vs ".join(f"{o.metric} ({o.mode})" for o in config.objectives)
    outcomes = ", ".join(f"{n} {outcome}" for outcome, n in counts.items() if n)
    return f"{sweep}: {objectives}<br><sup>{outcomes}; hypervolume {hv:.4g}</sup>"
