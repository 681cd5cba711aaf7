"""The MLflow store a sweep is recorded in: where it is, whether it can be used, what it holds,
and the links to its pages; and the tags that name a sweep's runs in it.

One parent run per sweep, one child run per trial nested under it (`mlflow.parentRunId`). The
driver is the only writer: SQLite takes no concurrent writers and cluster nodes share no disk.
The checks of the stores a sweep writes to (MLflow's and the Optuna study's) live here too.
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
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
# Where the preparation's work ran: "on 2 workers (cuda:0) on 2 nodes", or the file the
# pseudo-labels were read from.
SCREEN_WHERE_TAG = "shrink_sweep.screen_where"
PSEUDO_LABELS_TAG = "shrink_sweep.pseudo_labels"
# What `train.targets: auto` chose and why ("pseudo: the teacher's own summaries score ...").
TARGETS_TAG = "shrink_sweep.targets"
# The base model's own summaries of the evaluation split, scored as a trial is: the sweep run's
# metrics TEACHER_PREFIX + rouge1 / rouge2 / rougeL / rougeLsum / words, and reference_words.
TEACHER_PREFIX = "teacher_"
PARENT_TAG = "mlflow.parentRunId"
# MLflow 3 keeps an experiment's kind in this tag; "custom_model_development" is its
# model-training kind (the UI's "Model training" side), "genai_development" its GenAI one.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
# MLflow 3.17's UI opens an experiment in the view of its sidebar switch (GenAI by default, in a
# fresh browser) whatever the kind tag says; this query parameter sets the switch.
TRAINING_VIEW = "workflowType=machine_learning"
LOCAL_UI = "http://127.0.0.1:5000"  # where `shrink-sweep ui` serves by default


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
    base = where.rstrip("/") if is_server(where) else LOCAL_UI
    page = f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{page}/artifacts/{artifact}?{TRAINING_VIEW}" if artifact else f"{page}?{TRAINING_VIEW}"


def experiment_url(base: str, experiment_id: str) -> str:
    """An experiment's page in the MLflow UI at `base`, in the model-training (runs) view."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}?{TRAINING_VIEW}"


def serve_command(uri: str, store: Path) -> str:
    """The command that serves the MLflow UI of `uri`: none for a server (it serves its own)."""
    return "" if is_server(uri) else f"shrink-sweep ui --store {store}"


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


def is_server(uri: str) -> bool:
    """Whether `uri` is a tracking server's (which stores artifacts and serves a UI itself)."""
    return uri.startswith(("http://", "https://"))
