"""Ray's OptunaSearch, taught three things a sweep needs: a trial stopped early was pruned, a
proposal that breaks a constraint known before training is infeasible and never trains, and a
proposal that repeats a measured configuration is answered from its record
(`search.strategy.repeats`).

Imports Ray; runs in the driver's process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ray.tune.search.optuna import OptunaSearch

from search.space.config import ConstraintConfig, ObjectiveConfig
from search.space.constraints import (
    before_training,
    describe,
    feasible,
    tell_violations,
    violations,
)
from search.space.suggest import InfeasibleError, plan
from search.strategy.repeats import MAX_REPEATS, STOPPED_AT_ATTR, answer_repeat
from trainables.shrink import LayerSizes, ParamCount, student_size

MAX_REJECTED = 1000  # proposals in a row that break a constraint before the sweep gives up

# (proposal, what is known of it, the broken constraints in words) -> None
OnInfeasible = Callable[[dict[str, Any], dict[str, float], str], None]


class ParentSizes(Protocol):
    """What a student's size is computed from before it trains: the base model's layer counts,
    its size, and what each layer takes with it (the driver's `Prepared` holds them)."""

    parent_layers: tuple[int, int]
    parent_size: ParamCount | None
    layer_sizes: LayerSizes | None


class SweepSearch(OptunaSearch):
    """OptunaSearch with pruned trials and constraints.

    Ray hands the searcher a stopped trial's last intermediate result, which OptunaSearch
    would record as the trial's final values; with several objectives it cannot even tell a
    missing value from a real one. A result without the trial's `final` mark is not final, so
    the Optuna trial is marked PRUNED instead, as Optuna's own pruners do.

    A proposal whose parameter count breaks a constraint is told to Optuna at once, as a
    COMPLETE trial with its violations (the samplers that take constraints rank it below every
    feasible one) and, for objectives it never measured, the hypervolume's reference values;
    `on_infeasible` records it, and the next proposal is asked for in its place. So is a
    proposal that repeats a configuration already measured, told what that trial measured.
    """

    def __init__(
        self,
        *args: Any,
        constraints: Sequence[ConstraintConfig] = (),
        objectives: Sequence[ObjectiveConfig] = (),
        reference: Sequence[float] = (),
        prepared: ParentSizes | None = None,
        on_infeasible: OnInfeasible | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.constraints = list(constraints)
        self.objectives = list(objectives)
        self.reference = list(reference)
        self.prepared = prepared
        self.on_infeasible = on_infeasible

    def suggest(self, trial_id: str) -> dict | None:
        repeats = 0
        for _ in range(MAX_REJECTED):
            proposal = super().suggest(trial_id)
            if not isinstance(proposal, dict):
                return proposal
            if repeats < MAX_REPEATS and self._answer_repeat(trial_id):
                repeats += 1
                continue
            if not before_training(self.constraints):
                return proposal
            known = self.known_metrics(proposal)
            if not known or feasible(before_training(self.constraints), known):
                return proposal
            self._reject(trial_id, proposal, known)
        raise RuntimeError(
            f"the constraints rejected {MAX_REJECTED} proposals in a row: loosen them, or "
            "narrow the search space to students that can keep them"
        )

    def _answer_repeat(self, trial_id: str) -> bool:
        """If `trial_id`'s proposal repeats a measured configuration, tell Optuna so; True then."""
        if not answer_repeat(self._ot_study, self._ot_trials[trial_id]):
            return False
        del self._ot_trials[trial_id]
        return True

    def known_metrics(self, proposal: Mapping[str, Any]) -> dict[str, float]:
        """The proposal's metrics known before training: its parameter counts."""
        prepared = self.prepared
        if prepared is None or prepared.layer_sizes is None:
            return {}
        try:
            student = plan(dict(proposal), prepared.parent_layers)
        except InfeasibleError:
            return {}  # the trial itself fails with the reason
        size = student_size(
            prepared.parent_size,
            prepared.layer_sizes,
            student.encoder_layers,
            student.decoder_layers,
        )
        return {"params": float(size.total), "params_non_embedding": float(size.non_embedding)}

    def _reject(self, trial_id: str, proposal: dict[str, Any], known: dict[str, float]) -> None:
        ot_trial = self._ot_trials.pop(trial_id)
        checked = {c.metric for c in before_training(self.constraints)}
        # A metric measured in training is not broken yet: only the ones known now count.
        broken = [
            v if c.metric in checked else 0.0
            for c, v in zip(self.constraints, violations(self.constraints, known), strict=True)
        ]
        tell_violations(ot_trial, self.constraints, broken)
        values = [
            known.get(o.metric, reference)
            for o, reference in zip(self.objectives, self.reference, strict=True)
        ]
        self._ot_study.tell(ot_trial, values)
        if self.on_infeasible is not None:
            self.on_infeasible(proposal, known, describe(self.constraints, known))

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if result is not None and not error and not result.get("final"):
            stopped_at = [result.get(o.metric) for o in self.objectives]
            if trial_id in self._ot_trials and stopped_at and None not in stopped_at:
                self._ot_trials[trial_id].set_user_attr(STOPPED_AT_ATTR, stopped_at)
            result = None
        if result is not None and self.constraints and trial_id in self._ot_trials:
            broken = violations(self.constraints, result)
            tell_violations(self._ot_trials[trial_id], self.constraints, broken)
        super().on_trial_complete(trial_id, result=result, error=error)
