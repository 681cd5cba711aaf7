"""The multi-objective early-stopping scheduler: its rule on made-up results, then a sweep whose
stopped trials must show as stopped in MLflow and as pruned in Optuna."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from test_sweep import shrink_sweep, sweep_runs, write_space
from tiny import tiny_space

from search.space.config import ObjectiveConfig, SchedulerConfig, config_from_dict
from search.strategy.early_stopping import ParetoStopping, SuccessiveHalvingStopping, make_scheduler
from search.strategy.halving import SuccessiveHalving, never_stopped, rung_config, rung_steps
from search.strategy.repeats import STOPPED_AT_ATTR
from trainables.config import RungConfig

OBJECTIVES = (ObjectiveConfig("rougeL", "max"), ObjectiveConfig("params", "min"))


def report(scheduler: ParetoStopping, trial_id: str, step: int, rouge: float, params: float):
    result = {"step": step, "rougeL": rouge, "params": params}
    return scheduler.on_trial_result(None, SimpleNamespace(trial_id=trial_id, config={}), result)


def test_a_trial_most_peers_dominate_stops_and_others_go_on():
    scheduler = ParetoStopping(
        SchedulerConfig("pareto", reduction_factor=2, min_peers=2), OBJECTIVES
    )
    assert report(scheduler, "a", 100, 30.0, 2e6) == TrialScheduler.CONTINUE
    # One peer is not enough to judge, however badly "b" does.
    assert report(scheduler, "b", 100, 10.0, 3e6) == TrialScheduler.CONTINUE
    # Worse than both peers, but smaller than both: nobody dominates it.
    assert report(scheduler, "c", 100, 5.0, 1e6) == TrialScheduler.CONTINUE
    # Dominated by "a" only: one of three peers is not more than half.
    assert report(scheduler, "d", 100, 20.0, 2.5e6) == TrialScheduler.CONTINUE
    # Bigger and worse than a, b and d: three of four peers dominate it.
    assert report(scheduler, "e", 100, 8.0, 3.5e6) == TrialScheduler.STOP
    assert scheduler.stopped == {"e": 100}
    # Another step is another rung: its peers are only the points reported at that step.
    assert report(scheduler, "e", 200, 8.0, 3.5e6) == TrialScheduler.CONTINUE


def test_final_results_and_results_without_objectives_are_never_stopped():
    scheduler = ParetoStopping(SchedulerConfig("pareto", min_peers=1), OBJECTIVES)
    report(scheduler, "a", 100, 30.0, 1e6)
    b = SimpleNamespace(trial_id="b", config={})
    final = {"step": 100, "rougeL": 1.0, "params": 9e6, "final": 1}
    assert scheduler.on_trial_result(None, b, final) == "CONTINUE"
    partial = {"step": 100, "params": 9e6}
    assert scheduler.on_trial_result(None, b, partial) == "CONTINUE"
    assert scheduler.stopped == {}


@pytest.mark.parametrize(("factor", "stops"), [(2, False), (1.5, True)])
def test_the_reduction_factor_sets_how_many_peers_must_dominate(factor, stops):
    scheduler = ParetoStopping(SchedulerConfig("pareto", factor, min_peers=1), OBJECTIVES)
    report(scheduler, "a", 100, 30.0, 1e6)
    report(scheduler, "b", 100, 5.0, 1e6)
    # "a" dominates it, "b" does not: a share of 1/2, above 1 - 1/1.5 but not above 1 - 1/2.
    expected = TrialScheduler.STOP if stops else TrialScheduler.CONTINUE
    assert report(scheduler, "c", 100, 20.0, 2e6) == expected


def test_fifo_is_the_default():
    assert type(make_scheduler(SchedulerConfig(), OBJECTIVES)) is FIFOScheduler
    assert isinstance(make_scheduler(SchedulerConfig("pareto"), OBJECTIVES), ParetoStopping)
    asha = make_scheduler(SchedulerConfig("asha"), OBJECTIVES)
    assert isinstance(asha, SuccessiveHalvingStopping)


# --- asha: successive halving ranked by non-dominated sorting -------------------------------


def test_rungs_are_the_budget_divided_by_powers_of_eta():
    assert rung_steps(500, 3, 3) == [56, 167]
    assert rung_steps(500, 3, 4) == [19, 56, 167]
    assert rung_steps(12, 2, 3) == [3, 6]
    assert rung_steps(2, 3, 4) == [1]  # rungs that round to the same step are one rung
    assert rung_config(SchedulerConfig("fifo"), 500) == RungConfig()
    told = rung_config(SchedulerConfig("asha", rung_examples=40, rung_num_beams=1), 500)
    assert told == RungConfig(steps=(56, 167), examples=40, num_beams=1)


def test_a_rung_keeps_the_best_third_by_non_dominated_rank():
    rule = SuccessiveHalving(3, ["max", "min"])
    assert rule.judge("a", 56, [30.0, 2e6])  # alone at the rung: goes on
    assert not rule.judge("b", 56, [20.0, 3e6])  # dominated by a; 1 of 2 is kept
    assert rule.judge("c", 56, [31.0, 2e6])  # dominates a and b: first front
    assert rule.judge("d", 56, [10.0, 1e6])  # the smallest: nobody dominates it
    # Fifth: a and c dominate it (front 2); 2 of 5 are kept, so the cutoff is front 0.
    assert not rule.judge("e", 56, [25.0, 2.5e6])
    # Another rung has its own results; a trial judged again keeps its first point.
    assert rule.judge("e", 167, [25.0, 2.5e6])
    assert not rule.judge("b", 56, [99.0, 1.0])
    assert rule.results[56]["b"] == [20.0, 3e6]


def test_with_eta_2_half_of_the_rung_goes_on_even_behind_the_front():
    rule = SuccessiveHalving(2, ["max", "min"])
    for trial, point in {"a": (30.0, 1e6), "b": (20.0, 2e6), "c": (10.0, 3e6)}.items():
        rule.judge(trial, 3, point)
    # With "d", four results: keep 2, so the cutoff is the second best's front, 1, which is
    # d's (only "a" dominates it). With "e", five: keep 3, cutoff front 2 (b's); "e" is on
    # front 3 (a, d and b dominate it).
    assert rule.judge("d", 3, [25.0, 1.5e6])
    assert not rule.judge("e", 3, [15.0, 2.5e6])


def asha_report(scheduler, trial_id, step, rouge, params, **extra):
    result = {"step": step, "rougeL": rouge, "params": params, "rung": 1, **extra}
    return scheduler.on_trial_result(None, SimpleNamespace(trial_id=trial_id, config={}), result)


def test_the_tune_scheduler_judges_rung_results_only():
    scheduler = SuccessiveHalvingStopping(SchedulerConfig("asha"), OBJECTIVES)
    assert asha_report(scheduler, "a", 56, 30.0, 2e6) == TrialScheduler.CONTINUE
    assert asha_report(scheduler, "b", 56, 20.0, 3e6) == TrialScheduler.STOP
    assert scheduler.stopped == {"b": 56}
    # Not a rung result (an eval_every evaluation), or the final one: never judged.
    assert asha_report(scheduler, "c", 56, 1.0, 9e6, rung=0) == TrialScheduler.CONTINUE
    assert asha_report(scheduler, "c", 500, 1.0, 9e6, rung=0, final=1) == "CONTINUE"
    assert asha_report(scheduler, "d", 56, None, 9e6) == TrialScheduler.CONTINUE
    assert scheduler.stopped == {"b": 56}


def test_a_first_point_is_judged_but_never_stopped_unless_the_sweep_says_so():
    config = config_from_dict(tiny_space("unused"))
    full = {"encoder": 4, "decoder": 3, "strategy": "sft"}  # its one first point
    spared = never_stopped(config)
    assert spared == [full]
    scheduler = SuccessiveHalvingStopping(SchedulerConfig("asha"), OBJECTIVES, spared)

    def report(trial_id, values, rouge, params):
        trial = SimpleNamespace(trial_id=trial_id, config={**values, "learning_rate": 1e-3})
        result = {"step": 56, "rougeL": rouge, "params": params, "rung": 1}
        return scheduler.on_trial_result(None, trial, result)

    assert report("small", {"encoder": 2, "decoder": 3, "strategy": "sft"}, 30.0, 2e6) == "CONTINUE"
    assert report("full", full, 20.0, 3e6) == TrialScheduler.CONTINUE  # dominated, spared
    assert scheduler.rule.results[56]["full"] == [20.0, 3e6]  # and judged against later
    assert report("other", {**full, "strategy": "last"}, 19.0, 3e6) == TrialScheduler.STOP
    stop_first = config_from_dict(tiny_space("unused", scheduler={"stop_first": True}))
    assert never_stopped(stop_first) == []


def test_the_screens_picks_are_spared_like_the_first_points_unless_the_sweep_says_so():
    config = config_from_dict(tiny_space("unused"))
    pick = {"strategy": "sft", "encoder": 3, "decoder": 2}
    spared = never_stopped(config, [pick])
    assert spared == [{"encoder": 4, "decoder": 3, "strategy": "sft"}, pick]
    scheduler = SuccessiveHalvingStopping(SchedulerConfig("asha"), OBJECTIVES, spared)

    def report(trial_id, values, rouge):
        trial = SimpleNamespace(trial_id=trial_id, config={**values, "learning_rate": 1e-3})
        result = {"step": 56, "rougeL": rouge, "params": 2e6, "rung": 1}
        return scheduler.on_trial_result(None, trial, result)

    assert report("a", {"strategy": "sft", "encoder": 2, "decoder": 3}, 30.0) == "CONTINUE"
    assert report("pick", pick, 20.0) == TrialScheduler.CONTINUE  # dominated, spared
    assert report("other", {**pick, "strategy": "last"}, 20.0) == TrialScheduler.STOP
    stop_first = config_from_dict(tiny_space("unused", scheduler={"stop_first": True}))
    assert never_stopped(stop_first, [pick]) == []


@pytest.mark.slow
def test_stopped_trials_are_stopped_in_mlflow_and_pruned_in_optuna(tmp_path, tiny_t5_path):
    # asha with eta 2 and 3 rungs judges at steps 3 and 6 of 12. With parameter count the only
    # objective, the outcome does not depend on training: 1+1 comes first and goes on; 2+2 is
    # behind it at step 3 (1 of 2 kept) and stops; 2+1 is second of three there (2 of 3 kept)
    # and goes on, and at step 6, where only 1+1 got, it stops.
    first = [{"encoder": e, "decoder": d, "strategy": "sft"} for e, d in ((1, 1), (2, 2), (2, 1))]
    space = write_space(
        tmp_path,
        tiny_t5_path,
        objectives=[{"metric": "params", "mode": "min"}],
        scheduler={
            "name": "asha",
            "reduction_factor": 2,
            "rungs": 3,
            "rung_examples": 4,
            "stop_first": True,  # the first points set the order here, not references
        },
        train={"learning_rate": 1e-3, "max_steps": 12, "batch_size": 8, "eval_every": 0},
        max_concurrent=1,
        trials=3,
        first=first,
    )
    done = shrink_sweep("run", str(space), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    store = tmp_path / "mlflow"
    _, parent, children = sweep_runs(store)
    assert parent.info.status == "FINISHED"
    by_size = {(c.data.params["encoder"], c.data.params["decoder"]): c for c in children}
    outcomes = {k: (c.info.status, c.data.tags.get("stopped_at_step")) for k, c in by_size.items()}
    assert outcomes == {
        ("1", "1"): ("FINISHED", None),
        ("2", "2"): ("KILLED", "3"),
        ("2", "1"): ("KILLED", "6"),
    }
    for key in (("2", "2"), ("2", "1")):
        assert by_size[key].data.tags["shrink_sweep.outcome"] == "stopped"
    assert parent.data.metrics["front_size"] == 1

    study = optuna.load_study(
        study_name=parent.info.run_name, storage=f"sqlite:///{store / 'optuna.db'}"
    )
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "PRUNED", "PRUNED"]
    # Each pruned trial keeps the objectives it was stopped at: a repeat is answered with them.
    stopped_at = {
        (str(t.params["encoder"]), str(t.params["decoder"])): t.user_attrs[STOPPED_AT_ATTR]
        for t in study.trials
        if t.state.name == "PRUNED"
    }
    assert stopped_at == {k: [by_size[k].data.metrics["params"]] for k in (("2", "2"), ("2", "1"))}
