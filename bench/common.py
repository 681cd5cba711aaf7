"""What the benchmarks share: the default sweep's inputs, and trials run without Ray or MLflow."""

from __future__ import annotations

import csv
import multiprocessing
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from search.driver.preflight import Prepared, prepare
from search.record.paths import SweepPaths
from search.record.tracker import Tracker
from search.space.config import SweepConfig, load_config
from search.space.params import param_values
from search.space.suggest import plan
from trainables.config import TrialConfig
from trainables.trial import TrialResult, run_trial

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SPACE = REPO / "space.yaml"


def fixed_train_values(config: SweepConfig) -> dict[str, Any]:
    """The sweep's training settings, each as its single value.

    Raises:
        ValueError: a training setting is searched, so a table of layer counts would mix budgets.
    """
    values = {}
    for name, param in vars(config.train).items():
        options = param_values(param)
        if options is None or len(options) != 1:
            raise ValueError(f"train.{name} is searched; fix it for a benchmark")
        values[name] = options[0]
    return values


def trial_config(
    config: SweepConfig, prepared: Prepared, encoder: int, decoder: int, strategy: str = "sft"
) -> TrialConfig:
    """The trial the sweep would run for this many layers a side."""
    values = {"strategy": strategy, "encoder": encoder, "decoder": decoder}
    return plan({**fixed_train_values(config), **values}, prepared.parent_layers)


def run_plain(config: SweepConfig, prepared: Prepared, trial: TrialConfig) -> TrialResult:
    """One trial as a plain function call: no Ray, no MLflow, the model saved to a temp dir."""
    threads = max(1, int(config.resources.cpus))
    with tempfile.TemporaryDirectory() as tmp:
        return run_trial(
            trial,
            prepared.base,
            prepared.data,
            config.decoding,
            save_dir=Path(tmp) / "model",
            threads=threads,
        )


def prepare_default(space: Path = DEFAULT_SPACE, overrides: list[str] = ()) -> tuple:
    """Load `space` and prepare its model and data once (pseudo-labels, if a trial may use them,
    come from the repo's local store, as the default sweep's do); returns (config, prepared,
    seconds)."""
    start = time.perf_counter()
    config = load_config(space, list(overrides))
    cache = SweepPaths(REPO / "mlflow").pseudo_labels
    return config, prepare(config, None, cache, progress=True), time.perf_counter() - start


def latest_sweep(tracker: Tracker) -> tuple[Any, list[tuple[dict[str, Any], Any]]]:
    """The latest sweep's MLflow run in `tracker`, and each of its trials as (row, run info),
    in the order they started."""
    sweep = tracker.find_sweep()
    tracker.sweep_run_id = sweep.info.run_id
    trials = [(row, tracker.run_info(row["run_id"])) for row in tracker.trials.rows(None)]
    return sweep, sorted(trials, key=lambda trial: trial[1].start_time)


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one row, writing the header first into a new file (so a run can resume)."""
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


Row = dict[str, Any]


def measure_in_pool(
    table: Path,
    todo: Sequence[tuple],
    measure: Callable[..., Row | list[Row]],
    describe: Callable[[list[Row]], str],
    jobs: int,
    setup: tuple[Callable[..., None], tuple],
) -> None:
    """Run `measure(*task)` for every task of `todo`, `jobs` at a time in spawned processes
    (each prepared once by `setup`: a function and its arguments), appending a task's row(s)
    to `table` as soon as it finishes, so an interrupted run resumes where it stopped, and
    printing `describe(rows)`."""
    initializer, initargs = setup
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        jobs, mp_context=context, initializer=initializer, initargs=initargs
    ) as pool:
        futures = [pool.submit(measure, *task) for task in todo]
        for future in as_completed(futures):
            result = future.result()
            rows = result if isinstance(result, list) else [result]
            for row in rows:
                append_row(table, row)
            print(describe(rows), flush=True)
