"""Which trial of a sweep to export: the knee of the Pareto front, or the trial a rule names.

Pure: finished trial rows in, one `Pick` out; no torch, no MLflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from search.export.errors import ExportError
from search.front.pareto import knee, pareto_front
from search.front.rows import scored_rows


@dataclass(frozen=True)
class Pick:
    """The trial chosen for export, and why."""

    row: dict[str, Any]
    reason: str

    @property
    def trial(self) -> str:
        return str(self.row["trial"])


def pick_trial(
    rows: Sequence[Mapping[str, Any]],
    objectives: Sequence[tuple[str, str]],
    *,
    trial: str | None = None,
    max_params: float | None = None,
    min_rouge: float | None = None,
) -> Pick:
    """Choose the trial to export among a sweep's finished trials.

    Without a rule, the knee of the Pareto front over `objectives` (`search.front.pareto.knee`).
    The rules compare `rougeL` and `params` whatever the objectives.

    Args:
        rows: Finished trial rows (`TrialRuns.rows`), each with `trial` and its metrics.
        objectives: (metric, mode) pairs of the sweep, e.g. [("rougeL", "max"), ("params", "min")].
        trial: Export this trial id.
        max_params: The best ROUGE-L among trials with at most this many parameters (ties: fewer
            parameters).
        min_rouge: The smallest model (fewest parameters) with ROUGE-L at least this (ties:
            higher ROUGE-L).

    Returns:
        The chosen row and the reason, in words.

    Raises:
        ExportError: No rows, more than one rule, an unknown trial, or no trial meets the rule.
    """
    if not rows:
        raise ExportError("the sweep has no finished trial yet")
    if sum(rule is not None for rule in (trial, max_params, min_rouge)) > 1:
        raise ExportError("choose at most one of --trial, --max-params and --min-rouge")
    if trial is not None:
        return _pick_by_id(rows, trial)
    if max_params is not None:
        return _pick_under_params(rows, max_params)
    if min_rouge is not None:
        return _pick_above_rouge(rows, min_rouge)
    return _pick_knee(rows, objectives)


def _pick_by_id(rows: Sequence[Mapping[str, Any]], trial: str) -> Pick:
    for row in rows:
        if str(row["trial"]) == trial:
            return Pick(dict(row), "asked for with --trial")
    known = ", ".join(sorted(str(r["trial"]) for r in rows))
    raise ExportError(f"no finished trial {trial!r} in this sweep (finished: {known})")


def _pick_under_params(rows: Sequence[Mapping[str, Any]], max_params: float) -> Pick:
    scored = scored_rows(rows, ["rougeL", "params"])
    fitting = [r for r in scored if r["params"] <= max_params]
    if not fitting:
        smallest = min((r["params"] for r in scored), default=float("nan"))
        raise ExportError(
            f"no trial has at most {max_params:,.0f} parameters (the smallest has {smallest:,.0f})"
        )
    best = min(fitting, key=lambda r: (-r["rougeL"], r["params"], str(r["trial"])))
    return Pick(
        best,
        f"the best ROUGE-L ({best['rougeL']:.2f}) among the {len(fitting)} trial(s) with at "
        f"most {max_params:,.0f} parameters",
    )


def _pick_above_rouge(rows: Sequence[Mapping[str, Any]], min_rouge: float) -> Pick:
    scored = scored_rows(rows, ["rougeL", "params"])
    good = [r for r in scored if r["rougeL"] >= min_rouge]
    if not good:
        best = max((r["rougeL"] for r in scored), default=float("nan"))
        raise ExportError(f"no trial reaches ROUGE-L {min_rouge:g} (the best has {best:.2f})")
    smallest = min(good, key=lambda r: (r["params"], -r["rougeL"], str(r["trial"])))
    return Pick(
        smallest,
        f"the smallest model ({smallest['params']:,.0f} parameters) among the {len(good)} "
        f"trial(s) with ROUGE-L >= {min_rouge:g}",
    )


def _pick_knee(rows: Sequence[Mapping[str, Any]], objectives: Sequence[tuple[str, str]]) -> Pick:
    metrics = [metric for metric, _ in objectives]
    modes = [mode for _, mode in objectives]
    scored = scored_rows(rows, metrics)
    if not scored:
        raise ExportError(f"no finished trial reports every objective ({', '.join(metrics)})")
    values = [[r[m] for m in metrics] for r in scored]
    on_front = int(pareto_front(values, modes).sum())
    named = ", ".join(f"{metric} {mode}" for metric, mode in objectives)
    if on_front == 1:
        return Pick(scored[knee(values, modes)], f"the only trial on the Pareto front ({named})")
    return Pick(
        scored[knee(values, modes)],
        f"the knee of the Pareto front ({named}; {on_front} trials on it): the front trial "
        "with the largest sum of objectives rescaled to [0, 1] over the front",
    )
