"""A sweep trains each configuration once: a proposal that repeats one already measured is
answered from the record of the first.

Trials are seeded, so training a configuration again gives the same scores: a repeat would only
spend compute. Samplers do propose repeats in a small discrete space, and one of them always
will after a trial is stopped early: Optuna's GP sampler models COMPLETE trials only, so it
keeps proposing a configuration the scheduler stopped (the simulator showed GP with early
stopping stopping 48 of 60 trials and missing the front in 11 of 20 seeds).

So the searcher tells Optuna a repeat at once, as a COMPLETE trial with what the first trial
measured: its final objectives, or, if it was stopped, its objectives at the rung where it was
stopped (stored on the PRUNED trial as `STOPPED_AT_ATTR`). The samplers then see the point and
move on; the stopped trial itself stays PRUNED. Pure: Optuna's trial records only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from optuna.trial import FrozenTrial, TrialState

STOPPED_AT_ATTR = "stopped_at"  # a PRUNED trial's objectives at the rung that stopped it
REPEAT_OF_ATTR = "repeat_of"  # on a repeat: the number of the trial it repeats
MAX_REPEATS = 20  # repeats in a row before the searcher lets one train (the space is spent)


def first_measured(trials: Iterable[FrozenTrial], params: Mapping[str, Any]) -> FrozenTrial | None:
    """The trial that already measured `params`: COMPLETE, or PRUNED with the objectives it was
    stopped at; None if no trial did."""
    for trial in trials:
        if trial.params != params:
            continue
        if trial.state == TrialState.COMPLETE or STOPPED_AT_ATTR in trial.user_attrs:
            return trial
    return None


def measured_values(trial: FrozenTrial) -> Sequence[float]:
    """What `trial` measured: its values, or the objectives it was stopped at."""
    if trial.state == TrialState.COMPLETE:
        return list(trial.values)
    return list(trial.user_attrs[STOPPED_AT_ATTR])


def answer_repeat(study: Any, trial: Any) -> bool:
    """If the running `trial` (its parameters suggested) repeats one of `study`'s measured
    trials, tell `study` so (`tell_repeat`) and return True; otherwise leave it be."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    first = first_measured(done, trial.params)
    if first is None:
        return False
    tell_repeat(study, trial, first)
    return True


def tell_repeat(study: Any, trial: Any, first: FrozenTrial) -> None:
    """Tell `study` that its running `trial` repeats `first`: what `first` measured, with its
    constraints' violations and other user attributes."""
    for key, value in first.user_attrs.items():
        if key not in (STOPPED_AT_ATTR, REPEAT_OF_ATTR):
            trial.set_user_attr(key, value)
    for name, value in first.constraints.items():
        trial.set_constraint(name, value)
    trial.set_user_attr(REPEAT_OF_ATTR, first.number)
    study.tell(trial, measured_values(first))
