"""An export's place in MLflow: the exported directory logged as an MLflow model of the sweep's
parent run, and registered as a new version of a named model with an alias.

An export is logged on the sweep's parent run, not in a child run: child runs of a sweep are
its trials, and code that counts or lists them (resuming, the front) reads every child.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from search.record.runs import SweepRecord
from search.record.store import TrackingError


class ModelRegistry:
    """Logging and registering a sweep's exported models."""

    def __init__(self, record: SweepRecord) -> None:
        self.record = record

    def log(
        self,
        directory: Path,
        name: str,
        code: Path,
        example: str,
        requirements: list[str],
    ) -> str:
        """Log an exported model directory as an MLflow model of the sweep's parent run.

        The MLflow model is a pyfunc whose code is `code` (a "models from code" file that loads
        `directory` from its artifact `model_dir`), with a string-in, string-out signature and
        `example` as its input example, which MLflow runs once to check that it serves. The
        pip requirements are given, so MLflow infers nothing (and fetches nothing).

        Args:
            directory: The export directory, stored whole as the artifact `model_dir`.
            name: The logged model's name.
            code: The pyfunc's code file (`search/export/mlflow_model.py`).
            example: A source text, the input example.
            requirements: The model's pip requirements, pinned.

        Returns:
            The logged model's id (`models:/<id>` loads it).

        Raises:
            TrackingError: The model cannot be logged (artifacts not stored, example fails).
        """
        import mlflow
        from mlflow.entities import LoggedModelStatus
        from mlflow.exceptions import MlflowException
        from mlflow.models import Model, ModelSignature
        from mlflow.types import ColSpec, Schema

        # As `code`'s type hints (list[str] -> list[str]) give it; stated, so a code file
        # whose hints drifted is warned about at once.
        signature = ModelSignature(Schema([ColSpec("string")]), Schema([ColSpec("string")]))
        try:
            # Created here, in the sweep's experiment: MLflow's fluent logging would put it
            # in the active experiment, the Default one.
            model_id = self.record.client.create_logged_model(
                self.record.experiment_id, name, source_run_id=self.record.sweep_run_id
            ).model_id
            with _global_tracking_uri(self.record.uri), _mlflow_quiet():
                Model.log(
                    artifact_path=None,
                    flavor=mlflow.pyfunc,
                    run_id=self.record.sweep_run_id,
                    model_id=model_id,
                    python_model=str(code),
                    artifacts={"model_dir": str(directory)},
                    signature=signature,
                    input_example=[example],
                    pip_requirements=requirements,
                )
            self.record.client.finalize_logged_model(model_id, LoggedModelStatus.READY)
        except (MlflowException, OSError) as err:
            raise TrackingError(
                f"cannot log {directory} to MLflow at {self.record.uri}: {err}"
            ) from err
        return model_id

    def register(
        self,
        name: str,
        model_id: str,
        *,
        alias: str,
        tags: Mapping[str, str],
        description: str,
    ) -> str:
        """Register a logged model as a new version of model `name` and point `alias` at it.

        The sweep's parent run is tagged with the version, so the run shows what was shipped.

        Args:
            name: The registered model, created if new.
            model_id: The logged model (`log`).
            alias: The alias that moves to the new version, e.g. "best-tradeoff".
            tags: Tags of the version.
            description: The version's description.

        Returns:
            The new version number, as a string.

        Raises:
            TrackingError: The registry refuses (e.g. a tracking URI without a model registry).
        """
        from mlflow.exceptions import MlflowException

        try:
            self._ensure_registered_model(name)
            # The registry finds a `models:/` source's logged model through MLflow's global
            # tracking URI, not this client's.
            with _global_tracking_uri(self.record.uri):
                version = self.record.client.create_model_version(
                    name,
                    f"models:/{model_id}",
                    run_id=self.record.sweep_run_id,
                    tags=dict(tags),
                    description=description,
                    model_id=model_id,
                ).version
            self.record.client.set_registered_model_alias(name, alias, version)
        except MlflowException as err:
            raise TrackingError(
                f"cannot register model {name!r} at {self.record.uri}: {err}"
            ) from err
        shipped = f"{name} v{version} @{alias}"
        self.record.client.set_tag(self.record.sweep_run_id, "shrink_sweep.exported", shipped)
        return str(version)

    def _ensure_registered_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.record.client.get_registered_model(name)
        except MlflowException:
            self.record.client.create_registered_model(
                name, description="Exported by shrink-sweep."
            )


@contextlib.contextmanager
def _global_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API (model logging) at `uri`, the global default restored afterwards."""
    import mlflow

    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


@contextlib.contextmanager
def _mlflow_quiet() -> Iterator[None]:
    """MLflow's INFO lines and download bars off while it logs a model: the export prints its
    own progress; MLflow's warnings still show."""
    import logging

    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

    logger = logging.getLogger("mlflow")
    level, bar = logger.level, os.environ.get(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name)
    logger.setLevel(logging.WARNING)
    os.environ[MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name] = "false"
    try:
        yield
    finally:
        logger.setLevel(level)
        if bar is None:
            os.environ.pop(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name, None)
        else:
            os.environ[MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name] = bar
