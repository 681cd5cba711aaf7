"""Start-up: seconds from the command to the first training step, and what they go to.

A short real sweep runs as a user runs it (`shrink-sweep run` on the default space, here 2
trials of 20 steps one at a time, 20 evaluation examples), and its phases are read back from
what it records in MLflow:

- the sweep's run: `prepare_seconds` (model loaded, data tokenized: once per sweep) and
  `ray_start_seconds` (`ray.init`), which run side by side, and its start time (the sweep is
  recorded once both are done);
- each trial's run: its start time (Tune starts the trial on a worker) and `startup_seconds`,
  from the trial function's call to the end of its first optimizer step (imports in a new
  worker, model load, shrink, optimizer set-up, one step).

Ray's hand-off between starting a trial and calling the trial function (which receives the
shared model and data) is in neither figure, so the sums are slightly short.

Target: data is prepared once per sweep, so the second trial trains within 2 s of being
started (its `startup_seconds` <= 2). The ratio printed beside it is that start-up over the
first trial's, measured in the same sweep: a new worker against one Tune reuses.

    python -m bench.startup                         # one sweep (~3 min here)
    python -m bench.startup --repeats 3 --set train.max_steps=50
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import DEFAULT_SPACE, REPO, latest_sweep
from search.record.store import default_uri
from search.record.tracker import Tracker
from search.space.config import load_config

TARGET_SECONDS = 2.0  # the second trial: started -> first optimizer step
SHORT = [
    "trials=2",
    "train.max_steps=20",
    "data.max_eval_examples=20",
    "train.eval_every=0",
    "max_concurrent=1",
]


@dataclass(frozen=True)
class TrialTimes:
    """One trial, in seconds since the command."""

    started: float  # Tune started it (its MLflow run began)
    ended: float
    startup_seconds: float


@dataclass(frozen=True)
class Timeline:
    """One sweep's phases, in seconds since the command."""

    prepare_seconds: float
    ray_start_seconds: float  # beside the preparation
    recorded: float  # the sweep's MLflow run began: preparation and Ray start done
    trials: list[TrialTimes]
    exited: float


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = [*SHORT, *(args.overrides or [])]
    print(f"shrink-sweep run {args.space.name}, settings {overrides}")
    seconds = []
    for i in range(args.repeats):
        timeline = measure(args.space, overrides)
        print(f"\nsweep {i + 1} of {args.repeats}:")
        print("\n".join(breakdown(timeline)))
        seconds.append(timeline.trials[1].startup_seconds)
    second = statistics.median(seconds)
    verdict = "met" if second <= TARGET_SECONDS else "NOT met"
    print(
        f"\nsecond trial, started -> first step: {second:.2f} s, median of {len(seconds)} "
        f"(target <= {TARGET_SECONDS:.0f} s: {verdict})"
    )
    return 0


def measure(space: Path, overrides: list[str]) -> Timeline:
    """Run one sweep in a temporary store and read its phases back from MLflow.

    Raises:
        RuntimeError: the sweep failed (the end of its output is in the message), or ran
            fewer than two trials.
    """
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        command = [sys.executable, "-m", "search.cli", "run", str(space), "--store", str(store)]
        command += [arg for value in overrides for arg in ("--set", value)]
        start = time.time()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        exited = time.time() - start
        if done.returncode != 0:
            raise RuntimeError(f"the sweep failed ({done.returncode}):\n{done.stderr[-3000:]}")
        config = load_config(space, overrides)
        return read_timeline(Tracker(default_uri(store), config.name), start, exited)


def read_timeline(tracker: Tracker, start: float, exited: float) -> Timeline:
    """The phases of the latest sweep in `tracker`, relative to `start` (epoch seconds)."""
    sweep, runs = latest_sweep(tracker)
    trials = [
        TrialTimes(
            info.start_time / 1000 - start, info.end_time / 1000 - start, row["startup_seconds"]
        )
        for row, info in runs
    ]
    if len(trials) < 2:
        raise RuntimeError(f"the sweep ran {len(trials)} trial(s); this benchmark needs two")
    return Timeline(
        prepare_seconds=sweep.data.metrics["prepare_seconds"],
        ray_start_seconds=sweep.data.metrics["ray_start_seconds"],
        recorded=sweep.info.start_time / 1000 - start,
        trials=trials,
        exited=exited,
    )


def breakdown(t: Timeline) -> list[str]:
    """Lines of the phases from the command to each trial's first step, with the check."""
    first, second = t.trials[0], t.trials[1]
    side_by_side = max(t.prepare_seconds, t.ray_start_seconds)
    both = f"prepare {t.prepare_seconds:.1f} s | Ray start {t.ray_start_seconds:.1f} s"
    phases = [
        ("Python imports, checks, MLflow set-up", t.recorded - side_by_side),
        (both, side_by_side),
        ("Tune set-up, first worker started", first.started - t.recorded),
        ("trial 1: started -> first step", first.startup_seconds),
    ]
    total = sum(seconds for _, seconds in phases)
    lines = [f"  {name:<44} {seconds:6.1f} s {seconds / total:5.0%}" for name, seconds in phases]
    lines.append(f"  {'command -> trial 1 first step':<44} {total:6.1f} s")
    verdict = "met" if second.startup_seconds <= TARGET_SECONDS else "NOT met"
    ratio = second.startup_seconds / first.startup_seconds
    lines += [
        f"  {'trial 1 ended -> trial 2 started':<44} {second.started - first.ended:6.2f} s",
        f"  {'trial 2: started -> first step':<44} {second.startup_seconds:6.2f} s"
        f"  (target <= {TARGET_SECONDS:.0f} s: {verdict}; {ratio:.2f}x trial 1's)",
        f"  {'command -> exit':<44} {t.exited:6.1f} s",
    ]
    return lines


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", type=Path, default=DEFAULT_SPACE)
    parser.add_argument(
        "--set", action="append", dest="overrides", metavar="KEY=VALUE",
        help=f"more overrides, after {' '.join(SHORT)}",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=1, help="sweeps to run, one after another")
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
