"""What does the sweep machinery cost? A sweep's wall time against the same trials in a loop.

The same N students (the same configs, seeds and data) run twice: as a plain Python loop of
`run_trial` calls, back to back, and as `shrink-sweep run` with those students as its `first:`
points. The ideal sweep takes the loop's summed trial time divided by the concurrency (trials
at a time); the ratio of the real wall time to that ideal is the overhead (target: at most
1.10). The whole command is timed, imports, MLflow set-up, data preparation and Ray start-up
included.

Two more lines say where a gap comes from. The ideal assumes the trials pack perfectly into
the slots; the best a scheduler can do with these trials in this order (each to the first
free slot, as Tune starts them) is the loop's "schedule", plus the preparation the loop also
needs. And the sweep's own trial times (MLflow run start to end) against the loop's show what
running side by side on a shared CPU costs each trial.

    python -m bench.overhead                              # the default budget, ~25 min here
    python -m bench.overhead --short                      # 150-step students, ~5 min
    python -m bench.overhead --students 6+6,6+3,2+3,3+4,5+4,1+5,3+5,4+3   # 8 trials, ~30 min
    # 16 trials, ~55 min: those 8 and 2+2,5+6,4+5,3+3,6+2,1+3,4+4,2+5 (bench/README.md)
"""

from __future__ import annotations

import argparse
import heapq
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    DEFAULT_SPACE,
    REPO,
    latest_sweep,
    prepare_default,
    run_plain,
    trial_config,
)
from search.record.store import default_uri
from search.record.tracker import Tracker
from search.space.config import load_config

STUDENTS = ((6, 6), (4, 3), (2, 3), (3, 2))
SHORT = ["train.max_steps=150", "data.max_eval_examples=50", "train.eval_every=0"]
TARGET = 1.10


def loop_seconds(
    space: Path, overrides: list[str], students: list[tuple[int, int]]
) -> tuple[float, list[float]]:
    """Preparation time and each student's time, run one after another in this process."""
    config, prepared, prep = prepare_default(space, overrides)
    times = []
    for encoder, decoder in students:
        start = time.perf_counter()
        run_plain(config, prepared, trial_config(config, prepared, encoder, decoder))
        times.append(time.perf_counter() - start)
        print(f"  loop: {encoder}+{decoder} in {times[-1]:.1f} s", flush=True)
    return prep, times


def sweep_seconds(
    space: Path, overrides: list[str], students: list[tuple[int, int]], concurrency: int
) -> tuple[float, list[float]]:
    """Wall time of `shrink-sweep run` over the same students, from launch to exit, and each
    trial's time in it (its MLflow run's start to end), in the students' order."""
    first = [{"encoder": e, "decoder": d, "strategy": "sft"} for e, d in students]
    sets = [*overrides, f"first={json.dumps(first)}", f"trials={len(students)}"]
    sets.append(f"max_concurrent={concurrency}")
    with tempfile.TemporaryDirectory() as store:
        command = [sys.executable, "-m", "search.cli", "run", str(space), "--store", store]
        command += [arg for s in sets for arg in ("--set", s)]
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        _, trials = latest_sweep(Tracker(default_uri(Path(store)), load_config(space, sets).name))
    return wall, [(info.end_time - info.start_time) / 1000 for _, info in trials]


def parse_students(text: str) -> list[tuple[int, int]]:
    """ "6+6,4+3" -> [(6, 6), (4, 3)]."""
    students = []
    for pair in text.split(","):
        encoder, plus, decoder = pair.strip().partition("+")
        if not (plus and encoder.isdigit() and decoder.isdigit()):
            raise argparse.ArgumentTypeError(f"{pair!r} is not ENCODER+DECODER, e.g. 6+3")
        students.append((int(encoder), int(decoder)))
    return students


def schedule(times: list[float], slots: int) -> float:
    """When the last of `times` ends if each, in order, starts on the first free slot."""
    free = [0.0] * slots
    for seconds in times:
        heapq.heappush(free, heapq.heappop(free) + seconds)
    return max(free)


def report(
    prep: float, loop: list[float], wall: float, swept: list[float], slots: int
) -> list[str]:
    """The result lines: the target ratio first, then where the gap comes from."""
    ideal = sum(loop) / slots
    best = prep + schedule(loop, slots)
    verdict = "met" if wall / ideal <= TARGET else "NOT met"
    return [
        f"loop:  preparation {prep:.1f} s; trials {' + '.join(f'{t:.1f}' for t in loop)}"
        f" = {sum(loop):.1f} s",
        f"sweep: {wall:.1f} s from command to exit; its trials "
        f"{' + '.join(f'{t:.1f}' for t in swept)} = {sum(swept):.1f} s",
        f"sweep / (loop trials / {slots})                       = {wall / ideal:.3f}"
        f"  (target <= {TARGET:.2f}: {verdict})",
        f"sweep / (preparation + loop trials scheduled in order) = {wall / best:.3f}",
        f"sweep trials / loop trials (side by side vs alone)     = {sum(swept) / sum(loop):.3f}",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", type=Path, default=DEFAULT_SPACE)
    parser.add_argument("--set", action="append", dest="overrides", default=[], help="KEY=VALUE")
    parser.add_argument("--short", action="store_true", help=f"first add {' '.join(SHORT)}")
    parser.add_argument("--concurrency", type=int, default=2, help="trials at a time (1 CPU each)")
    parser.add_argument(
        "--students", type=parse_students, default=list(STUDENTS),
        help="ENCODER+DECODER layer counts, comma-separated (default: 6+6,4+3,2+3,3+2)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    overrides = [*(SHORT if args.short else []), *args.overrides]
    print(f"{len(args.students)} students, {args.concurrency} at a time; settings {overrides}")
    prep, loop = loop_seconds(args.space, overrides, args.students)
    wall, swept = sweep_seconds(args.space, overrides, args.students, args.concurrency)
    print("\n".join(report(prep, loop, wall, swept, args.concurrency)))


if __name__ == "__main__":
    main()
