"""Asynchronous successive halving for several objectives (MO-ASHA), as a pure rule.

A trial is scored at rungs, fixed fractions of its training budget (with reduction factor 3
and 3 rungs: 1/9, 1/3, then the end). At each rung it is ranked, by non-dominated sorting
(`search.front.pareto.front_ranks`), among every result any trial has reported at that rung so far,
itself included; it goes on when its rank is no worse than that of the `ceil(n / eta)`-th best
of those `n` results, and stops otherwise (Schmucker et al. 2021, "Multi-objective
Asynchronous Successive Halving"). A trial never waits for peers, so the rule works with two
workers as with a hundred: early trials go on, later ones are held to what came before. A
smaller model is never stopped by bigger ones alone: a point that no other point dominates is
on the first front. The sweep's `first:` points and the zero-shot screen's picks are judged
but never stopped (`never_stopped`).

Pure: no Ray, no torch. `search.strategy.early_stopping` runs it as a Ray Tune scheduler, and
`bench/simulate.py` replays sweeps with the very same rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from search.front.pareto import front_ranks
from search.space.config import SchedulerConfig, SweepConfig
from trainables.config import RungConfig


def rung_fractions(reduction_factor: float, rungs: int) -> list[float]:
    """The budget fractions at which a trial is judged: eta^-(rungs-1), ..., eta^-1 (the end
    of the budget is no rung: a trial that gets there finishes)."""
    return [reduction_factor**-k for k in range(rungs - 1, 0, -1)]


def rung_steps(max_steps: int, reduction_factor: float, rungs: int) -> list[int]:
    """The optimizer steps of a `max_steps` budget at which a trial is judged, ascending."""
    steps = {max(1, round(max_steps * f)) for f in rung_fractions(reduction_factor, rungs)}
    return sorted(s for s in steps if s < max_steps)


class SuccessiveHalving:
    """The results reported at each rung so far, and the rule that judges a new one."""

    def __init__(self, reduction_factor: float, modes: Sequence[str]) -> None:
        self.reduction_factor = reduction_factor
        self.modes = list(modes)
        self.results: dict[int, dict[str, list[float]]] = {}  # rung step -> trial -> point

    def judge(self, trial: str, step: int, point: Sequence[float]) -> bool:
        """Record `trial`'s point at the rung `step`; True if the trial goes on.

        A trial judged twice at one rung (a resumed sweep replaying it) keeps its first point.
        """
        rung = self.results.setdefault(step, {})
        rung.setdefault(trial, [float(v) for v in point])
        trials = list(rung)
        ranks = front_ranks([rung[t] for t in trials], self.modes)
        keep = math.ceil(len(trials) / self.reduction_factor)
        cutoff = sorted(ranks)[keep - 1]
        return bool(ranks[trials.index(trial)] <= cutoff)


def never_stopped(
    config: SweepConfig, picks: Sequence[Mapping[str, Any]] = ()
) -> list[dict[str, Any]]:
    """The points a scheduler must not stop: the sweep's `first:` points, the references its
    front is read against (the full model, say), and the zero-shot screen's `picks`
    (`search.strategy.screen.pick_points`), unless `scheduler.stop_first` says they are mere
    starting points. They run their whole budget and report at the rungs, so the others are
    judged against them.

    The picks are the screen's bet on the front's knee: students of middle size, which learn
    slower early than the big ones, so a cheap early rung misjudges them. The simulator
    showed it (bench/README.md, "Search simulator"): asha stopped the pick 4+3 at its first
    rung in every seed, no later proposal of it trained, and TPE with asha needed 25% more
    compute than without it to reach 0.95 of the front; sparing the picks made it faster than
    without asha.
    """
    if config.scheduler.stop_first:
        return []
    return [*(dict(p) for p in config.first), *(dict(p) for p in picks)]


def is_first_point(values: Mapping[str, Any], first: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a trial's values are one of `first` (points that may leave values out)."""
    return any(all(values.get(k) == v for k, v in point.items()) for point in first)


def rung_config(scheduler: SchedulerConfig, total_steps: int) -> RungConfig:
    """What a trial of `total_steps` optimizer steps is told about the rungs it reports at:
    none unless the sweep's scheduler is `asha`."""
    if scheduler.name != "asha":
        return RungConfig()
    return RungConfig(
        steps=tuple(rung_steps(total_steps, scheduler.reduction_factor, scheduler.rungs)),
        examples=scheduler.rung_examples,
        num_beams=scheduler.rung_num_beams,
    )
