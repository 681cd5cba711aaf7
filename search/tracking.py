"""Everything shrink-sweep writes to or reads from MLflow; no other module imports mlflow.

One parent run per sweep, one child run per trial nested under it (`mlflow.parentRunId`). The
driver is the only writer: SQLite takes no concurrent writers and cluster nodes share no disk.
The checks of the stores a sweep writes to (MLflow's and the Optuna study's) live here too.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KIND_TAG = "shrink_sweep.kind"  # "sweep" or "trial"
SWEEP_TAG = "shrink_sweep.sweep"  # the sweep's name, on the parent and every child
TRIAL_TAG = "shrink_sweep.trial_id"  # Ray Tune's trial id, on each child
OUTCOME_TAG = "shrink_sweep.outcome"  # finished, failed, stopped, running
# On a sweep extended with more trials: the Ray Tune experiment that runs them (a sweep's first
# experiment is named as the sweep) and the trials it now has in all.
TUNE_EXPERIMENT_TAG = "shrink_sweep.tune_experiment"
TRIALS_TAG = "shrink_sweep.trials"
SCREEN_PICKS_TAG = "shrink_sweep.screen_picks"  # the students the screen had trained first
PARENT_TAG = "mlflow.parentRunId"
# MLflow 3 keeps an experiment's kind in this tag; "custom_model_development" is its
# model-training kind (the UI's "Model training" side), "genai_development" its GenAI one.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
# MLflow 3.17's UI opens an experiment in the view of its sidebar switch (GenAI by default, in a
# fresh browser) whatever the kind tag says; this query parameter sets the switch.
TRAINING_VIEW = "workflowType=machine_learning"
LOCAL_UI = "http://127.0.0.1:5000"  # where `shrink-sweep ui` serves by default
_INTERNAL = ("mlflow.", "shrink_sweep.")

# MLflow knows FINISHED, FAILED and KILLED; "stopped early" is KILLED plus the outcome tag.
# An infeasible proposal (it broke a constraint known before training) never ran: KILLED too.
_STATUS = {"finished": "FINISHED", "failed": "FAILED", "stopped": "KILLED", "infeasible": "KILLED"}


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, unwritable directory)."""


class SweepNotFound(TrackingError):
    """The store holds no such sweep (or no sweep at all)."""


def default_uri(store_dir: Path) -> str:
    """SQLite in the local store directory (`./mlflow/` by default)."""
    return f"sqlite:///{Path(store_dir).resolve() / 'mlflow.db'}"


def resolve_uri(uri: str | None, store_dir: Path) -> str:
    """`--tracking-uri`, else `MLFLOW_TRACKING_URI`, else the local SQLite store."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri(store_dir)


def holds_runs(uri: str) -> bool:
    """Whether the tracking store may hold runs: False for a local SQLite store not made yet
    (opening it would make it)."""
    if not uri.startswith("sqlite:///"):
        return True
    return Path(uri.removeprefix("sqlite:///")).is_file()


def check_store(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any work, if the tracking store cannot be reached or written.

    Raises:
        TrackingError: naming the URI and what went wrong.
    """
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as reply:
                if reply.status != 200:
                    raise TrackingError(f"tracking server {uri} answered HTTP {reply.status}")
        except urllib.error.HTTPError as err:
            raise TrackingError(
                f"tracking server {uri} answered HTTP {err.code} to /health: "
                "is it an MLflow tracking server?"
            ) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise TrackingError(f"tracking server {uri} is unreachable: {reason}") from None
        return
    if uri.startswith("sqlite:///"):
        _check_writable(Path(uri.removeprefix("sqlite:///")).parent, f"tracking store {uri}")
    elif "://" not in uri or uri.startswith("file://"):
        _check_writable(Path(uri.removeprefix("file://")), f"tracking store {uri}")


def check_study_storage(url: str, timeout: int = 5) -> None:
    """Fail fast, before any work, if Optuna cannot keep the sweep's study at `url`.

    A SQLite file must be in a writable directory (the file itself is not created here); a
    database server must answer, so that a cluster's shared study is known to work.

    Args:
        url: a SQLAlchemy database URL: `sqlite:///path/optuna.db`, `postgresql://host/db`...
        timeout: seconds to wait for a database server.

    Raises:
        TrackingError: not a database URL, no driver installed for it, an unwritable SQLite
            directory, or a server that does not answer (its password is never shown).
    """
    import sqlalchemy
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    try:
        parsed = sqlalchemy.make_url(url)
    except ArgumentError:
        raise TrackingError(
            f"Optuna storage {url!r} is not a database URL "
            "(e.g. sqlite:///optuna.db or postgresql://user@host/optuna)"
        ) from None
    what = f"Optuna storage {shown_url(url)}"
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _check_writable(Path(parsed.database).resolve().parent, what)
        return
    connect_args = {"connect_timeout": timeout} if backend in ("mysql", "postgresql") else {}
    try:
        engine = sqlalchemy.create_engine(parsed, connect_args=connect_args)
    except (ImportError, NoSuchModuleError) as err:
        raise TrackingError(f"{what}: no database driver for it is installed ({err})") from None
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as err:
        reason = (str(getattr(err, "orig", err)).strip().splitlines() or ["no answer"])[0]
        raise TrackingError(f"{what} cannot be reached: {reason}") from None
    finally:
        engine.dispose()


def shown_url(url: str) -> str:
    """A database URL as it may be printed or logged: without its password."""
    import sqlalchemy
    from sqlalchemy.exc import ArgumentError

    try:
        return sqlalchemy.make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def run_url(where: str, experiment_id: str, run_id: str, artifact: str = "") -> str:
    """A run's page in the MLflow UI, in the UI's model-training view.

    Args:
        where: The tracking URI: a server (`http://HOST:PORT`) serves its own UI; for a local
            store, the UI `shrink-sweep ui` serves by default (`LOCAL_UI`). A UI's own
            address (`http://127.0.0.1:PORT`) is taken as it is.
        experiment_id: The run's experiment.
        run_id: The run.
        artifact: An artifact to open on the run's page, e.g. "pareto.html".

    Returns:
        The URL, e.g. http://127.0.0.1:5000/#/experiments/1/runs/abc?workflowType=machine_learning
    """
    base = where.rstrip("/") if _is_server(where) else LOCAL_UI
    page = f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{page}/artifacts/{artifact}?{TRAINING_VIEW}" if artifact else f"{page}?{TRAINING_VIEW}"


def experiment_url(base: str, experiment_id: str) -> str:
    """An experiment's page in the MLflow UI at `base`, in the model-training (runs) view."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}?{TRAINING_VIEW}"


def serve_command(uri: str, store: Path) -> str:
    """The command that serves the MLflow UI of `uri`: none for a server (it serves its own)."""
    return "" if _is_server(uri) else f"shrink-sweep ui --store {store}"


@dataclass(frozen=True)
class SweepRef:
    """Where a sweep's parent run is, for links to it."""

    name: str
    experiment_id: str
    run_id: str
    has_plot: bool  # pareto.html among its artifacts


def latest_sweep(uri: str) -> SweepRef | None:
    """The sweep started last in any experiment of the store, or None if it holds none."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments, f"tags.`{KIND_TAG}` = 'sweep'", max_results=1,
        order_by=["attributes.start_time DESC"],
    )  # fmt: skip
    if not runs:
        return None
    run = runs[0]
    has_plot = "pareto.html" in {a.path for a in client.list_artifacts(run.info.run_id)}
    return SweepRef(run.info.run_name, run.info.experiment_id, run.info.run_id, has_plot)


def mark_training_experiments(uri: str) -> list[str]:
    """Tag every experiment that holds a sweep, and has no kind yet, as a model-training one
    (`EXPERIMENT_KIND_TAG`): stores written before shrink-sweep tagged its experiments.

    Returns:
        The ids of the experiments tagged now.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    marked = []
    for experiment in client.search_experiments():
        if EXPERIMENT_KIND_TAG in experiment.tags:
            continue
        query = f"tags.`{KIND_TAG}` = 'sweep'"
        if client.search_runs([experiment.experiment_id], query, max_results=1):
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
            marked.append(experiment.experiment_id)
    return marked


def _check_writable(directory: Path, what: str) -> None:
    """Raise TrackingError unless `directory` exists writable or could be made; creates nothing,
    so a command refused for other bad input leaves no empty store behind."""
    existing = next(p for p in (directory, *directory.parents) if p.exists())
    if not existing.is_dir():
        raise TrackingError(f"{what}: {directory} is not writable ({existing} is a file)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TrackingError(f"{what}: {directory} is not writable (Permission denied)")


def store_lock(url: str) -> Any:
    """A lock beside a SQLite database, so that two sweeps starting at once on a new store do
    not both create its tables (MLflow's and Optuna's migrations are not concurrency-safe)."""
    from filelock import FileLock

    if not url.startswith("sqlite:///"):
        return contextlib.nullcontext()
    database = Path(url.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)  # the store is made on first use only
    return FileLock(f"{database}.lock", timeout=120)


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


class Tracker:
    """A sweep's view of MLflow: its parent run and its trial runs."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        artifact_root: Path | None = None,
        create: bool = True,
    ) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri
        with store_lock(uri):  # the first use of a SQLite store creates its tables
            self.client = MlflowClient(tracking_uri=uri)
            self.experiment_id = self._experiment(experiment, artifact_root, create)
        self.sweep_run_id: str | None = None

    def _experiment(self, name: str, artifact_root: Path | None, create: bool) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        if not create:
            raise SweepNotFound(f"no experiment {name!r} at {self.uri}")
        if _is_server(self.uri):  # it stores artifacts itself; a local path is this disk only
            artifact_root = None
        location = (artifact_root / name).resolve().as_uri() if artifact_root else None
        tags = {EXPERIMENT_KIND_TAG: TRAINING_KIND}  # so MLflow shows runs, not GenAI traces
        return self.client.create_experiment(name, artifact_location=location, tags=tags)

    # --- the sweep's parent run ------------------------------------------------------------

    def start_sweep(self, sweep: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=sweep,
            tags={KIND_TAG: "sweep", SWEEP_TAG: sweep, OUTCOME_TAG: "running", **tags},
        )
        self.sweep_run_id = run.info.run_id
        self._log(self.sweep_run_id, params=params)
        return self.sweep_run_id

    def resume_sweep(self, run_id: str) -> None:
        self.sweep_run_id = run_id
        self.client.update_run(run_id, status="RUNNING")
        self.client.set_tag(run_id, OUTCOME_TAG, "running")

    def set_sweep_tags(self, tags: Mapping[str, str]) -> None:
        self.set_trial_tags(self.sweep_run_id, tags)

    def end_sweep(self, outcome: str) -> None:
        self.client.set_tag(self.sweep_run_id, OUTCOME_TAG, outcome)
        self.client.set_terminated(self.sweep_run_id, _STATUS[outcome])

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
        self._log(self.sweep_run_id, metrics=metrics, step=step)

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

    # --- trial runs ------------------------------------------------------------------------

    def start_trial(self, trial_id: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        existing = self.trial_run(trial_id)
        if existing is not None:  # a resumed sweep retries the trial under its old run
            self.client.update_run(existing, status="RUNNING")
            self.client.set_tag(existing, OUTCOME_TAG, "running")
            return existing
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{trial_id}",
            tags={
                KIND_TAG: "trial",
                PARENT_TAG: self.sweep_run_id,
                TRIAL_TAG: trial_id,
                OUTCOME_TAG: "running",
                **tags,
            },
        )
        self._log(run.info.run_id, params=params)
        return run.info.run_id

    def trial_run(self, trial_id: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{PARENT_TAG}` = '{self.sweep_run_id}' and tags.`{TRIAL_TAG}` = '{trial_id}'",
        )
        return runs[0].info.run_id if runs else None

    def run_info(self, run_id: str) -> Any:
        """MLflow's record of a run's life (`RunInfo`): its status, start and end times."""
        return self.client.get_run(run_id).info

    def log_trial_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        self._log(run_id, metrics=metrics, step=step)

    def set_trial_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def end_trial(self, run_id: str, outcome: str, error: str | None = None) -> None:
        if error:
            self.client.log_text(run_id, error, "error.txt")
        self.client.set_tag(run_id, OUTCOME_TAG, outcome)
        self.client.set_terminated(run_id, _STATUS[outcome])

    def settle_trials(self) -> int:
        """End every trial run still open: those left running are stopped, and those a crash
        cut off between `end_trial`'s two writes get the status their outcome names.

        `end_trial` writes the outcome tag first, so a run whose outcome has ended while its
        status still says RUNNING ended as its outcome says. Returns how many were settled.
        """
        query = f"tags.`{PARENT_TAG}` = '{self.sweep_run_id}' and attributes.status = 'RUNNING'"
        runs = _all_runs(self.client, self.experiment_id, query)
        for run in runs:
            outcome = run.data.tags.get(OUTCOME_TAG)
            if outcome in _STATUS:
                self.client.set_terminated(run.info.run_id, _STATUS[outcome])
            else:
                self.end_trial(run.info.run_id, "stopped")
        return len(runs)

    def trial_rows(self, outcome: str | None = "finished") -> list[dict[str, Any]]:
        """Every trial of the sweep as a flat row: id, params, last metrics, outcome, run id."""
        query = f"tags.`{PARENT_TAG}` = '{self.sweep_run_id}'"
        if outcome:
            query += f" and tags.`{OUTCOME_TAG}` = '{outcome}'"
        rows = []
        for run in _all_runs(self.client, self.experiment_id, query):
            row = {"trial": run.data.tags.get(TRIAL_TAG), "run_id": run.info.run_id}
            row["outcome"] = run.data.tags.get(OUTCOME_TAG)
            row.update(run.data.params)
            row.update(run.data.metrics)
            row.update({k: v for k, v in run.data.tags.items() if not k.startswith(_INTERNAL)})
            rows.append(row)
        return sorted(rows, key=lambda r: r["trial"] or "")

    # --- plumbing --------------------------------------------------------------------------

    def _log(
        self,
        run_id: str,
        params: Mapping[str, Any] = {},
        metrics: Mapping[str, float] = {},
        step: int = 0,
    ) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        metric_list = [
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and math.isfinite(v)
        ]
        param_list = [Param(k, _param_text(v)) for k, v in params.items()]
        for i in range(0, max(len(metric_list), len(param_list)), 100):  # MLflow's batch limit
            self.client.log_batch(run_id, metric_list[i : i + 100], param_list[i : i + 100])

    # --- export: model registry ------------------------------------------------------------
    # An export is logged on the sweep's parent run, not in a child run: child runs of a sweep
    # are its trials, and code that counts or lists them (resuming, the front) reads every child.

    def log_model(
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
            model_id = self.client.create_logged_model(
                self.experiment_id, name, source_run_id=self.sweep_run_id
            ).model_id
            with _global_tracking_uri(self.uri), _mlflow_quiet():
                Model.log(
                    artifact_path=None,
                    flavor=mlflow.pyfunc,
                    run_id=self.sweep_run_id,
                    model_id=model_id,
                    python_model=str(code),
                    artifacts={"model_dir": str(directory)},
                    signature=signature,
                    input_example=[example],
                    pip_requirements=requirements,
                )
            self.client.finalize_logged_model(model_id, LoggedModelStatus.READY)
        except (MlflowException, OSError) as err:
            raise TrackingError(f"cannot log {directory} to MLflow at {self.uri}: {err}") from err
        return model_id

    def register_model(
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
            model_id: The logged model (`log_model`).
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
            with _global_tracking_uri(self.uri):
                version = self.client.create_model_version(
                    name,
                    f"models:/{model_id}",
                    run_id=self.sweep_run_id,
                    tags=dict(tags),
                    description=description,
                    model_id=model_id,
                ).version
            self.client.set_registered_model_alias(name, alias, version)
        except MlflowException as err:
            raise TrackingError(f"cannot register model {name!r} at {self.uri}: {err}") from err
        shipped = f"{name} v{version} @{alias}"
        self.client.set_tag(self.sweep_run_id, "shrink_sweep.exported", shipped)
        return str(version)

    def _ensure_registered_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name, description="Exported by shrink-sweep.")


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


def _is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _all_runs(client: Any, experiment_id: str, query: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], query, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _param_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)[:6000]  # MLflow's limit on a param value
