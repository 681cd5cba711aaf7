"""The zero-shot screen of the demo teacher's students: how well does a student's loss before
training foretell its fine-tuned ROUGE-L, and what does the sweep pick from it?

Scores every student of the default space untrained with the product's own screen
(`search.strategy.screen.screen_students`) at each number of evaluation pairs asked, writes
the scores to bench/screen.csv (the simulator replays the screen's picks from it), and prints, per
count: the seconds the screen took, Spearman's rank correlation between the loss and the
learning-curve table's final ROUGE-L, and the points the sweep would try first.

    python -m bench.screen                      # 32, 64 and 200 evaluation pairs
    python -m bench.screen --examples 64
"""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.common import DEFAULT_SPACE, REPO, append_row, prepare_default, read_rows
from bench.learning_curves import TABLE as CURVES
from search.strategy.screen import describe_student, screen_csv, screen_picks, screen_students

TABLE = REPO / "bench" / "screen.csv"


def measure(examples: list[int], space: Path, table: Path) -> None:
    """Screen the space at each count of evaluation pairs; replace the table's rows for it."""
    kept = [r for r in read_rows(table) if int(r["examples"]) not in examples]
    table.unlink(missing_ok=True)
    for row in kept:
        append_row(table, row)
    for n in examples:
        config, prepared, _ = prepare_default(space, [f"sampler.screen={n}"])
        screened, seconds = screen_students(config, prepared)
        for row in csv.DictReader(io.StringIO(screen_csv(screened))):
            append_row(table, {"examples": n, **row, "seconds": round(seconds, 2)})
        picks = screen_picks(screened, config, prepared.parent_layers)
        trained = ", ".join(describe_student(s.values) for s in picks)
        print(f"{n} pairs: {len(screened)} students in {seconds:.1f}s; trained first: {trained}")


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation (no ties expected: losses and ROUGE are measured floats)."""
    rx, ry = (np.argsort(np.argsort(v)) for v in (xs, ys))
    return float(np.corrcoef(rx, ry)[0, 1])


def rank_correlation(table: Path, curves: Path) -> dict[int, float]:
    """Spearman's rho between the screen's loss (negated) and the final ROUGE-L, per count."""
    budget = max(int(r["step"]) for r in read_rows(curves))
    final = {
        (r["encoder"], r["decoder"], r["strategy"]): float(r["rougeL"])
        for r in read_rows(curves)
        if int(r["step"]) == budget
    }
    by_count: dict[int, list[tuple[float, float]]] = {}
    for r in read_rows(table):
        key = (r["encoder"], r["decoder"], r["strategy"])
        if key in final:
            by_count.setdefault(int(r["examples"]), []).append((-float(r["loss"]), final[key]))
    return {n: spearman(*zip(*pairs, strict=True)) for n, pairs in by_count.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, action="append", help="default: 32, 64, 200")
    parser.add_argument("--space", type=Path, default=DEFAULT_SPACE)
    parser.add_argument("--table", type=Path, default=TABLE)
    args = parser.parse_args(argv)
    measure(args.examples or [32, 64, 200], args.space, args.table)
    for n, rho in sorted(rank_correlation(args.table, CURVES).items()):
        print(f"{n} pairs: Spearman rho, screen loss vs fine-tuned ROUGE-L = {rho:.3f}")


if __name__ == "__main__":
    main()
