"""The sweep's Pareto front as its users see it: which finished trials are on it, and in what
order. Pure: rows in, rows out; no MLflow, no Ray, no torch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from search.pareto import front_table


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
        rows: Finished trial rows (`Tracker.trial_rows`); rows lacking an objective are left out.
        objectives: (metric, mode) pairs, e.g. [("rougeL", "max"), ("params", "min")].

    Returns:
        Copies of the front rows, objectives as floats.
    """
    scored = scored_rows(rows, [metric for metric, _ in objectives])
    return front_table(scored, objectives) if scored else []
