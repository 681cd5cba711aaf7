"""Nothing lost: failing, NaN and killed trials are recorded and the sweep goes on; a killed or
interrupted driver resumes without rerunning finished trials."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.exc import OperationalError
from test_sweep import shrink_sweep, sweep_runs, write_space

from search.front.pareto import pareto_front

FAIL, COMPLETE = optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE
ALL_DECODER_DROPPED = {"strategy": "mask"} | {f"decoder_keep_{i}": False for i in range(3)}


def faulty_space(tmp_path: Path, model: Path, first: list[dict], **changes) -> Path:
    """Every trial is a configured first point, so which trial does what is known."""
    return write_space(
        tmp_path,
        model,
        trials=len(first),
        first=first,
        layers={"encoder": [2, 4], "decoder": [1, 3], "strategy": ["sft", "mask"]},
        train={
            "learning_rate": [1.0e-2, 1.0e30],
            "max_steps": [8, 100000],
            "batch_size": 8,
            "eval_every": 4,
        },
        **changes,
    )


def study_states(store: Path, sweep: str) -> list:
    storage = f"sqlite:///{store / 'optuna.db'}"
    return [t.state for t in optuna.load_study(study_name=sweep, storage=storage).trials]


def wait_for(condition, timeout: float = 300, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except (MlflowException, OperationalError):  # the sweep writes the store meanwhile
            value = None
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def trial_runs(store: Path) -> list:
    if not (store / "ray").exists():  # until then the sweep may still be creating its tables
        return []
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], "tags.`shrink_sweep.kind` = 'trial'")
    return list(runs)


def kill_trial_workers(sweep_pid: int) -> int:
    """SIGKILL the sweep's Ray workers that hold a trial, as the OOM killer would.

    Only the sweep's own descendants (its local Ray starts them), so that other sweeps on the
    machine are left alone. A trial's actor is titled `ray::ImplicitFunc.train` only while
    Tune waits on it for a result, `ray::ImplicitFunc` between two results: both count.
    """
    killed = 0
    for proc in psutil.Process(sweep_pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # it may have just ended
            if any("ImplicitFunc" in part for part in proc.cmdline()):
                proc.kill()
                killed += 1
    return killed


@pytest.mark.slow
def test_failed_nan_and_killed_trials_are_recorded_and_the_sweep_goes_on(tmp_path, tiny_t5_path):
    normal = {"encoder": 2, "decoder": 1, "strategy": "sft", "learning_rate": 1.0e-2}
    first = [
        {**ALL_DECODER_DROPPED, "encoder_keep_0": True, "learning_rate": 1.0e-2, "max_steps": 8},
        {**normal, "learning_rate": 1.0e30, "max_steps": 8},  # the loss turns NaN
        {**normal, "max_steps": 8},
        {**normal, "max_steps": 100000},  # killed while it runs
    ]
    space = faulty_space(tmp_path, tiny_t5_path, first)
    sweep = subprocess.Popen(
        [sys.executable, "-m", "search.cli", "run", str(space), "--max-failures", "10"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    store = tmp_path / "mlflow"

    def long_trial_running_alone():
        runs = trial_runs(store)
        long = [r for r in runs if r.data.params.get("max_steps") == "100000"]
        others_done = len(runs) == 4 and all(
            r.data.tags["shrink_sweep.outcome"] != "running" for r in runs if r not in long
        )
        return others_done and long and "rougeL" in long[0].data.metrics

    try:
        wait_for(long_trial_running_alone)
        assert kill_trial_workers(sweep.pid) >= 1
    except BaseException:  # do not leave the sweep running into the next test
        sweep.kill()
        raise
    _, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, err[-3000:]

    client, parent, children = sweep_runs(store)
    by_kind = {}
    for child in children:
        params = child.data.params
        kind = (
            "raises"
            if params["strategy"] == "mask"
            else "nan"
            if params["learning_rate"] == "1e+30"
            else "killed"
            if params["max_steps"] == "100000"
            else "normal"
        )
        by_kind[kind] = child
    assert by_kind["normal"].info.status == "FINISHED"
    for kind, message in [
        ("raises", "InfeasibleError"),
        ("nan", "NonFiniteLossError"),
        ("killed", "actor died unexpectedly"),
    ]:
        run = by_kind[kind]
        assert run.info.status == "FAILED", kind
        assert run.data.tags["shrink_sweep.outcome"] == "failed"
        error = Path(client.download_artifacts(run.info.run_id, "error.txt", str(tmp_path)))
        assert message in error.read_text(), (kind, error.read_text()[-500:])
    assert sorted(study_states(store, parent.info.run_name), key=str) == sorted(
        [FAIL, FAIL, FAIL, COMPLETE], key=str
    )
    assert parent.data.metrics["front_size"] == 1


@pytest.mark.slow
def test_max_failures_stops_the_sweep_and_names_the_error(tmp_path, tiny_t5_path):
    nan = {"encoder": 2, "decoder": 1, "strategy": "sft", "learning_rate": 1.0e30}
    space = faulty_space(tmp_path, tiny_t5_path, [{**nan, "max_steps": 8}] * 6)
    done = shrink_sweep("run", str(space), "--max-failures", "2", cwd=tmp_path)
    assert done.returncode == 1
    assert "stopped after" in done.stderr and "NonFiniteLossError" in done.stderr
    _, parent, children = sweep_runs(tmp_path / "mlflow")
    assert parent.data.tags["shrink_sweep.outcome"] == "failed"
    assert 2 <= len(children) < 6
    assert {c.data.tags["shrink_sweep.outcome"] for c in children} <= {"failed", "stopped"}


def front_of(rows: list[dict]) -> set[str]:
    mask = pareto_front([[float(r["rougeL"]), float(r["params"])] for r in rows], ["max", "min"])
    return {r["trial"] for r, on in zip(rows, mask, strict=True) if on}


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["sigkill", "sigint"])
def test_a_stopped_driver_resumes_without_rerunning_finished_trials(tmp_path, tiny_t5_path, stop):
    train = {"learning_rate": 1.0e-2, "max_steps": 150, "batch_size": 8, "eval_every": 50}
    layers = {"encoder": {"low": 1, "high": 4}, "decoder": {"low": 1, "high": 3}}
    space = write_space(tmp_path, tiny_t5_path, trials=5, train=train, layers=layers)
    sweep = subprocess.Popen(
        [sys.executable, "-m", "search.cli", "run", str(space)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the driver, Ray and the trials
    )
    store = tmp_path / "mlflow"

    def one_finished_one_running():
        outcomes = [r.data.tags["shrink_sweep.outcome"] for r in trial_runs(store)]
        return "finished" in outcomes and "running" in outcomes

    wait_for(one_finished_one_running, every=0.5)
    if stop == "sigkill":  # power loss: nothing gets to clean up
        os.killpg(sweep.pid, signal.SIGKILL)
        sweep.wait(timeout=60)
    else:  # Ctrl-C: running trials are marked stopped and the command says how to resume
        sweep.send_signal(signal.SIGINT)
        _, err = sweep.communicate(timeout=300)
        assert sweep.returncode == 130, err[-3000:]
        assert "shrink-sweep run --resume" in err
        assert "stopped" in {r.data.tags["shrink_sweep.outcome"] for r in trial_runs(store)}
    before = {
        r.data.tags["shrink_sweep.trial_id"]: r
        for r in trial_runs(store)
        if r.data.tags["shrink_sweep.outcome"] == "finished"
    }
    assert before

    resumed = shrink_sweep("run", str(space), "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    client, parent, children = sweep_runs(store)
    assert parent.info.status == "FINISHED"
    # A trial proposed after Tune's last state save, just before a SIGKILL, is never run: its
    # run stays stopped and empty, and the five trials Tune knows all finish.
    never_ran = [c for c in children if c.data.tags["shrink_sweep.outcome"] == "stopped"]
    assert all(not c.data.metrics for c in never_ran) and len(never_ran) <= 1
    children = [c for c in children if c not in never_ran]
    ids = [c.data.tags["shrink_sweep.trial_id"] for c in children]
    assert len(ids) == len(set(ids)) == 5
    assert [c.info.status for c in children] == ["FINISHED"] * 5
    for trial_id, old in before.items():  # finished trials were not run again
        new = next(c for c in children if c.data.tags["shrink_sweep.trial_id"] == trial_id)
        assert new.info.start_time == old.info.start_time
        if old.info.end_time is not None:  # else killed between end's two writes: settled now
            assert new.info.end_time == old.info.end_time
        steps = [m.step for m in client.get_metric_history(new.info.run_id, "rougeL")]
        assert sorted(steps) == [50, 100, 150]
        assert new.data.tags["checkpoint"] == old.data.tags["checkpoint"]
    # Trials finished after the resume sent their weights to the resumed driver's receiver.
    weights = store.resolve() / "ray" / parent.info.run_name / "weights"
    for child, trial_id in zip(children, ids, strict=True):
        assert child.data.tags["checkpoint"] == str(weights / trial_id)
    states = study_states(store, parent.info.run_name)
    assert states.count(COMPLETE) == 5

    table = client.download_artifacts(parent.info.run_id, "pareto.csv", str(tmp_path))
    rows = list(csv.DictReader(io.StringIO(Path(table).read_text())))
    assert len(rows) == 5
    assert {r["trial"] for r in rows if r["on_front"] == "True"} == front_of(rows)
    front = {r["trial"] for r in rows if r["on_front"] == "True"}
    kept = {p.name for p in weights.iterdir() if (p / "model.safetensors").is_file()}
    assert kept == front  # keep_weights: pareto, across the resume


@pytest.mark.slow
def test_a_finished_sweep_extends_and_an_interrupted_extension_resumes(tmp_path, tiny_t5_path):
    train = {"learning_rate": 1.0e-2, "max_steps": 150, "batch_size": 8, "eval_every": 50}
    space = write_space(tmp_path, tiny_t5_path, trials=2, train=train)
    assert shrink_sweep("run", str(space), cwd=tmp_path).returncode == 0
    store = tmp_path / "mlflow"
    client, parent, before = sweep_runs(store)
    sweep = parent.info.run_name

    same = shrink_sweep("run", str(space), "--resume", "--trials", "2", cwd=tmp_path)
    assert same.returncode == 2
    assert f"sweep {sweep} has 2 trials: --trials 2 adds none" in same.stderr

    # Three more trials, interrupted (Ctrl-C) once the first of them has finished.
    more = subprocess.Popen(
        [sys.executable, "-m", "search.cli", "run", str(space), "--resume", "--trials", "5"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    old_ids = {r.info.run_id for r in before}

    def a_new_one_finished_one_running():
        new = [r for r in trial_runs(store) if r.info.run_id not in old_ids]
        outcomes = [r.data.tags["shrink_sweep.outcome"] for r in new]
        return "finished" in outcomes and "running" in outcomes

    wait_for(a_new_one_finished_one_running, every=0.5)
    more.send_signal(signal.SIGINT)
    out, err = more.communicate(timeout=300)
    assert more.returncode == 130, err[-3000:]
    assert f"extending sweep {sweep}: 3 more trials, 5 in all" in out
    assert f"shrink-sweep run --resume {sweep}" in err

    resumed = shrink_sweep("run", str(space), "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stderr == ""  # no library output (MLflow's download bar, for one)
    assert f"resuming sweep {sweep}: 5 trials" in resumed.stdout
    client, parent, after = sweep_runs(store)  # the same sweep: one parent run
    assert parent.info.run_name == sweep and parent.info.status == "FINISHED"
    assert parent.data.tags["shrink_sweep.trials"] == "5"
    # As in any resume, a trial proposed after Tune's last save is never run and stays stopped.
    never_ran = [c for c in after if c.data.tags["shrink_sweep.outcome"] == "stopped"]
    assert all(not c.data.metrics for c in never_ran) and len(never_ran) <= 1
    after = [c for c in after if c not in never_ran]
    assert len(after) == 5 and [c.info.status for c in after] == ["FINISHED"] * 5
    for old in before:  # run once, not again
        (same_run,) = [c for c in after if c.info.run_id == old.info.run_id]
        assert same_run.info.end_time == old.info.end_time
    # One study proposed all five: the extension's sampler saw the first two (and the first:
    # point, 4+3 sft, was not tried again).
    assert study_states(store, sweep).count(COMPLETE) >= 5
    students = [tuple(c.data.params[k] for k in ("encoder", "decoder", "strategy")) for c in after]
    assert students.count(("4", "3", "sft")) == 1
    stored = client.download_artifacts(parent.info.run_id, "space.yaml", str(tmp_path / "dl"))
    assert yaml.safe_load(Path(stored).read_text())["trials"] == 5
    table = client.download_artifacts(parent.info.run_id, "pareto.csv", str(tmp_path / "dl"))
    rows = list(csv.DictReader(io.StringIO(Path(table).read_text())))
    assert len(rows) == 5
    assert {r["trial"] for r in rows if r["on_front"] == "True"} == front_of(rows)


@pytest.mark.slow
def test_two_sweeps_on_one_store_at_once_keep_their_own_runs(tmp_path, tiny_t5_path):
    space = write_space(tmp_path, tiny_t5_path, trials=2)
    command = [sys.executable, "-m", "search.cli", "run", str(space)]
    sweeps = [
        subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for sweep in sweeps:
        _, err = sweep.communicate(timeout=600)
        assert sweep.returncode == 0, err[-3000:]

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    parents = [r for r in runs if r.data.tags["shrink_sweep.kind"] == "sweep"]
    assert len(parents) == 2 and len({p.info.run_name for p in parents}) == 2
    for parent in parents:
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert [c.info.status for c in children] == ["FINISHED"] * 2
        assert parent.info.status == "FINISHED"
        assert study_states(tmp_path / "mlflow", parent.info.run_name) == [COMPLETE] * 2


@pytest.mark.slow
def test_a_sweep_killed_while_labeling_resumes_with_the_shards_it_made(tmp_path):
    """The demo teacher labels 600 sources in 16 shards on 2 workers; a SIGKILL half-way keeps
    the finished shards, and the sweep run again makes only the others, with the labels an
    uninterrupted run makes."""
    space = Path(__file__).resolve().parents[1] / "space.yaml"
    quick = ["--trials", "1", "--set", "data.pseudo_examples=600", "--set", "sampler.screen=0"]
    quick += ["--set", "train.max_steps=2", "--set", "data.max_eval_examples=8"]
    command = [sys.executable, "-m", "search.cli", "run", str(space), *quick]
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    killed.mkdir()
    whole.mkdir()
    sweep = subprocess.Popen(command, cwd=killed, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    cache = killed / "mlflow" / "pseudo-labels"
    wait_for(lambda: len(list(cache.glob("*.shards-*/*.json"))) >= 3, every=0.1)
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait(timeout=60)
    kept = len(list(cache.glob("*.shards-*/*.json")))
    assert 3 <= kept < 16 and not list(cache.glob("*.json"))

    resumed = subprocess.run(command, cwd=killed, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    made = f"pseudo-labels: 600 sources generated on 2 workers (cpu), {kept} of 16 shards kept"
    assert made in resumed.stdout
    assert "the shipped pseudo-labels" in resumed.stdout  # another sample of the same data
    (labels,) = cache.glob("*.json")
    assert not list(cache.glob("*.shards-*"))

    uninterrupted = subprocess.run(command, cwd=whole, capture_output=True, text=True, timeout=900)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    assert "pseudo-labels: 600 sources generated on 2 workers (cpu), kept in" in (
        uninterrupted.stdout
    )
    (expected,) = (whole / "mlflow" / "pseudo-labels").glob("*.json")
    assert expected.name == labels.name
    texts = json.loads(labels.read_text())["texts"]
    assert texts == json.loads(expected.read_text())["texts"] and len(texts) == 600
