"""Which training recipe makes the strongest students: the SFT paper's three ways, measured.

Each student of the demo teacher (2+3, 3+2, 2+2, 6+3 layers kept by `sft`, and the full model,
which gets the same recipe and budget) is fine-tuned with the default sweep's budget under each
recipe: gold labels only, logit distillation (KD), hidden-state distillation, pseudo-labels (the
teacher's own summaries, `trainables.pseudo`), and combinations. Plain function calls, no Ray or
MLflow; rows are appended as they finish, so an interrupted run resumes.

    python -m bench.recipes                 # every student x recipe not yet measured
    python -m bench.recipes --show          # ROUGE-L, and as a share of the full model's
"""

from __future__ import annotations

import argparse
import dataclasses
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
)
from bench.common import trial_config as default_trial

TABLE = REPO / "bench" / "recipes.csv"
STUDENTS = ((2, 3), (3, 2), (2, 2), (6, 3), (6, 6))
PSEUDO_EXAMPLES = 8000  # one pass of the default budget (500 steps x 16 pairs)
HIDDEN = 1.0  # weight of the hidden-state loss
# Each recipe's training settings; anything not named is the default sweep's.
RECIPES: dict[str, dict[str, Any]] = {
    "gold": {"distill": 0.0},
    "kd": {"distill": 0.5},
    "hidden": {"distill": 0.0, "distill_hidden": HIDDEN},
    "kd+hidden": {"distill": 0.5, "distill_hidden": HIDDEN},
    "kd+hidden+enc": {"distill": 0.5, "distill_hidden": HIDDEN, "distill_hidden_encoder": True},
    "pseudo": {"distill": 0.0, "targets": "pseudo"},
    "both": {"distill": 0.0, "targets": "both"},
    "kd+both": {"distill": 0.5, "targets": "both"},
    "kd+hidden+both": {"distill": 0.5, "distill_hidden": HIDDEN, "targets": "both"},
    "kd+pseudo": {"distill": 0.5, "targets": "pseudo"},
    "hidden+pseudo": {"distill": 0.0, "distill_hidden": HIDDEN, "targets": "pseudo"},
}
OVERRIDES = ["train.eval_every=0", f"data.pseudo_examples={PSEUDO_EXAMPLES}"]
METRICS = ("rouge1", "rouge2", "rougeL", "params", "train_loss", "train_seconds")

_worker: dict[str, Any] = {}


def _init_worker(space: str) -> None:
    _worker["space"] = Path(space)


def _prepared(pseudo: bool) -> tuple[Any, Any]:
    """The default sweep's config and prepared data, with pseudo-labels (from the cache, once
    made) if `pseudo`; made once per worker."""
    if pseudo not in _worker:
        overrides = [*OVERRIDES, f"train.targets={'both' if pseudo else 'gold'}"]
        _worker[pseudo] = prepare_default(_worker["space"], overrides)
    config, prepared, _ = _worker[pseudo]
    return config, prepared


def _measure(encoder: int, decoder: int, recipe: str) -> dict[str, Any]:
    config, prepared = _prepared(RECIPES[recipe].get("targets", "gold") != "gold")
    trial = default_trial(config, prepared, encoder, decoder)
    train = dataclasses.replace(trial.train, **{"targets": "gold", **RECIPES[recipe]})
    start = time.perf_counter()
    result = run_plain(config, prepared, dataclasses.replace(trial, train=train))
    row: dict[str, Any] = {"encoder": encoder, "decoder": decoder, "recipe": recipe}
    row.update({m: round(result.metrics[m], 4) for m in METRICS})
    row["trial_seconds"] = round(time.perf_counter() - start, 1)
    return row


def measure(table: Path, space: Path, recipes: list[str], jobs: int) -> list[dict[str, str]]:
    """Measure every student x recipe not yet in `table`, `jobs` at a time."""
    done = {(int(r["encoder"]), int(r["decoder"]), r["recipe"]) for r in read_rows(table)}
    todo = [(e, d, r) for r in recipes for e, d in STUDENTS if (e, d, r) not in done]
    print(f"{len(done)} measured, {len(todo)} to go, {jobs} at a time", flush=True)
    measure_in_pool(table, todo, _measure, _describe, jobs, (_init_worker, (str(space),)))
    return read_rows(table)


def _describe(rows: list[dict[str, Any]]) -> str:
    (row,) = rows
    return (
        f"{row['encoder']}+{row['decoder']} {row['recipe']}: ROUGE-L "
        f"{row['rougeL']:.2f}, {row['trial_seconds']:.0f} s"
    )


def kd_rows() -> list[dict[str, str]]:
    """The `kd` recipe's rows, from the learning-curve table: the default recipe that table
    was measured with (`distill: 0.5`, gold labels), at the end of the budget, `sft` layers."""
    from bench.learning_curves import TABLE as CURVES

    students = {f"{e},{d}" for e, d in STUDENTS}
    return [
        {**r, "recipe": "kd"}
        for r in read_rows(CURVES)
        if r["strategy"] == "sft"
        and r["step"] == "500"
        and f"{r['encoder']},{r['decoder']}" in students
    ]


def show(rows: list[dict[str, str]]) -> None:
    """Print ROUGE-L per student and recipe, and as a share of the full model's under the same
    recipe (`kd` from the learning-curve table unless measured here)."""
    if not any(r["recipe"] == "kd" for r in rows):
        rows = [*rows, *kd_rows()]
    score = {(int(r["encoder"]), int(r["decoder"]), r["recipe"]): float(r["rougeL"]) for r in rows}
    recipes = [r for r in RECIPES if any(key[2] == r for key in score)]
    print("student  params  " + "  ".join(f"{r:>15}" for r in recipes))
    params = {(int(r["encoder"]), int(r["decoder"])): float(r["params"]) for r in rows}
    full = max(params, default=None)
    for student in STUDENTS:
        if student not in params:
            continue
        cells = []
        for recipe in recipes:
            value, top = score.get((*student, recipe)), score.get((*full, recipe))
            share = f" {value / top:4.0%}" if value is not None and top else "     "
            cells.append(f"{value:10.2f}{share}" if value is not None else f"{'-':>15}")
        share_params = params[student] / params[full]
        print(f"{student[0]}+{student[1]:<6} {share_params:6.1%}  " + "  ".join(cells))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", type=Path, default=DEFAULT_SPACE)
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--recipe", action="append", choices=list(RECIPES), dest="recipes")
    parser.add_argument("--jobs", type=int, default=2, help="trials at a time (1 thread each)")
    parser.add_argument("--show", action="store_true", help="only print the table")
    args = parser.parse_args(argv)
    if not args.show:
        measure(args.table, args.space, args.recipes or list(RECIPES), args.jobs)
    show(read_rows(args.table))


if __name__ == "__main__":
    main()
