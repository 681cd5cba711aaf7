"""optuna-dashboard reads a sweep's study: its WSGI app, in this process, over the `optuna.db`
a real tiny sweep left in its store, answers its JSON API with the sweep's study and trials
(the README's `optuna-dashboard sqlite:///mlflow/optuna.db` serves the same app)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
from test_sweep import sweep_runs

from search.record.paths import SweepPaths

optuna_dashboard = pytest.importorskip(
    "optuna_dashboard", reason="optuna-dashboard is not installed (pip install -e '.[dev]')"
)
pytestmark = pytest.mark.slow  # a real sweep, through Ray


@pytest.fixture(scope="module")
def store(tiny_sweep_store: Path) -> Path:
    """The store of the tiny sweep the slow tests share (conftest.py)."""
    return tiny_sweep_store


def get(app: Any, path: str, query: str = "") -> tuple[str, bytes]:
    """One GET request to a WSGI app; returns the status line and the body."""
    environ: dict[str, Any] = {"PATH_INFO": path, "QUERY_STRING": query}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(app(environ, lambda line, headers, exc_info=None: status.append(line)))
    return status[0], body


def test_the_dashboard_lists_the_sweep_study_and_its_trials(store: Path):
    url = SweepPaths(store).optuna_url  # where `shrink-sweep run` keeps the study
    assert url == f"sqlite:///{store.resolve() / 'optuna.db'}"
    app = optuna_dashboard.wsgi(url)
    _, parent, children = sweep_runs(store)

    status, body = get(app, "/api/studies")
    assert status == "200 OK"
    (summary,) = json.loads(body)["study_summaries"]
    assert summary["study_name"] == parent.info.run_name  # the study is named by its sweep
    assert summary["directions"] == ["maximize", "minimize"]  # rougeL up, params down

    status, body = get(app, f"/api/studies/{summary['study_id']}", "after=0")
    assert status == "200 OK"
    trials = json.loads(body)["trials"]
    study = optuna.load_study(study_name=summary["study_name"], storage=url)
    assert [t["number"] for t in trials] == [t.number for t in study.trials]
    assert [t["state"].upper() for t in trials] == [t.state.name for t in study.trials]
    # Every trial MLflow recorded as finished is in the dashboard with the scores MLflow has.
    shown = {tuple(t["values"]) for t in trials if t["state"] == "Complete"}
    finished = [c for c in children if c.data.tags["shrink_sweep.outcome"] == "finished"]
    assert finished
    for run in finished:
        assert (run.data.metrics["rougeL"], run.data.metrics["params"]) in shown

    status, body = get(app, "/dashboard")
    assert status == "200 OK" and b"<html" in body.lower()
