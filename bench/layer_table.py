"""Measure every (encoder, decoder) layer count of the demo teacher once, and keep the table.

A tabular benchmark in the way of NAS-Bench: each student is shrunk with one strategy and
fine-tuned with the default sweep's budget, as a plain function call (no Ray, no MLflow). The
table lets `bench/search.py` compare samplers over many seeds in seconds, and is the regression
reference for the trade-off curve. Rows are appended as they finish, so an interrupted run
resumes where it stopped.

    python -m bench.layer_table               # all 36 pairs, 2 at a time (~30 min here)
    python -m bench.layer_table --show        # print it, as ratios to the full model
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench.common import (
    DEFAULT_SPACE,
    REPO,
    measure_in_pool,
    prepare_default,
    read_rows,
    run_plain,
    trial_config,
)
from search.space.config import load_config
from trainables.shrink import layer_counts
from trainables.trial import load_model_config

TABLE = REPO / "bench" / "layer_table.csv"
METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "params", "params_non_embedding")

_worker: dict[str, Any] = {}


def _init_worker(space: str, overrides: list[str]) -> None:
    config, prepared, _ = prepare_default(Path(space), overrides)
    _worker.update(config=config, prepared=prepared)


def _measure(encoder: int, decoder: int, strategy: str) -> dict[str, Any]:
    config, prepared = _worker["config"], _worker["prepared"]
    trial = trial_config(config, prepared, encoder, decoder, strategy)
    start = time.perf_counter()
    result = run_plain(config, prepared, trial)
    row: dict[str, Any] = {"encoder": encoder, "decoder": decoder, "strategy": strategy}
    row.update({m: round(result.metrics[m], 4) for m in METRICS})
    row.update(
        train_seconds=round(result.metrics["train_seconds"], 1),
        trial_seconds=round(time.perf_counter() - start, 1),
        max_steps=trial.train.max_steps,
        learning_rate=trial.train.learning_rate,
    )
    return row


def measure_table(
    table: Path, space: Path, overrides: list[str], strategy: str, jobs: int
) -> list[dict[str, str]]:
    """Measure every layer-count pair not yet in `table`, `jobs` at a time."""
    config = load_config(space, overrides)
    n_enc, n_dec = layer_counts(load_model_config(config.model))
    done = {(int(r["encoder"]), int(r["decoder"])) for r in read_rows(table)}
    pairs = [(e, d) for e in range(n_enc, 0, -1) for d in range(n_dec, 0, -1)]
    todo = [(e, d, strategy) for e, d in pairs if (e, d) not in done]
    print(f"{len(done)} pairs measured, {len(todo)} to go, {jobs} at a time", flush=True)
    setup = (_init_worker, (str(space), overrides))
    measure_in_pool(table, todo, _measure, _describe, jobs, setup)
    return read_rows(table)


def _describe(rows: list[dict[str, Any]]) -> str:
    (row,) = rows
    return (
        f"{row['encoder']}+{row['decoder']}: ROUGE-L {row['rougeL']:.2f}, "
        f"{row['params'] / 1e6:.2f}M params, {row['trial_seconds']:.0f} s"
    )


def show(rows: list[dict[str, str]]) -> None:
    """Print each pair as (ROUGE-L, parameters) relative to the full model."""
    by_pair = {(int(r["encoder"]), int(r["decoder"])): r for r in rows}
    full = by_pair[max(by_pair)]
    full_rl, full_params = float(full["rougeL"]), float(full["params"])
    print(f"full model {max(by_pair)}: ROUGE-L {full_rl:.2f}, {full_params / 1e6:.2f}M params")
    print("enc+dec  ROUGE-L  of full  params  of full")
    for (e, d), r in sorted(by_pair.items(), reverse=True):
        rl, params = float(r["rougeL"]), float(r["params"])
        print(
            f"{e}+{d:<6} {rl:7.2f}  {rl / full_rl:6.1%}  {params / 1e6:5.2f}M  "
            f"{params / full_params:6.1%}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", type=Path, default=DEFAULT_SPACE)
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--strategy", default="sft")
    parser.add_argument("--jobs", type=int, default=2, help="trials at a time (1 thread each)")
    # Plain SFT, measured before the default sweep took up distillation: the rows of one table
    # share one recipe, so resuming it keeps that recipe.
    sft = ["train.eval_every=0", "train.distill=0"]
    parser.add_argument("--set", action="append", default=sft, dest="overrides")
    parser.add_argument("--show", action="store_true", help="only print the table")
    args = parser.parse_args(argv)
    if args.show:
        show(read_rows(args.table))
        return
    show(measure_table(args.table, args.space, args.overrides, args.strategy, args.jobs))


if __name__ == "__main__":
    main()
