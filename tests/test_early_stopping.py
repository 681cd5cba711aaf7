"""The multi-objective early-stopping scheduler: its rule on made-up results, then a sweep whose
stopped trials must show as stopped in MLflow and as pruned in Optuna."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from test_sweep import shrink_sweep, sweep_runs, write_space

from search.config import ObjectiveConfig, SchedulerConfig
from search.early_stopping import ParetoStopping, make_scheduler

OBJECTIVES = (ObjectiveConfig("rougeL", "max"), ObjectiveConfig("params", "min"))


def report(scheduler: ParetoStopping, trial_id: str, step: int, rouge: float, params: float):
    result = {"step": step, "rougeL": rouge, "params": params}
    return scheduler.on_trial_result(None, SimpleNamespace(trial_id=trial_id), result)


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
    final = {"step": 100, "rougeL": 1.0, "params": 9e6, "final": 1}
    assert scheduler.on_trial_result(None, SimpleNamespace(trial_id="b"), final) == "CONTINUE"
    partial = {"step": 100, "params": 9e6}
    assert scheduler.on_trial_result(None, SimpleNamespace(trial_id="b"), partial) == "CONTINUE"
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


@pytest.mark.slow
def test_stopped_trials_are_stopped_in_mlflow_and_pruned_in_optuna(tmp_path, tiny_t5_path):
    # With parameter count the only objective, the outcome does not depend on training: the
    # 2+2 student is beaten by the 1+1 one at step 4; at step 4 the 2+1 one is beaten by half
    # its peers (1+1, not 2+2) and goes on, and at step 8, where only 1+1 got, it stops.
    first = [{"encoder": e, "decoder": d, "strategy": "sft"} for e, d in ((1, 1), (2, 2), (2, 1))]
    space = write_space(
        tmp_path,
        tiny_t5_path,
        objectives=[{"metric": "params", "mode": "min"}],
        scheduler={"name": "pareto", "reduction_factor": 2, "min_peers": 1},
        train={"learning_rate": 1e-3, "max_steps": 12, "batch_size": 8, "eval_every": 4},
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
        ("2", "2"): ("KILLED", "4"),
        ("2", "1"): ("KILLED", "8"),
    }
    for key in (("2", "2"), ("2", "1")):
        assert by_size[key].data.tags["shrink_sweep.outcome"] == "stopped"
    assert parent.data.metrics["front_size"] == 1

    study = optuna.load_study(
        study_name=parent.info.run_name, storage=f"sqlite:///{store / 'optuna.db'}"
    )
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "PRUNED", "PRUNED"]
