"""A sweep's view of its record in MLflow (`Tracker`): the sweep's parent run, its trial runs
(`tracker.trials`) and its exported models (`tracker.models`); and `open_sweep`, the one way
the commands that read or continue a sweep find it."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from search.record.models import ModelRegistry
from search.record.runs import STATUS, SweepRecord
from search.record.store import (
    EXPERIMENT_KIND_TAG,
    KIND_TAG,
    OUTCOME_TAG,
    SWEEP_TAG,
    TRAINING_KIND,
    SweepNotFound,
    check_store,
    holds_runs,
    is_server,
    store_lock,
)
from search.record.trials import TrialRuns


class Tracker:
    """A sweep's parent run in an MLflow experiment, with its trial runs and models."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        artifact_root: Path | None = None,
        create: bool = True,
    ) -> None:
        from mlflow.tracking import MlflowClient

        with store_lock(uri):  # the first use of a SQLite store creates its tables
            client = MlflowClient(tracking_uri=uri)
            experiment_id = _experiment(client, uri, experiment, artifact_root, create)
        self.record = SweepRecord(uri, client, experiment_id)
        self.trials = TrialRuns(self.record)
        self.models = ModelRegistry(self.record)

    @property
    def uri(self) -> str:
        return self.record.uri

    @property
    def client(self) -> Any:
        return self.record.client

    @property
    def experiment_id(self) -> str:
        return self.record.experiment_id

    @property
    def sweep_run_id(self) -> str | None:
        return self.record.sweep_run_id

    @sweep_run_id.setter
    def sweep_run_id(self, run_id: str | None) -> None:
        self.record.sweep_run_id = run_id

    def start_sweep(self, sweep: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=sweep,
            tags={KIND_TAG: "sweep", SWEEP_TAG: sweep, OUTCOME_TAG: "running", **tags},
        )
        self.sweep_run_id = run.info.run_id
        self.record.log(self.sweep_run_id, params=params)
        return self.sweep_run_id

    def resume_sweep(self, run_id: str) -> None:
        self.sweep_run_id = run_id
        self.client.update_run(run_id, status="RUNNING")
        self.client.set_tag(run_id, OUTCOME_TAG, "running")

    def set_sweep_tags(self, tags: Mapping[str, str]) -> None:
        self.record.set_tags(self.sweep_run_id, tags)

    def end_sweep(self, outcome: str) -> None:
        self.client.set_tag(self.sweep_run_id, OUTCOME_TAG, outcome)
        self.client.set_terminated(self.sweep_run_id, STATUS[outcome])

    def find_sweep(self, name_or_id: str | None = None) -> Any:
        """The sweep's parent run by run id or name; without one, the latest sweep."""
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{KIND_TAG}` = 'sweep'",
            order_by=["attributes.start_time DESC"],
        )
        for run in runs:
            if name_or_id in (None, run.info.run_id, run.info.run_name):
                return run
        return None

    def log_sweep_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.record.log(self.sweep_run_id, metrics=metrics, step=step)

    def sweep_metrics(self) -> dict[str, float]:
        """The sweep run's metrics, each at its latest value."""
        return dict(self.client.get_run(self.sweep_run_id).data.metrics)

    def log_sweep_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.sweep_run_id, str(path))

    def download_sweep_artifact(self, name: str, path: Path) -> Path:
        """Copy one of the sweep's artifacts (e.g. pareto.html) to `path`."""
        with tempfile.TemporaryDirectory() as tmp:
            local = self.client.download_artifacts(self.sweep_run_id, name, tmp)
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, path)
        return path

    def log_sweep_text(self, text: str, name: str) -> None:
        self.client.log_text(self.sweep_run_id, text, name)

    def read_text(self, run_id: str, name: str) -> str:
        # Through this client: a server's `mlflow-artifacts:` URIs resolve against the
        # tracking URI, which --tracking-uri gives this client, not MLflow's global default.
        with tempfile.TemporaryDirectory() as tmp:
            return Path(self.client.download_artifacts(run_id, name, tmp)).read_text()

    def run_info(self, run_id: str) -> Any:
        """MLflow's record of a run's life (`RunInfo`): its status, start and end times."""
        return self.client.get_run(run_id).info


def _experiment(client: Any, uri: str, name: str, artifact_root: Path | None, create: bool) -> str:
    """The id of experiment `name`, created (a model-training one) if new and `create`."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    if not create:
        raise SweepNotFound(f"no experiment {name!r} at {uri}")
    if is_server(uri):  # it stores artifacts itself; a local path is this disk only
        artifact_root = None
    location = (artifact_root / name).resolve().as_uri() if artifact_root else None
    tags = {EXPERIMENT_KIND_TAG: TRAINING_KIND}  # so MLflow shows runs, not GenAI traces
    return client.create_experiment(name, artifact_location=location, tags=tags)


def open_sweep(
    uri: str, experiment: str, artifact_root: Path, sweep: str | None = None
) -> tuple[Tracker, Any]:
    """A tracker on the sweep `sweep` (a run name or id; default the latest) of `experiment`,
    and the sweep's parent run, for the commands that read or continue a sweep.

    Writes nothing: a store, an experiment or a sweep that does not exist is an error, not
    something to create.

    Raises:
        TrackingError: the store cannot be reached.
        SweepNotFound: the store, the experiment or the sweep does not exist.
    """
    check_store(uri)
    missing = f"no sweep {sweep}" if sweep else "no sweep"
    missing += f" in experiment {experiment!r} at {uri}"
    if not holds_runs(uri):  # opening it would make an empty store
        raise SweepNotFound(f"{missing}: it holds no sweeps yet")
    try:
        tracker = Tracker(uri, experiment, artifact_root, create=False)
    except SweepNotFound:
        raise SweepNotFound(missing) from None
    run = tracker.find_sweep(sweep)
    if run is None:
        raise SweepNotFound(missing)
    tracker.sweep_run_id = run.info.run_id
    return tracker, run
