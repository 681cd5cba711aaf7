"""Early stopping that is sound for several objectives, as Ray Tune schedulers.

`asha` (`SuccessiveHalvingStopping`) runs the pure rule of `search.strategy.halving`: asynchronous
successive halving ranked by non-dominated sorting at fixed rungs (MO-ASHA). What follows
describes the older `pareto` rule.

Ray's ASHA ranks trials by one scalar; ROUGE against parameter count has no single order. In
the spirit of MO-ASHA (Schmucker et al. 2021), a trial's intermediate point (the objectives it
reports at an evaluation step) is compared with the points other trials reported at the same
step: when more than `1 - 1/reduction_factor` of them dominate it (better or equal in every
objective, better in one), it is unlikely to end on the Pareto front, and it stops. A small
model is never stopped for being worse than a bigger one, only for being beaten by models at
least as small. The rule itself is `search.front.pareto.dominated_share`; this module adapts it
to Tune.

Imported only when a sweep runs, since it imports Ray.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from search.front.pareto import dominated_share
from search.space.config import ObjectiveConfig, SchedulerConfig
from search.strategy.halving import SuccessiveHalving, is_first_point


class ParetoStopping(FIFOScheduler):
    """Stops a trial whose intermediate point most peers at the same step dominate."""

    def __init__(
        self,
        config: SchedulerConfig,
        objectives: tuple[ObjectiveConfig, ...],
        first: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        super().__init__()
        self.metrics = [o.metric for o in objectives]
        self.modes = [o.mode for o in objectives]
        self.first = list(first)
        self.threshold = 1 - 1 / config.reduction_factor
        self.min_peers = config.min_peers
        self.rungs: dict[int, dict[str, list[float]]] = {}  # step -> trial id -> point
        self.stopped: dict[str, int] = {}  # trial id -> the step it was stopped at

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if result.get("final") or "step" not in result:
            return TrialScheduler.CONTINUE
        if any(result.get(m) is None for m in self.metrics):
            return TrialScheduler.CONTINUE
        step = int(result["step"])
        point = [float(result[m]) for m in self.metrics]
        rung = self.rungs.setdefault(step, {})
        peers = [p for trial_id, p in rung.items() if trial_id != trial.trial_id]
        rung[trial.trial_id] = point
        if len(peers) < self.min_peers:
            return TrialScheduler.CONTINUE
        if is_first_point(trial.config, self.first):
            return TrialScheduler.CONTINUE
        if dominated_share(point, peers, self.modes) > self.threshold:
            self.stopped[trial.trial_id] = step
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        return f"ParetoStopping: {len(self.stopped)} stopped early"


class SuccessiveHalvingStopping(FIFOScheduler):
    """Judges each rung result a trial reports (`rung` 1) by `search.strategy.halving`'s rule."""

    def __init__(
        self,
        config: SchedulerConfig,
        objectives: tuple[ObjectiveConfig, ...],
        first: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        super().__init__()
        self.metrics = [o.metric for o in objectives]
        self.rule = SuccessiveHalving(config.reduction_factor, [o.mode for o in objectives])
        self.first = list(first)
        self.stopped: dict[str, int] = {}  # trial id -> the rung step it was stopped at

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if not result.get("rung") or any(result.get(m) is None for m in self.metrics):
            return TrialScheduler.CONTINUE
        step = int(result["step"])
        point = [float(result[m]) for m in self.metrics]
        if self.rule.judge(trial.trial_id, step, point) or is_first_point(trial.config, self.first):
            return TrialScheduler.CONTINUE
        self.stopped[trial.trial_id] = step
        return TrialScheduler.STOP

    def debug_string(self) -> str:
        return f"SuccessiveHalvingStopping: {len(self.stopped)} stopped early"


def make_scheduler(
    config: SchedulerConfig,
    objectives: tuple[ObjectiveConfig, ...],
    first: Sequence[Mapping[str, Any]] = (),
) -> Any:
    """The Tune scheduler named in `space.yaml`: FIFO (none), MO-ASHA or Pareto stopping;
    neither stops a trial of the points in `first` (`search.strategy.halving.never_stopped`)."""
    if config.name == "asha":
        return SuccessiveHalvingStopping(config, objectives, first)
    if config.name == "pareto":
        return ParetoStopping(config, objectives, first)
    return FIFOScheduler()
