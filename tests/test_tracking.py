"""`Tracker`: what a crash leaves in MLflow and how a resume settles it; the experiment kind and
the UI links that open a sweep in MLflow's model-training view."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from search.record.store import (
    EXPERIMENT_KIND_TAG,
    OUTCOME_TAG,
    TRAINING_KIND,
    SweepNotFound,
    SweepRef,
    default_uri,
    latest_sweep,
    mark_training_experiments,
    run_url,
    serve_command,
)
from search.record.tracker import Tracker, open_sweep


def test_settling_trials_stops_running_runs_and_ends_those_cut_off_mid_write(tmp_path):
    tracker = Tracker(default_uri(tmp_path), "tiny", tmp_path / "artifacts")
    tracker.start_sweep("tiny-sweep", {}, {})
    runs = {name: tracker.trials.start(name, {}, {}) for name in ("done", "cut", "failed", "live")}
    tracker.trials.end(runs["done"], "finished")
    # A SIGKILL between the two writes of trials.end: the outcome is written, the status is not.
    tracker.trials.set_tags(runs["cut"], {OUTCOME_TAG: "finished"})
    tracker.trials.set_tags(runs["failed"], {OUTCOME_TAG: "failed"})

    assert tracker.trials.settle() == 3

    status = {name: tracker.run_info(run).status for name, run in runs.items()}
    assert status == {"done": "FINISHED", "cut": "FINISHED", "failed": "FAILED", "live": "KILLED"}
    outcomes = {row["trial"]: row["outcome"] for row in tracker.trials.rows(None)}
    assert outcomes == {
        "done": "finished",
        "cut": "finished",
        "failed": "failed",
        "live": "stopped",
    }
    assert tracker.trials.settle() == 0


def test_open_sweep_finds_a_sweep_by_name_or_the_latest_and_creates_nothing(tmp_path):
    uri = default_uri(tmp_path)
    with pytest.raises(SweepNotFound, match=r"at sqlite:///.*: it holds no sweeps yet"):
        open_sweep(uri, "tiny", tmp_path / "artifacts")
    assert list(tmp_path.iterdir()) == []

    tracker = Tracker(uri, "tiny", tmp_path / "artifacts")
    first = tracker.start_sweep("tiny-1", {}, {})
    time.sleep(0.01)  # start times order the sweeps
    second = tracker.start_sweep("tiny-2", {}, {})
    tracker.trials.start("t1", {}, {})  # a trial run is no sweep

    assert open_sweep(uri, "tiny", tmp_path / "artifacts")[1].info.run_id == second
    opened, run = open_sweep(uri, "tiny", tmp_path / "artifacts", "tiny-1")
    assert (run.info.run_id, opened.sweep_run_id) == (first, first)
    with pytest.raises(SweepNotFound, match=r"^no sweep t1 in experiment 'tiny' at sqlite:"):
        open_sweep(uri, "tiny", tmp_path / "artifacts", "t1")
    with pytest.raises(SweepNotFound, match=r"^no sweep in experiment 'other' at sqlite:"):
        open_sweep(uri, "other", tmp_path / "artifacts")
    names = [e.name for e in tracker.client.search_experiments()]
    assert "other" not in names


def test_a_new_experiment_is_marked_model_training_and_old_stores_are_marked_by_ui(tmp_path):
    uri = default_uri(tmp_path)
    tracker = Tracker(uri, "tiny", tmp_path / "artifacts")
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND
    # An experiment of an older store (no kind) that holds a sweep, one that holds none, and
    # one a user made a GenAI experiment: only the first is marked.
    old = tracker.client.create_experiment("old")
    Tracker(uri, "old", tmp_path / "artifacts").start_sweep("old-sweep", {}, {})
    tracker.client.create_experiment("empty")
    genai = tracker.client.create_experiment(
        "genai", tags={EXPERIMENT_KIND_TAG: "genai_development"}
    )
    Tracker(uri, "genai", tmp_path / "artifacts").start_sweep("genai-sweep", {}, {})

    assert mark_training_experiments(uri) == [old]
    kinds = {e.name: e.tags.get(EXPERIMENT_KIND_TAG) for e in tracker.client.search_experiments()}
    assert kinds == {
        "tiny": TRAINING_KIND, "old": TRAINING_KIND, "empty": None,
        "genai": "genai_development", "Default": None,
    }  # fmt: skip
    assert tracker.client.get_experiment(genai).tags[EXPERIMENT_KIND_TAG] == "genai_development"
    assert mark_training_experiments(uri) == []


def test_latest_sweep_is_the_last_started_in_any_experiment(tmp_path):
    uri = default_uri(tmp_path)
    assert latest_sweep(uri) is None
    first = Tracker(uri, "a", tmp_path / "artifacts")
    first.start_sweep("a-sweep", {}, {})
    time.sleep(0.01)  # start times are in milliseconds
    second = Tracker(uri, "b", tmp_path / "artifacts")
    run_id = second.start_sweep("b-sweep", {}, {})
    second.trials.start("t1", {}, {})  # a trial run is no sweep
    assert latest_sweep(uri) == SweepRef("b-sweep", second.experiment_id, run_id, False)
    (tmp_path / "pareto.html").write_text("<html></html>")
    second.log_sweep_artifact(tmp_path / "pareto.html")
    assert latest_sweep(uri).has_plot


def test_run_url_opens_the_run_in_the_training_view_of_the_ui_that_serves_it():
    view = "?workflowType=machine_learning"
    local = default_uri(Path("mlflow"))
    assert run_url(local, "3", "abc") == f"http://127.0.0.1:5000/#/experiments/3/runs/abc{view}"
    assert run_url("http://host:5001/", "3", "abc", "pareto.html") == (
        f"http://host:5001/#/experiments/3/runs/abc/artifacts/pareto.html{view}"
    )
    assert serve_command(local, Path("mlflow")) == "shrink-sweep ui --store mlflow"
    assert serve_command("http://host:5001", Path("mlflow")) == ""
