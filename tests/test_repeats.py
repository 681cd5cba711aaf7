"""A configuration is trained once per sweep: a repeat proposal is answered from the record of
the trial that measured it (search/strategy/repeats.py, and the searcher that uses it)."""

from __future__ import annotations

import optuna
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from search.driver.tuner import make_sampler
from search.space.config import config_from_dict
from search.space.suggest import suggest
from search.strategy.repeats import (
    MAX_REPEATS,
    REPEAT_OF_ATTR,
    STOPPED_AT_ATTR,
    first_measured,
    measured_values,
    tell_repeat,
)
from search.strategy.searcher import SweepSearch

DISTRIBUTIONS = {"encoder": IntDistribution(1, 2), "decoder": IntDistribution(1, 2)}


def record(encoder, decoder, state, values=None, constraints=None, **attrs):
    return create_trial(
        params={"encoder": encoder, "decoder": decoder},
        distributions=DISTRIBUTIONS,
        state=state,
        values=values,
        user_attrs=attrs,
        constraints=constraints,
    )


def test_a_configuration_was_measured_by_a_complete_trial_or_one_stopped_at_a_rung():
    finished = record(2, 2, TrialState.COMPLETE, [30.0, 400.0])
    stopped = record(1, 2, TrialState.PRUNED, **{STOPPED_AT_ATTR: [12.0, 300.0]})
    failed = record(2, 1, TrialState.FAIL)
    pruned_without_record = record(1, 1, TrialState.PRUNED)
    trials = [finished, stopped, failed, pruned_without_record]
    assert first_measured(trials, {"encoder": 2, "decoder": 2}) is finished
    assert first_measured(trials, {"encoder": 1, "decoder": 2}) is stopped
    assert first_measured(trials, {"encoder": 2, "decoder": 1}) is None  # failed: try again
    assert first_measured(trials, {"encoder": 1, "decoder": 1}) is None
    assert measured_values(finished) == [30.0, 400.0]
    assert measured_values(stopped) == [12.0, 300.0]


def test_a_repeat_is_told_what_the_first_measured_with_its_violations():
    study = optuna.create_study(directions=["maximize", "minimize"])
    violation = {"0:params": 0.0}
    study.add_trial(record(1, 2, TrialState.PRUNED, constraints=violation,
                           **{STOPPED_AT_ATTR: [12.0, 300.0]}))  # fmt: skip
    first = study.trials[0]
    repeat = study.ask(DISTRIBUTIONS)
    tell_repeat(study, repeat, first)
    told = study.trials[1]
    assert told.state == TrialState.COMPLETE and told.values == [12.0, 300.0]
    assert told.user_attrs == {REPEAT_OF_ATTR: 0}
    assert told.constraints == violation
    assert first.state == TrialState.PRUNED  # the stopped trial stays pruned


def searcher(first_points):
    config = config_from_dict(
        {
            "model": "unused",
            "data": {"files": {"train": "unused.jsonl"}},
            "layers": {"encoder": [1, 2], "decoder": [1, 2], "strategy": "sft"},
            "sampler": {"name": "tpe", "seed": 0},
            "first": first_points,
        }
    )
    return SweepSearch(
        space=lambda trial: suggest(trial, config, (2, 2)),
        metric=["rougeL", "params"],
        mode=["max", "min"],
        sampler=make_sampler(config, (2, 2)),
        points_to_evaluate=[dict(p) for p in config.first],
        objectives=config.objectives,
        reference=[0.0, 400.0],
    )


def layers(proposal):
    return proposal["encoder"], proposal["decoder"]


def test_a_repeat_of_a_finished_trial_never_reaches_tune():
    search = searcher([{"encoder": 1, "decoder": 1}, {"encoder": 1, "decoder": 1},
                       {"encoder": 2, "decoder": 1}])  # fmt: skip
    assert layers(search.suggest("t1")) == (1, 1)
    search.on_trial_complete("t1", {"rougeL": 20.0, "params": 200.0, "final": True})
    assert layers(search.suggest("t2")) == (2, 1)  # the second 1+1 was answered, not run
    repeat = search._ot_study.trials[1]
    assert repeat.params == {"encoder": 1, "decoder": 1}
    assert repeat.state == TrialState.COMPLETE and repeat.values == [20.0, 200.0]
    assert repeat.user_attrs[REPEAT_OF_ATTR] == 0


def test_a_repeat_of_a_stopped_trial_is_told_the_point_it_was_stopped_at():
    search = searcher([{"encoder": 1, "decoder": 2}, {"encoder": 1, "decoder": 2},
                       {"encoder": 2, "decoder": 2}])  # fmt: skip
    assert layers(search.suggest("t1")) == (1, 2)
    search.on_trial_complete("t1", {"rougeL": 12.0, "params": 300.0, "step": 3})  # not final
    assert layers(search.suggest("t2")) == (2, 2)
    stopped, repeat = search._ot_study.trials[:2]
    assert stopped.state == TrialState.PRUNED
    assert stopped.user_attrs[STOPPED_AT_ATTR] == [12.0, 300.0]
    assert repeat.state == TrialState.COMPLETE and repeat.values == [12.0, 300.0]


def test_when_every_configuration_is_measured_a_repeat_trains_rather_than_the_sweep_stalling():
    search = searcher([{"encoder": e, "decoder": d} for e in (1, 2) for d in (1, 2)])
    for number in range(4):
        search.suggest(f"t{number}")
        search.on_trial_complete(f"t{number}", {"rougeL": 10.0, "params": 100.0, "final": True})
    proposal = search.suggest("t4")  # the space is spent: every proposal repeats
    assert isinstance(proposal, dict)
    repeats = [t for t in search._ot_study.trials if REPEAT_OF_ATTR in t.user_attrs]
    assert len(repeats) == MAX_REPEATS
