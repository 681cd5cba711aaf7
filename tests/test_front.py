"""The sweep's front upkeep (`search.front.rows`): which rows are on it, its reference point and
hypervolume, what it logs to the sweep's run, and which trials' weights it deletes."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest
from tiny import tiny_space

from search.front.plot import TEACHER_NAME
from search.front.rows import front_rows, reference_point, write_front_csv
from search.record.front_log import update_front
from search.space.config import config_from_dict

# (trial, rougeL, params): b and d are dominated, e reports no ROUGE.
TRIALS = [("a", 30.0, 100.0), ("b", 20.0, 200.0), ("c", 40.0, 300.0), ("d", 10.0, 300.0)]


def trial_rows(weights: Path | None = None) -> list[dict]:
    rows = []
    for trial, rouge, params in TRIALS:
        row = {"trial": trial, "run_id": f"run-{trial}", "rougeL": rouge, "params": params}
        if weights is not None:
            row["checkpoint"] = str(weights / trial)
        rows.append(row)
    return [*rows, {"trial": "e", "run_id": "run-e", "params": 50.0}]


class FakeTrialRuns:
    """The trials by outcome (one stopped), as `Tracker.trials` gives them."""

    def __init__(self, rows: list[dict]) -> None:
        self.finished = rows

    def rows(self, outcome: str | None = "finished") -> list[dict]:
        if outcome == "stopped":
            return [{"trial": "f", "run_id": "run-f"}]
        return [dict(r) for r in self.finished] if outcome == "finished" else []


class FakeTracker:
    """What `update_front` asks of a `Tracker`: the trials by outcome (one stopped), the
    sweep's name and metrics (the teacher's own score among them), and a place to log."""

    sweep_run_id = "sweep-run"

    def __init__(self, rows: list[dict], teacher_rouge: float | None = 36.5) -> None:
        self.trials = FakeTrialRuns(rows)
        self.metrics: list[tuple[dict, int]] = []
        self.artifacts: dict[str, str] = {}
        self.teacher_rouge = teacher_rouge

    def sweep_metrics(self) -> dict[str, float]:
        scored = {"teacher_rougeL": self.teacher_rouge, "teacher_words": 6.0}
        return {"prepare_seconds": 3.0, **(scored if self.teacher_rouge is not None else {})}

    def run_info(self, run_id: str) -> SimpleNamespace:
        assert run_id == self.sweep_run_id
        return SimpleNamespace(run_name="tiny-20261202-0000")

    def log_sweep_metrics(self, metrics: dict, step: int) -> None:
        self.metrics.append((metrics, step))

    def log_sweep_artifact(self, path: Path) -> None:
        self.artifacts[path.name] = path.read_text()


def sweep_config(**changes):
    return config_from_dict(tiny_space("tiny-model", **changes))


def test_front_rows_keeps_the_front_best_first_and_skips_rows_without_an_objective():
    front = front_rows(trial_rows(), [("rougeL", "max"), ("params", "min")])
    assert [r["trial"] for r in front] == ["c", "a"]
    assert front_rows([], [("rougeL", "max")]) == []


def test_reference_point_uses_the_config_then_the_base_model_then_far_beyond():
    objectives = [
        {"metric": "rougeL", "mode": "max"},
        {"metric": "params", "mode": "min"},
        {"metric": "size_mb", "mode": "min"},
    ]
    assert reference_point(sweep_config(objectives=objectives), 500) == [0.0, 500.0, 1e12]
    configured = sweep_config(objectives=objectives, reference_point={"size_mb": 4.0})
    assert reference_point(configured, 500) == [0.0, 500.0, 4.0]


def test_update_front_marks_logs_and_drops_the_dominated_weights(tmp_path):
    weights = tmp_path / "weights"
    for trial, *_ in TRIALS:
        (weights / trial).mkdir(parents=True)
    tracker = FakeTracker(trial_rows(weights))

    rows, hv = update_front(tracker, sweep_config(), parent_params=500)

    assert {r["trial"]: r["on_front"] for r in rows} == {
        "a": True,
        "b": False,
        "c": True,
        "d": False,
    }
    # Reference (0, 500): a covers 30 x 400, c adds 10 x 200 above it.
    assert hv == pytest.approx(30 * 400 + 10 * 200)
    assert tracker.metrics == [({"hypervolume": hv, "front_size": 2}, 4)]
    table = list(csv.DictReader(tracker.artifacts["pareto.csv"].splitlines()))
    assert [(r["trial"], r["on_front"]) for r in table] == [
        ("a", "True"),
        ("c", "True"),
        ("b", "False"),
        ("d", "False"),
    ]
    html = tracker.artifacts["pareto.html"]
    # The title: the sweep, its objectives, its trials by outcome and the hypervolume.
    assert "tiny-20261202-0000: rougeL (max) vs params (min)" in html
    assert "4 finished, 2 on the front, 1 stopped; hypervolume 1.4e+04" in html
    assert "knee (export's pick)" in html
    # The teacher's own summaries, at the base model's size: a reference point, on no front.
    assert TEACHER_NAME in html and "rougeL: 36.5" in html and "params: 500" in html
    assert sorted(p.name for p in weights.iterdir()) == ["a", "c"]


def test_update_front_keeps_every_weight_unless_told_and_is_empty_without_rows(tmp_path):
    weights = tmp_path / "weights"
    for trial, *_ in TRIALS:
        (weights / trial).mkdir(parents=True)
    rows, _ = update_front(FakeTracker(trial_rows(weights)), sweep_config(keep_weights="all"), 500)
    assert sum(r["on_front"] for r in rows) == 2
    assert sorted(p.name for p in weights.iterdir()) == ["a", "b", "c", "d"]

    tracker = FakeTracker([])
    assert update_front(tracker, sweep_config(), 500) == ([], 0.0)
    assert tracker.metrics == [] and tracker.artifacts == {}


def test_one_objective_or_three_each_get_a_plot():
    one = sweep_config(objectives=[{"metric": "params", "mode": "min"}])
    tracker = FakeTracker(trial_rows())
    rows, _ = update_front(tracker, one, 500)
    assert [r["trial"] for r in rows if r["on_front"]] == ["e"]  # 50 parameters
    assert "params (min)" in tracker.artifacts["pareto.html"]
    three = [{"metric": "rougeL", "mode": "max"}, {"metric": "params", "mode": "min"}]
    three.append({"metric": "latency_ms", "mode": "min"})
    timed = [{**row, "latency_ms": 10.0 + i} for i, row in enumerate(trial_rows()[:4])]
    tracker = FakeTracker(timed)
    update_front(tracker, sweep_config(objectives=three), 500)
    assert '"colorbar":{"title":{"text":"latency_ms"}}' in tracker.artifacts["pareto.html"]


def test_write_front_csv_puts_the_front_first_and_keeps_extra_columns(tmp_path):
    rows = [
        {"trial": "b", "on_front": False, "rougeL": 1.0, "run_id": "x", "seed": 3},
        {"trial": "a", "on_front": True, "rougeL": 2.0, "run_id": "y", "seed": 4},
    ]
    path = write_front_csv(rows, tmp_path / "front.csv")
    table = list(csv.DictReader(path.read_text().splitlines()))
    assert [(r["trial"], r["seed"]) for r in table] == [("a", "4"), ("b", "3")]
    assert "run_id" not in table[0]
