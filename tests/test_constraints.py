"""Constraints (`constraints:` in space.yaml): violations as Optuna counts them, a proposal
that breaks a bound known before training is refused and recorded as infeasible, and only
feasible trials reach the front."""

from __future__ import annotations

import math
import warnings

import optuna
import pytest

from search.driver.callbacks import TrackingCallback
from search.driver.preflight import Prepared
from search.driver.tuner import make_sampler
from search.record.front_log import candidate_rows, update_front
from search.record.store import default_uri
from search.record.tracker import Tracker
from search.space.config import ConfigError, ConstraintConfig, config_from_dict
from search.space.constraints import UNREPORTED, describe, feasible, tell_violations, violations
from search.space.suggest import suggest
from search.strategy.searcher import SweepSearch
from trainables.shrink import count_parameters, layer_sizes

AT_MOST_3M = ConstraintConfig("params", max=3e6)
AT_LEAST_20 = ConstraintConfig("rougeL", min=20.0)


def test_violations_are_zero_when_kept_and_the_excess_when_broken():
    assert violations([AT_MOST_3M, AT_LEAST_20], {"params": 2e6, "rougeL": 25.0}) == [0.0, 0.0]
    assert violations([AT_MOST_3M, AT_LEAST_20], {"params": 3.5e6, "rougeL": 15.0}) == [
        5e5,
        5.0,
    ]
    assert violations([AT_LEAST_20], {}) == [math.inf]  # never reported: broken
    both = ConstraintConfig("params", min=1e6, max=3e6)
    assert violations([both], {"params": 5e5}) == [5e5]
    assert feasible([AT_MOST_3M], {"params": 3e6}) and not feasible([AT_MOST_3M], {"params": 4e6})
    assert describe([AT_MOST_3M, AT_LEAST_20], {"params": 4e6, "rougeL": 25}) == (
        "params 4e+06 > max 3e+06"
    )


def test_optuna_reads_the_violations_told_to_a_trial():
    study = optuna.create_study(directions=["maximize", "minimize"])
    for rouge, params in ((30.0, 4e6), (20.0, 2e6)):  # without constraints, both on the front
        trial = study.ask()
        tell_violations(trial, [AT_MOST_3M], violations([AT_MOST_3M], {"params": params}))
        study.tell(trial, [rouge, params])
    assert [t.constraints for t in study.trials] == [{"0:params": 1e6}, {"0:params": 0.0}]
    assert [t.number for t in study.best_trials] == [1]  # Optuna's front leaves out the 4M one

    never_reported = study.ask()
    tell_violations(never_reported, [AT_MOST_3M, AT_LEAST_20], [0.0, math.inf])
    study.tell(never_reported, [40.0, 1e6])
    assert study.trials[2].constraints == {"0:params": 0.0, "1:rougeL": UNREPORTED}


@pytest.mark.parametrize("name", ["tpe", "gp", "nsga2", "random"])
def test_a_constrained_sampler_is_made_without_optunas_deprecated_constraints_func(name):
    config = space(sampler={"name": name, "seed": 0}, constraints=[{"metric": "params", "max": 1}])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        make_sampler(config, (2, 2))


def space(**changes):
    raw = {
        "model": "unused",
        "data": {"files": {"train": "unused.jsonl"}},
        "layers": {"encoder": {"low": 1, "high": 2}, "decoder": {"low": 1, "high": 2}},
        "sampler": {"name": "tpe", "seed": 0},
    }
    return config_from_dict({**raw, **changes})


def test_a_constraint_names_a_known_metric_and_a_bound():
    with pytest.raises(ConfigError) as caught:
        space(constraints=[{"metric": "bleu", "max": 1}, {"metric": "params"}])
    first, second = caught.value.problems
    assert first.startswith("constraints[0].metric: unknown metric 'bleu' (one of ('rouge1'")
    assert second == "constraints[1]: give max, min or both"


@pytest.fixture
def searcher_of(tiny_t5):
    """A SweepSearch over a 2+2 cut of the tiny T5, with the sizes preflight would give it."""
    from trainables.shrink import shrink

    parent = shrink(tiny_t5, (0, 1), (0, 1))
    prepared = Prepared(
        base=None,
        data=None,
        parent_layers=(2, 2),
        parent_params=count_parameters(parent).total,
        parent_size=count_parameters(parent),
        layer_sizes=layer_sizes(parent),
    )

    def make(config, refused):
        search = SweepSearch(
            space=lambda trial: suggest(trial, config, prepared.parent_layers),
            metric=["rougeL", "params"],
            mode=["max", "min"],
            sampler=make_sampler(config, prepared.parent_layers),
            points_to_evaluate=[dict(p) for p in config.first] or None,
            constraints=config.constraints,
            objectives=config.objectives,
            reference=[0.0, float(prepared.parent_params)],
            prepared=prepared,
            on_infeasible=lambda proposal, known, why: refused.append((proposal, known, why)),
        )
        return search, prepared

    return make


def test_an_infeasible_proposal_never_reaches_tune_and_optuna_knows_it(searcher_of):
    # The 2+2 student is the parent itself: above a bound just under the parent's size.
    refused = []
    _, prepared = searcher_of(space(), refused)
    limit = prepared.parent_params - 1
    first = [{"encoder": 2, "decoder": 2}, {"encoder": 1, "decoder": 1}]
    config = space(constraints=[{"metric": "params", "max": limit}], first=first)
    search, _ = searcher_of(config, refused)
    proposal = search.suggest("t1")
    assert (proposal["encoder"], proposal["decoder"]) == (1, 1)  # the 2+2 point was refused
    assert len(refused) == 1
    rejected, known, why = refused[0]
    assert (rejected["encoder"], rejected["decoder"]) == (2, 2)
    assert known["params"] == prepared.parent_params
    assert why == f"params {prepared.parent_params:.4g} > max {limit:.4g}"
    study = search._ot_study
    (told,) = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert told.params == {"encoder": 2, "decoder": 2}
    assert told.constraints == {"0:params": 1.0}  # what the samplers read
    assert told.values == [0.0, float(prepared.parent_params)]  # ROUGE never measured


def test_a_finished_trial_tells_optuna_how_far_it_broke_a_bound_on_its_scores(searcher_of):
    config = space(constraints=[{"metric": "rougeL", "min": 20.0}])
    search, prepared = searcher_of(config, [])
    search.suggest("t1")
    result = {"rougeL": 15.0, "params": float(prepared.parent_params), "final": True}
    search.on_trial_complete("t1", result)
    (told,) = search._ot_study.trials
    assert told.state == optuna.trial.TrialState.COMPLETE and told.values[0] == 15.0
    assert told.constraints == {"0:rougeL": 5.0}


def test_a_finished_trial_that_breaks_a_bound_is_not_a_candidate(tmp_path, searcher_of):
    config = space(constraints=[{"metric": "rougeL", "min": 20.0}])
    tracker = Tracker(default_uri(tmp_path), "tiny", tmp_path / "artifacts")
    tracker.start_sweep("s", {}, {})
    for trial, (rouge, params) in {"good": (25.0, 2e6), "bad": (15.0, 1e6)}.items():
        run = tracker.trials.start(trial, {"encoder": 1, "decoder": 1}, {})
        tracker.trials.log_metrics(run, {"rougeL": rouge, "params": params}, step=1)
        tracker.trials.end(run, "finished")
    callback = TrackingCallback(tracker, config, (2, 2), 3_000_000, progress=False, sweep="s")
    proposal = {"strategy": "sft", "encoder": 2, "decoder": 2}
    callback.record_infeasible(proposal, {"params": 4e6}, "params > max")
    assert [r["trial"] for r in candidate_rows(tracker, config)] == ["good"]
    rows, _ = update_front(tracker, config, 3_000_000)
    assert [(r["trial"], r["on_front"]) for r in rows] == [("good", True)]
    outcomes = {r["trial"]: r["outcome"] for r in tracker.trials.rows(None)}
    assert outcomes == {"good": "finished", "bad": "finished", "infeasible_1": "infeasible"}
    (infeasible,) = [r for r in tracker.trials.rows("infeasible")]
    assert tracker.run_info(infeasible["run_id"]).status == "KILLED"
    assert infeasible["params"] == 4e6
