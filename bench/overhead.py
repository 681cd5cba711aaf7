"""What does the sweep machinery cost? A sweep's wall time against the same trials in a loop.

The same N students (the same configs, seeds and data) run twice: as a plain Python loop of
`run_trial` calls, back to back, and as `shrink-sweep run` with those students as its `first:`
points. The ideal sweep takes the loop's summed trial time divided by the concurrency (trials
at a time); the ratio of the real wall time to that ideal is the overhead (target: at most
1.10). The whole command is timed, Ray start-up and data preparation included, and the ratio
is also shown with the preparation (which the loop needs too) added to the ideal.

    python -m bench.overhead                          # 4 students, a short budget
    python -m bench.overhead --set train.max_steps=500 --set data.max_eval_examples=200
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import DEFAULT_SPACE, REPO, prepare_default, run_plain, trial_config

STUDENTS = ((6, 6), (4, 3), (2, 3), (3, 2))
SHORT = ["train.max_steps=150", "data.max_eval_examples=50", "train.eval_every=0"]


def loop_seconds(space: Path, overrides: list[str]) -> tuple[float, list[float]]:
    """Preparation time and each student's time, run one after another in this process."""
    config, prepared, prep = prepare_default(space, overrides)
    times = []
    for encoder, decoder in STUDENTS:
        start = time.perf_counter()
        run_plain(config, prepared, trial_config(config, prepared, encoder, decoder))
        times.append(time.perf_counter() - start)
        print(f"  loop: {encoder}+{decoder} in {times[-1]:.1f} s", flush=True)
    return prep, times


def sweep_seconds(space: Path, overrides: list[str], concurrency: int) -> float:
    """Wall time of `shrink-sweep run` over the same students, from launch to exit."""
    first = [{"encoder": e, "decoder": d, "strategy": "sft"} for e, d in STUDENTS]
    sets = [*overrides, f"first={json.dumps(first)}", f"trials={len(STUDENTS)}"]
    sets.append(f"max_concurrent={concurrency}")
    with tempfile.TemporaryDirectory() as store:
        command = [sys.executable, "-m", "search.cli", "run", str(space), "--store", store]
        command += [arg for s in sets for arg in ("--set", s)]
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", type=Path, default=DEFAULT_SPACE)
    parser.add_argument("--set", action="append", dest="overrides", help="default: a short budget")
    parser.add_argument("--concurrency", type=int, default=2, help="trials at a time (1 CPU each)")
    args = parser.parse_args(argv)
    overrides = args.overrides or SHORT
    print(f"{len(STUDENTS)} students, {args.concurrency} at a time; settings {overrides}")
    prep, times = loop_seconds(args.space, overrides)
    wall = sweep_seconds(args.space, overrides, args.concurrency)
    ideal = sum(times) / args.concurrency
    print(f"loop: preparation {prep:.1f} s, trials {sum(times):.1f} s in all")
    print(f"sweep: {wall:.1f} s wall, command to exit")
    print(
        f"sweep / (loop trials / concurrency)               = {wall / ideal:.3f}  (target <= 1.10)"
    )
    print(f"sweep / (preparation + loop trials / concurrency) = {wall / (prep + ideal):.3f}")


if __name__ == "__main__":
    main()
