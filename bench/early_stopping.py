"""Does early stopping save compute without losing the front?

Two sweeps of the demo teacher with the same sampler, seeds and `first:` points: one runs every
trial to the end (`scheduler.name=fifo`), the other stops trials with the scheduler named by
`--scheduler` (`asha`, the default space's, judges at its rungs; `pareto`, the older rule, at
every `train.eval_every` steps). Compute is trial-seconds (the summed wall time of the trial runs
in MLflow) and steps trained; quality is the hypervolume of the final front. Both are printed
as ratios, scheduler over fifo.

    python -m bench.early_stopping --trials 16                # asha against fifo
    python -m bench.early_stopping --scheduler pareto --set train.eval_every=125
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from bench.common import DEFAULT_SPACE, REPO


def run_sweep(space: Path, scheduler: str, trials: int, overrides: list[str]) -> dict:
    """One sweep in a fresh store; its trial-seconds, hypervolume, outcomes and wall time."""
    with tempfile.TemporaryDirectory() as store:
        sets = [*overrides, f"scheduler.name={scheduler}", f"trials={trials}"]
        command = [sys.executable, "-m", "search.cli", "run", str(space), "--store", store]
        command += [arg for s in sets for arg in ("--set", s)]
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        return {"wall": wall, **_sweep_record(Path(store))}


def _sweep_record(store: Path) -> dict:
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parent = next(r for r in runs if r.data.tags.get("shrink_sweep.kind") == "sweep")
    trials = [r for r in runs if r.data.tags.get("shrink_sweep.kind") == "trial"]
    seconds = sum((r.info.end_time - r.info.start_time) / 1000 for r in trials)
    # Steps trained: the compute measure that the machine's other load does not move.
    steps = sum(
        max(m.step for m in client.get_metric_history(r.info.run_id, "rougeL")) for r in trials
    )
    outcomes = [r.data.tags.get("shrink_sweep.outcome") for r in trials]
    return {
        "trial_seconds": seconds,
        "steps": steps,
        "hypervolume": parent.data.metrics["hypervolume"],
        "front_size": int(parent.data.metrics["front_size"]),
        "stopped": outcomes.count("stopped"),
        "finished": outcomes.count("finished"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", type=Path, default=DEFAULT_SPACE)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--scheduler", default="asha", choices=["asha", "pareto"])
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="KEY=VALUE")
    args = parser.parse_args(argv)
    overrides = args.overrides
    print(f"{args.trials} trials each; settings {overrides}", flush=True)
    results = {}
    for scheduler in ("fifo", args.scheduler):
        results[scheduler] = result = run_sweep(args.space, scheduler, args.trials, overrides)
        print(
            f"{scheduler:6}: {result['trial_seconds']:7.0f} trial-s, {result['steps']} steps,"
            f" wall {result['wall']:5.0f} s,"
            f" hypervolume {result['hypervolume']:.4g}, front {result['front_size']},"
            f" {result['finished']} finished, {result['stopped']} stopped",
            flush=True,
        )
    fifo, other, name = results["fifo"], results[args.scheduler], args.scheduler
    print(f"trial-seconds {name}/fifo = {other['trial_seconds'] / fifo['trial_seconds']:.3f}")
    print(f"steps trained {name}/fifo = {other['steps'] / fifo['steps']:.3f}")
    print(f"hypervolume   {name}/fifo = {other['hypervolume'] / fifo['hypervolume']:.3f}")


if __name__ == "__main__":
    main()
