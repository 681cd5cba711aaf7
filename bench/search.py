"""Does the configured sampler find a better front than random search with the same budget?

Tabular, as NAS benchmarks do it: every (encoder, decoder) layer count of the demo teacher was
trained once (`bench/layer_table.py` keeps the table), so a search is a lookup and many seeds
take seconds. Each sampler runs the sweep's own search space, `first:` points and sampler
settings (`search.space.suggest.suggest`, `search.driver.tuner.make_sampler`) with the
strategy fixed to the table's; the hypervolume of its front after N trials is compared, mean
over seeds, with random search's and with the whole table's (the best any search can reach).

    python -m bench.search                      # tpe vs random, 8 and 16 trials, 20 seeds
    python -m bench.search --trials 8 --seeds 50 --sampler nsga2
    python -m bench.search --set sampler.startup_trials=4
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace
from pathlib import Path

import optuna

from bench.common import DEFAULT_SPACE, read_rows
from bench.layer_table import TABLE
from search.driver.tuner import make_sampler
from search.front.pareto import hypervolume
from search.front.rows import reference_point
from search.space.config import SweepConfig, load_config
from search.space.suggest import plan, suggest

Table = dict[tuple[int, int], tuple[float, float]]  # (encoder, decoder) -> (rougeL, params)


def load_table(path: Path) -> tuple[Table, str]:
    """The measured table and the strategy it was measured with."""
    rows = read_rows(path)
    if not rows:
        raise SystemExit(f"{path} is empty: run python -m bench.layer_table first")
    table = {
        (int(r["encoder"]), int(r["decoder"])): (float(r["rougeL"]), float(r["params"]))
        for r in rows
    }
    return table, rows[0]["strategy"]


def search_hypervolume(config: SweepConfig, table: Table, trials: int) -> float:
    """Run the sweep's search on the table for `trials` trials; the front's hypervolume."""
    parent_layers = max(table)
    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=make_sampler(config, parent_layers)
    )
    for point in config.first:
        study.enqueue_trial(dict(point))
    values = []
    for _ in range(trials):
        trial = study.ask()
        fixed = suggest(trial, config, parent_layers)
        student = plan({**fixed, **trial.params}, parent_layers)
        value = table[(len(student.encoder_layers), len(student.decoder_layers))]
        study.tell(trial, list(value))
        values.append(value)
    reference = reference_point(config, int(table[parent_layers][1]))
    return hypervolume(values, ["max", "min"], reference)


def compare(config: SweepConfig, table: Table, trials: int, seeds: int) -> dict[str, float]:
    """Mean hypervolume over seeds, for the configured sampler and for random search."""
    means = {}
    for name in (config.sampler.name, "random"):
        runs = []
        for seed in range(seeds):
            seeded = _with_sampler(config, name, seed)
            runs.append(search_hypervolume(seeded, table, trials))
        means[name] = statistics.mean(runs)
    return means


def _with_sampler(config: SweepConfig, name: str, seed: int) -> SweepConfig:
    return replace(config, sampler=replace(config.sampler, name=name, seed=seed))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", type=Path, default=DEFAULT_SPACE)
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--trials", type=int, action="append", help="default: 8 and 16")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--sampler", help="instead of the space's own")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="KEY=VALUE")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    table, strategy = load_table(args.table)
    overrides = [f"layers.strategy={strategy}", *args.overrides]
    if args.sampler:
        overrides.append(f"sampler.name={args.sampler}")
    config = load_config(args.space, overrides)
    parent = max(table)
    best = hypervolume(
        list(table.values()), ["max", "min"], reference_point(config, table[parent][1])
    )
    name = config.sampler.name
    print(f"{len(table)} measured students ({strategy}); whole-table hypervolume {best:.4g}")
    print(f"trials  {name:>8}  random  {name}/random  {name}/table  random/table")
    for trials in args.trials or [8, 16]:
        means = compare(config, table, trials, args.seeds)
        print(
            f"{trials:6d}  {means[name]:8.4g}  {means['random']:6.4g}  "
            f"{means[name] / means['random']:12.3f}  {means[name] / best:10.3f}  "
            f"{means['random'] / best:12.3f}"
        )


if __name__ == "__main__":
    main()
