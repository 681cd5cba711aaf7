"""Constraints on a trial's metrics (`constraints:` in space.yaml), as Optuna counts them.

Each constraint gives one value per trial: at most 0 when it is kept, the amount by which it is
broken otherwise (Optuna's convention), told to Optuna with `Trial.set_constraint`. Parameter
counts are known from the configuration before any training (`trainables.shrink.student_size`),
so a proposal that breaks a bound on them never trains; bounds on other metrics (ROUGE, size,
latency) are checked when the trial has finished. No Optuna import, no Ray.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from search.space.config import ConstraintConfig

# Metrics known from the configuration alone, before a trial trains.
KNOWN_BEFORE_TRAINING = ("params", "params_non_embedding")
UNREPORTED = 1e300  # the violation told to Optuna for a metric a trial never reported


def tell_violations(
    trial: Any, constraints: Sequence[ConstraintConfig], broken: Sequence[float]
) -> None:
    """Tell an Optuna `trial` the violation of each constraint (`violations`), under a name of
    each (`constraint_names`); the samplers that take constraints read them from the trial. An
    infinite violation (a metric never reported) is told as a huge finite one."""
    for name, value in zip(constraint_names(constraints), broken, strict=True):
        trial.set_constraint(name, value if math.isfinite(value) else UNREPORTED)


def constraint_names(constraints: Sequence[ConstraintConfig]) -> list[str]:
    """A name for each constraint, the same in every trial: its place and metric (`0:params`)."""
    return [f"{i}:{c.metric}" for i, c in enumerate(constraints)]


def violations(constraints: Sequence[ConstraintConfig], metrics: Mapping[str, Any]) -> list[float]:
    """One value per constraint: <= 0 kept, > 0 broken by that much; a metric the trial did not
    report counts as broken (infinitely)."""
    out = []
    for constraint in constraints:
        value = metrics.get(constraint.metric)
        if value is None or not math.isfinite(float(value)):
            out.append(math.inf)
            continue
        broken = 0.0
        if constraint.max is not None:
            broken = max(broken, float(value) - constraint.max)
        if constraint.min is not None:
            broken = max(broken, constraint.min - float(value))
        out.append(broken)
    return out


def feasible(constraints: Sequence[ConstraintConfig], metrics: Mapping[str, Any]) -> bool:
    """Whether the metrics keep every constraint."""
    return all(v <= 0 for v in violations(constraints, metrics))


def before_training(constraints: Sequence[ConstraintConfig]) -> list[ConstraintConfig]:
    """The constraints that can be checked before a trial trains."""
    return [c for c in constraints if c.metric in KNOWN_BEFORE_TRAINING]


def describe(constraints: Sequence[ConstraintConfig], metrics: Mapping[str, Any]) -> str:
    """The broken constraints in words, e.g. `params 3.1e+06 > max 2.5e+06`."""
    parts = []
    for constraint, broken in zip(constraints, violations(constraints, metrics), strict=True):
        if broken <= 0:
            continue
        value = metrics.get(constraint.metric)
        if constraint.max is not None and value is not None and float(value) > constraint.max:
            parts.append(f"{constraint.metric} {float(value):.4g} > max {constraint.max:.4g}")
        elif constraint.min is not None and value is not None:
            parts.append(f"{constraint.metric} {float(value):.4g} < min {constraint.min:.4g}")
        else:
            parts.append(f"{constraint.metric} not reported")
    return "; ".join(parts)
