"""`Tracker`: what a crash leaves in MLflow, and how a resume settles it."""

from __future__ import annotations

from search.tracking import OUTCOME_TAG, Tracker, default_uri


def test_settle_trials_stops_running_runs_and_ends_those_cut_off_mid_write(tmp_path):
    tracker = Tracker(default_uri(tmp_path), "tiny", tmp_path / "artifacts")
    tracker.start_sweep("tiny-sweep", {}, {})
    runs = {name: tracker.start_trial(name, {}, {}) for name in ("done", "cut", "failed", "live")}
    tracker.end_trial(runs["done"], "finished")
    # A SIGKILL between end_trial's two writes: the outcome is written, the status is not.
    tracker.set_trial_tags(runs["cut"], {OUTCOME_TAG: "finished"})
    tracker.set_trial_tags(runs["failed"], {OUTCOME_TAG: "failed"})

    assert tracker.settle_trials() == 3

    status = {name: tracker.run_info(run).status for name, run in runs.items()}
    assert status == {"done": "FINISHED", "cut": "FINISHED", "failed": "FAILED", "live": "KILLED"}
    outcomes = {row["trial"]: row["outcome"] for row in tracker.trial_rows(None)}
    assert outcomes == {
        "done": "finished",
        "cut": "finished",
        "failed": "failed",
        "live": "stopped",
    }
    assert tracker.settle_trials() == 0
