"""Learning curves of every student of the demo teacher: the table the search simulator replays.

For every encoder x decoder count (1-6 each) and each layer strategy, one student is shrunk and
fine-tuned with the default sweep's recipe and budget (500 steps, distillation from the
teacher), as plain function calls (no Ray, no MLflow). At checkpoints of the budget (1/27, 1/9,
1/3 and all of it: the rungs of successive halving with reduction factor 3) it is scored twice:

- a rung evaluation: greedy decoding on the first 50 evaluation pairs (cheap), and
- the sweep's own evaluation: the configured decoding on all 200 evaluation pairs.

Each row is one checkpoint of one student: the training seconds up to it (evaluations left
out), the seconds each evaluation took, and the objectives. A student's rows are appended when
it finishes, so an interrupted run resumes with the students not yet measured.

    python -m bench.learning_curves                     # sft, then last; 2 at a time
    python -m bench.learning_curves --strategy sft      # one strategy
    python -m bench.learning_curves --show              # how far the table is
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from bench.common import (
    DEFAULT_SPACE,
    REPO,
    measure_in_pool,
    prepare_default,
    read_rows,
    trial_config,
)
from search.space.config import load_config
from search.strategy.halving import rung_steps
from trainables.config import RungConfig
from trainables.shrink import layer_counts
from trainables.trial import evaluation_inputs, load_model_config

TABLE = REPO / "bench" / "learning_curves.csv"
RUNG_EXAMPLES = 50
STRATEGIES = ("sft", "last")

_worker: dict[str, Any] = {}


def checkpoint_steps(max_steps: int) -> list[int]:
    """The steps at which a student is scored: the rungs of eta 3 with 4 rungs (1/27, 1/9,
    1/3 of the budget, as `search.strategy.halving` places them), and the end."""
    return [*rung_steps(max_steps, 3, 4), max_steps]


RUNGS = RungConfig(examples=RUNG_EXAMPLES, num_beams=1)  # the cheap score, as asha's trials


def _init_worker(space: str, overrides: list[str]) -> None:
    config, prepared, _ = prepare_default(Path(space), overrides)
    _worker.update(config=config, prepared=prepared)


def _scores(student: Any, tokenizer: Any, step: int, train_seconds: float) -> dict[str, Any]:
    """Both evaluations of the student at `step`, with their seconds."""
    from trainables.scoring import evaluate_model

    config, prepared = _worker["config"], _worker["prepared"]
    row: dict[str, Any] = {"step": step, "train_seconds": round(train_seconds, 2)}
    start = time.perf_counter()
    rung_data, rung_decoding = evaluation_inputs(RUNGS, prepared.data, config.decoding, rung=True)
    rung = evaluate_model(student, tokenizer, rung_data, rung_decoding)
    row["rung_eval_seconds"] = round(time.perf_counter() - start, 2)
    row["rung_rougeL"] = round(rung["rougeL"], 4)
    start = time.perf_counter()
    full = evaluate_model(student, tokenizer, prepared.data, config.decoding)
    row["eval_seconds"] = round(time.perf_counter() - start, 2)
    row.update({m: round(full[m], 4) for m in ("rouge1", "rouge2", "rougeL", "eval_loss")})
    return row


def _measure(encoder: int, decoder: int, strategy: str) -> list[dict[str, Any]]:
    """Train one student over the budget, scoring it at every checkpoint."""
    from trainables.train import fine_tune
    from trainables.trial import shrunk_student

    config, prepared = _worker["config"], _worker["prepared"]
    trial = trial_config(config, prepared, encoder, decoder, strategy)
    start = time.perf_counter()
    student, tokenizer, teacher, sizes = shrunk_student(trial, prepared.base)
    setup_seconds = time.perf_counter() - start
    steps = checkpoint_steps(trial.train.max_steps)
    rows: list[dict[str, Any]] = []
    trained = {"seconds": 0.0, "since": time.perf_counter()}

    def evaluate_at(step: int) -> None:
        trained["seconds"] += time.perf_counter() - trained["since"]
        rows.append(_scores(student, tokenizer, step, trained["seconds"]))
        trained["since"] = time.perf_counter()

    stats = fine_tune(
        student,
        prepared.data,
        dataclasses.replace(trial.train, eval_every=0),
        pad_token_id=tokenizer.pad_token_id,
        evaluate_at=evaluate_at,
        eval_steps=steps,
        threads=max(1, int(config.resources.cpus)),
        teacher=teacher,
    )
    rows.append(_scores(student, tokenizer, stats.steps, stats.seconds))
    head = {"encoder": encoder, "decoder": decoder, "strategy": strategy, **sizes}
    head["setup_seconds"] = round(setup_seconds, 2)
    # The machine's 1-minute load when the student ended: above the 2 workers' own load,
    # something else ran beside it and its seconds are slower than a quiet machine's.
    head["load"] = round(os.getloadavg()[0], 2)
    return [{**head, **row} for row in rows]


def measure(
    table: Path,
    space: Path,
    overrides: list[str],
    strategies: list[str],
    jobs: int,
    only: set[tuple[int, int]] | None = None,
) -> None:
    """Measure every student not yet in `table` (or only the `only` layer counts), `jobs` at a
    time, strategy by strategy."""
    config = load_config(space, overrides)
    n_enc, n_dec = layer_counts(load_model_config(config.model))
    done = {(int(r["encoder"]), int(r["decoder"]), r["strategy"]) for r in read_rows(table)}
    todo = [
        (e, d, s)
        for s in strategies
        for e in range(n_enc, 0, -1)
        for d in range(n_dec, 0, -1)
        if (e, d, s) not in done and (only is None or (e, d) in only)
    ]
    print(f"{len(done)} students measured, {len(todo)} to go, {jobs} at a time", flush=True)
    setup = (_init_worker, (str(space), overrides))
    measure_in_pool(table, todo, _measure, _describe, jobs, setup)


def _describe(rows: list[dict[str, Any]]) -> str:
    last = rows[-1]
    return (
        f"{last['strategy']} {last['encoder']}+{last['decoder']}: ROUGE-L "
        + " / ".join(f"{r['rougeL']:.2f}" for r in rows)
        + f" at steps {[r['step'] for r in rows]}, {last['train_seconds']:.0f} s training"
    )


def show(rows: list[dict[str, str]]) -> None:
    """How many students of each strategy are measured, and the final ROUGE-L of each."""
    last: dict[tuple[str, str, str], dict[str, str]] = {}
    for row in rows:
        key = (row["strategy"], row["encoder"], row["decoder"])
        if key not in last or int(row["step"]) > int(last[key]["step"]):
            last[key] = row
    finals = list(last.values())
    for strategy in sorted({r["strategy"] for r in rows}):
        mine = [r for r in finals if r["strategy"] == strategy]
        print(f"{strategy}: {len(mine)} students")
        for r in sorted(mine, key=lambda r: (-int(r["encoder"]), -int(r["decoder"]))):
            print(f"  {r['encoder']}+{r['decoder']}  ROUGE-L {float(r['rougeL']):6.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", type=Path, default=DEFAULT_SPACE)
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--strategy", action="append", choices=STRATEGIES, dest="strategies")
    parser.add_argument("--jobs", type=int, default=2, help="students at a time (1 thread each)")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--students", help="only these layer counts, e.g. 6+6,2+3")
    parser.add_argument("--show", action="store_true", help="only print the table")
    args = parser.parse_args(argv)
    only = None
    if args.students:
        only = {tuple(int(n) for n in pair.split("+")) for pair in args.students.split(",")}
    if not args.show:
        strategies = args.strategies or list(STRATEGIES)
        measure(args.table, args.space, args.overrides, strategies, args.jobs, only)
    show(read_rows(args.table))


if __name__ == "__main__":
    main()
