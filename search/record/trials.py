"""A sweep's trial runs in MLflow: one child run per trial, started, logged to and ended as Ray
Tune reports, and read back as flat rows (the front, resuming and export read these)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from search.record.runs import STATUS, SweepRecord
from search.record.store import KIND_TAG, OUTCOME_TAG, PARENT_TAG, TRIAL_TAG

_INTERNAL = ("mlflow.", "shrink_sweep.")  # tag prefixes that are bookkeeping, not a trial's


class TrialRuns:
    """The child runs of one sweep's parent run."""

    def __init__(self, record: SweepRecord) -> None:
        self.record = record

    def start(self, trial_id: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        """The trial's run, started: a new one, or its old one when a resumed sweep retries it."""
        client = self.record.client
        existing = self.run_id(trial_id)
        if existing is not None:
            client.update_run(existing, status="RUNNING")
            client.set_tag(existing, OUTCOME_TAG, "running")
            return existing
        run = client.create_run(
            self.record.experiment_id,
            run_name=f"trial-{trial_id}",
            tags={
                KIND_TAG: "trial",
                PARENT_TAG: self.record.sweep_run_id,
                TRIAL_TAG: trial_id,
                OUTCOME_TAG: "running",
                **tags,
            },
        )
        self.record.log(run.info.run_id, params=params)
        return run.info.run_id

    def run_id(self, trial_id: str) -> str | None:
        """The run of Ray Tune's trial `trial_id` in this sweep, if it has one."""
        runs = self.record.client.search_runs(
            [self.record.experiment_id],
            f"tags.`{PARENT_TAG}` = '{self.record.sweep_run_id}' "
            f"and tags.`{TRIAL_TAG}` = '{trial_id}'",
        )
        return runs[0].info.run_id if runs else None

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        self.record.log(run_id, metrics=metrics, step=step)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self.record.set_tags(run_id, tags)

    def end(self, run_id: str, outcome: str, error: str | None = None) -> None:
        """End a trial's run with its outcome (and its error's text, for a failed one)."""
        client = self.record.client
        if error:
            client.log_text(run_id, error, "error.txt")
        client.set_tag(run_id, OUTCOME_TAG, outcome)
        client.set_terminated(run_id, STATUS[outcome])

    def settle(self) -> int:
        """End every trial run still open: those left running are stopped, and those a crash
        cut off between `end`'s two writes get the status their outcome names.

        `end` writes the outcome tag first, so a run whose outcome has ended while its status
        still says RUNNING ended as its outcome says. Returns how many were settled.
        """
        query = (
            f"tags.`{PARENT_TAG}` = '{self.record.sweep_run_id}' and attributes.status = 'RUNNING'"
        )
        runs = self.record.all_runs(query)
        for run in runs:
            outcome = run.data.tags.get(OUTCOME_TAG)
            if outcome in STATUS:
                self.record.client.set_terminated(run.info.run_id, STATUS[outcome])
            else:
                self.end(run.info.run_id, "stopped")
        return len(runs)

    def rows(self, outcome: str | None = "finished") -> list[dict[str, Any]]:
        """Every trial of the sweep as a flat row: id, params, last metrics, outcome, run id."""
        query = f"tags.`{PARENT_TAG}` = '{self.record.sweep_run_id}'"
        if outcome:
            query += f" and tags.`{OUTCOME_TAG}` = '{outcome}'"
        rows = []
        for run in self.record.all_runs(query):
            row = {"trial": run.data.tags.get(TRIAL_TAG), "run_id": run.info.run_id}
            row["outcome"] = run.data.tags.get(OUTCOME_TAG)
            row.update(run.data.params)
            row.update(run.data.metrics)
            row.update({k: v for k, v in run.data.tags.items() if not k.startswith(_INTERNAL)})
            rows.append(row)
        return sorted(rows, key=lambda r: r["trial"] or "")
