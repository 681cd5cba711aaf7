"""Replay sweeps over the learning-curve table: which sampler and scheduler find the front with
the least compute?

Syne Tune's way of comparing multi-fidelity searches: every student was trained once and scored
at its rungs (`bench/learning_curves.py`), so a sweep is a replay in simulated time. N workers
run trials asynchronously; a trial costs what its student measured (start-up, training to each
rung, each rung's cheap evaluation, the final evaluation), cut where the scheduler stops it.
The proposals come from the product's own sampler (`search.driver.tuner.make_sampler`, the sweep's
`first:` points, the zero-shot screen's picks from bench/screen.csv by `search.strategy.screen`, and
`search.space.suggest.suggest`/`plan`), and the stopping decisions from the product's own rule
(`search.strategy.halving.SuccessiveHalving`, sparing the points `never_stopped` names), not
from copies of them.

    python -m bench.simulate                                  # every sampler x scheduler
    python -m bench.simulate --set sampler.screen=0           # without the screen
    python -m bench.simulate --set "layers.strategy=[sft]"    # a narrower space
    python -m bench.simulate --sampler tpe --scheduler asha --workers 2 --seeds 20
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from bench.common import DEFAULT_SPACE, read_rows
from bench.learning_curves import RUNGS as TABLE_RUNGS
from bench.learning_curves import TABLE
from bench.screen import TABLE as SCREEN_TABLE
from search.driver.tuner import make_sampler
from search.front.pareto import hypervolume
from search.front.rows import reference_point
from search.space.config import SweepConfig, load_config
from search.space.params import param_values
from search.space.suggest import plan, suggest
from search.strategy.halving import (
    SuccessiveHalving,
    is_first_point,
    never_stopped,
    rung_config,
    rung_steps,
)
from search.strategy.repeats import MAX_REPEATS, STOPPED_AT_ATTR, answer_repeat
from search.strategy.screen import Screened, pick_points, points_to_try

SAMPLERS = ("random", "tpe", "gp", "nsga2")
SCHEDULERS = ("fifo", "asha")
TARGET = 0.95  # of the whole table's hypervolume
# The trade-off a user ships: this share of the full model's ROUGE-L at no more than this share
# of its parameters (issue 14's bar for the default sweep).
TRADE_OFF = (0.90, 0.60)


@dataclass(frozen=True)
class Checkpoint:
    """A student scored at one step: cumulative training seconds, both evaluations."""

    train_seconds: float
    rung_rouge: float
    rung_eval_seconds: float
    rouge: float
    eval_seconds: float


@dataclass(frozen=True)
class Curve:
    """One student of the table: its size, start-up cost and checkpoints by step."""

    params: float
    setup_seconds: float
    checkpoints: dict[int, Checkpoint]

    @property
    def budget(self) -> int:
        return max(self.checkpoints)


Student = tuple[int, int, str]  # (encoder layers, decoder layers, strategy)
Curves = dict[Student, Curve]


def load_curves(path: Path) -> Curves:
    """The learning-curve table, one `Curve` per student."""
    rows = read_rows(path)
    if not rows:
        raise SystemExit(f"{path} is empty: run python -m bench.learning_curves first")
    grouped: dict[tuple[int, int, str], list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        grouped[(int(row["encoder"]), int(row["decoder"]), row["strategy"])].append(row)
    return {key: _curve(group) for key, group in grouped.items()}


def _curve(rows: list[dict[str, str]]) -> Curve:
    checkpoints = {
        int(r["step"]): Checkpoint(
            float(r["train_seconds"]),
            float(r["rung_rougeL"]),
            float(r["rung_eval_seconds"]),
            float(r["rougeL"]),
            float(r["eval_seconds"]),
        )
        for r in rows
    }
    return Curve(float(rows[0]["params"]), float(rows[0]["setup_seconds"]), checkpoints)


@dataclass(frozen=True)
class Screen:
    """The zero-shot screen of the table's students at one count of evaluation pairs."""

    students: list[Screened]
    seconds: float


def load_screen(path: Path, examples: int, space: set[Student]) -> Screen | None:
    """The screen at `examples` pairs from bench/screen.csv, of the students in `space`; None
    for 0 (no screen).

    Raises:
        SystemExit: the table has no screen at that count.
    """
    if not examples:
        return None
    rows = [r for r in read_rows(path) if int(r["examples"]) == examples]
    if not rows:
        raise SystemExit(f"{path}: no screen at {examples} pairs; run python -m bench.screen "
                         f"--examples {examples}")  # fmt: skip
    students = [
        Screened(
            {"strategy": r["strategy"], "encoder": int(r["encoder"]), "decoder": int(r["decoder"])},
            int(r["params"]),
            int(r["params_non_embedding"]),
            float(r["loss"]),
        )
        for r in rows
        if (int(r["encoder"]), int(r["decoder"]), r["strategy"]) in space
    ]
    return Screen(students, float(rows[0]["seconds"]))


@dataclass(frozen=True)
class Stage:
    """One report of a running trial: at `seconds` into it, a rung result (or the final one)."""

    seconds: float
    step: int
    rouge: float
    final: bool


def stages(curve: Curve, rungs: Sequence[int], own_score: bool = False) -> list[Stage]:
    """What a trial of `curve` reports, and when, under a scheduler judging at `rungs`: an
    evaluation at each rung (the table's cheap one, or with `own_score` the sweep's own), then
    the final one. Evaluations add to the trial's time."""
    out, evals = [], 0.0
    for step in rungs:
        point = curve.checkpoints[step]
        evals += point.eval_seconds if own_score else point.rung_eval_seconds
        seconds = curve.setup_seconds + point.train_seconds + evals
        out.append(Stage(seconds, step, point.rouge if own_score else point.rung_rouge, False))
    last = curve.checkpoints[curve.budget]
    seconds = curve.setup_seconds + last.train_seconds + evals + last.eval_seconds
    out.append(Stage(seconds, curve.budget, last.rouge, final=True))
    return out


def scores_rungs_as_final(config: SweepConfig, budget: int) -> bool:
    """Whether the sweep's rungs score as its final evaluation does (all evaluation pairs, its
    own decoding: the table's final columns at each step) rather than as the table's cheap
    rung score (`bench.learning_curves.RUNGS`); the rung settings come from the product's
    `rung_config`.

    Raises:
        SystemExit: the rungs score some other way, which the table did not measure.
    """
    rungs = rung_config(config.scheduler, budget)
    beams = rungs.num_beams or config.decoding.num_beams
    if (rungs.examples, beams) == (TABLE_RUNGS.examples, TABLE_RUNGS.num_beams):
        return False
    if rungs.examples is None and beams == config.decoding.num_beams:
        return True
    raise SystemExit(
        f"the table scores rungs on {TABLE_RUNGS.examples} pairs with {TABLE_RUNGS.num_beams} "
        "beam(s), or as the final evaluation (scheduler.rung_examples=null, rung_num_beams="
        f"{config.decoding.num_beams}); not on {rungs.examples} pairs with {beams}"
    )


@dataclass
class Replay:
    """The outcome of one simulated sweep."""

    points: list[tuple[float, float]] = field(default_factory=list)  # finished (rouge, params)
    trace: list[tuple[float, float]] = field(default_factory=list)  # (compute, hypervolume)
    compute: float = 0.0  # trial-seconds spent in all
    makespan: float = 0.0  # simulated seconds from the sweep's start (its screen's) to the end
    stopped: int = 0
    repeats: int = 0  # proposals answered from an earlier trial's record, not run
    students: list[Student] = field(default_factory=list)  # in the order they started

    def compute_to(self, hv: float) -> float:
        """Trial-seconds spent when the front first reached `hv` (inf if it never did)."""
        return next((c for c, h in self.trace if h >= hv - 1e-9), math.inf)


def replay(
    config: SweepConfig,
    curves: Curves,
    workers: int,
    trials: int,
    reference: list[float],
    students: Sequence[Student] | None = None,
    screen: Screen | None = None,
) -> Replay:
    """Simulate one sweep of `trials` trials on `workers` workers.

    Trials start when a worker is free and report in simulated time; the scheduler's rule sees
    reports in the order they happen. Compute is the sum of the trials' running times. The
    students come from the sweep's sampler, or, given `students`, are those in that order (to
    run the very trials of another replay under another scheduler). With a `screen`, its
    seconds come first (one process, before any trial) and its pick is tried after the
    `first:` points, as `search.strategy.screen` has the sweep do.
    """
    parent_layers = max((e, d) for e, d, _ in curves)
    sampler = make_sampler(config, parent_layers) if students is None else None
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    screened = screen.students if screen else []
    for point in points_to_try(config, screened, parent_layers) if students is None else ():
        study.enqueue_trial(point)
    spared = never_stopped(config, pick_points(config, screened, parent_layers))
    budget = max(curve.budget for curve in curves.values())
    rungs, own_score = [], False
    if config.scheduler.name == "asha":
        sched = config.scheduler
        rungs = rung_steps(budget, sched.reduction_factor, sched.rungs)
        own_score = scores_rungs_as_final(config, budget)
    rule = SuccessiveHalving(config.scheduler.reduction_factor, ["max", "min"])
    out = Replay()
    events: list[tuple[float, int, int]] = []  # (time, trial number, stage index)
    running: dict[int, tuple[optuna.Trial, Curve, float, list[Stage]]] = {}
    started = 0
    first: set[int] = set()  # trial numbers of those points

    def propose() -> tuple[optuna.Trial, Student]:
        """The sampler's next student, as the product's searcher gets it: a proposal that
        repeats a measured one is told that trial's record and not run
        (`search.strategy.repeats`)."""
        for attempt in range(MAX_REPEATS + 1):
            trial = study.ask()
            values = {**suggest(trial, config, parent_layers), **trial.params}
            chosen = plan(values, parent_layers)
            if attempt == MAX_REPEATS or not answer_repeat(study, trial):
                break
            out.repeats += 1
        if is_first_point(values, spared):
            first.add(trial.number)
        return trial, (len(chosen.encoder_layers), len(chosen.decoder_layers), chosen.strategy)

    def start(now: float) -> None:
        nonlocal started
        if started >= trials:
            return
        if students is None:
            trial, key = propose()
        else:
            trial, key = study.ask(), students[started]
            encoder, decoder, strategy = key
            given = {"encoder": encoder, "decoder": decoder, "strategy": strategy}
            if is_first_point(given, spared):  # spared as when the sampler proposed it
                first.add(trial.number)
        out.students.append(key)
        curve = curves[key]
        plan_stages = stages(curve, rungs, own_score)
        running[trial.number] = (trial, curve, now, plan_stages)
        heapq.heappush(events, (now + plan_stages[0].seconds, trial.number, 0))
        started += 1

    out.compute = screen.seconds if screen else 0.0
    for _ in range(workers):
        start(out.compute)
    while events:
        now, number, index = heapq.heappop(events)
        trial, curve, began, plan_stages = running[number]
        stage = plan_stages[index]
        if stage.final:
            study.tell(trial, [stage.rouge, curve.params])
            out.points.append((stage.rouge, curve.params))
        elif rule.judge(str(number), stage.step, [stage.rouge, curve.params]) or number in first:
            heapq.heappush(events, (began + plan_stages[index + 1].seconds, number, index + 1))
            continue
        else:
            trial.set_user_attr(STOPPED_AT_ATTR, [stage.rouge, curve.params])
            study.tell(trial, state=TrialState.PRUNED)
            out.stopped += 1
        out.compute += now - began
        out.makespan = now
        del running[number]
        spent = out.compute + sum(now - b for _, _, b, _ in running.values())
        hv = hypervolume(out.points, ["max", "min"], reference) if out.points else 0.0
        out.trace.append((spent, hv))
        start(now)
    return out


def clears_trade_off(point: tuple[float, float], full: tuple[float, float]) -> bool:
    """Whether a (ROUGE-L, parameters) point keeps `TRADE_OFF` of the `full` model's."""
    (rouge, params), (score, size) = point, full
    return rouge >= TRADE_OFF[0] * score and params <= TRADE_OFF[1] * size


def holds_trade_off(run: Replay, full: tuple[float, float]) -> bool:
    """Whether a finished student of the sweep clears `TRADE_OFF` of the `full` model."""
    return any(clears_trade_off(point, full) for point in run.points)


def trade_off_students(curves: Curves) -> list[Student]:
    """The table's students that clear `TRADE_OFF` of its full model."""
    full = final(curves[full_model(curves)])
    return [key for key, curve in curves.items() if clears_trade_off(final(curve), full)]


def full_model(curves: Curves) -> Student:
    """The table's largest student: the base model itself."""
    return max(curves, key=lambda k: (k[0], k[1]))


def final(curve: Curve) -> tuple[float, float]:
    """A student's final (ROUGE-L, parameters)."""
    return curve.checkpoints[curve.budget].rouge, curve.params


def space_curves(curves: Curves, config: SweepConfig) -> Curves:
    """The table's students that the sweep's space can propose: its strategies' rows."""
    wanted = set(param_values(config.layers.strategy))
    missing = wanted - {s for _, _, s in curves}
    if missing:
        raise SystemExit(
            f"the table has no students of strategy {sorted(missing)}: measure them with "
            "python -m bench.learning_curves --strategy ..., or --set layers.strategy=[...]"
        )
    return {key: curve for key, curve in curves.items() if key[2] in wanted}


def table_hypervolume(curves: Curves, reference: list[float]) -> float:
    """The best any search of the table can reach: the front of every student's final score."""
    return hypervolume([final(c) for c in curves.values()], ["max", "min"], reference)


def with_choice(config: SweepConfig, sampler: str, scheduler: str, seed: int) -> SweepConfig:
    """The sweep's configuration with another sampler, scheduler and seed."""
    return dataclasses.replace(
        config,
        sampler=dataclasses.replace(config.sampler, name=sampler, seed=seed),
        scheduler=dataclasses.replace(config.scheduler, name=scheduler),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", type=Path, default=DEFAULT_SPACE)
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--screen-table", type=Path, default=SCREEN_TABLE)
    parser.add_argument("--sampler", action="append", choices=SAMPLERS, dest="samplers")
    parser.add_argument("--scheduler", action="append", choices=SCHEDULERS, dest="schedulers")
    parser.add_argument("--workers", type=int, action="append", help="default: 2 and 8")
    parser.add_argument("--trials", type=int, default=40, help="trials per simulated sweep")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument(
        "--first-seed", type=int, default=0,
        help="seeds first-seed .. first-seed+seeds-1: tune on one range, report on another",
    )  # fmt: skip
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="KEY=VALUE")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    config = load_config(args.space, args.overrides)
    curves = space_curves(load_curves(args.table), config)
    args.screen = load_screen(args.screen_table, config.sampler.screen, set(curves))
    strategies = sorted({s for _, _, s in curves})
    parent = full_model(curves)
    reference = reference_point(config, int(curves[parent].params))
    best = table_hypervolume(curves, reference)
    print(f"{len(curves)} students ({', '.join(strategies)}); table hypervolume {best:.4g}")
    clearing = ", ".join(f"{e}+{d} {s}" for e, d, s in trade_off_students(curves)) or "none"
    score, size = TRADE_OFF
    print(f"students at >= {score:.0%} of the full model's ROUGE-L with <= {size:.0%} of its "
          f"parameters (column 'trade-off': seeds whose front holds one): {clearing}")  # fmt: skip
    report(config, curves, args, reference, best, final(curves[parent]))


def report(
    config: SweepConfig,
    curves: Curves,
    args: argparse.Namespace,
    reference: list[float],
    best: float,
    full: tuple[float, float],
) -> None:
    """Print, per workers x sampler x scheduler, the compute to reach TARGET of the table's
    hypervolume (mean and spread over seeds, and as a share of random search with fifo: the
    loop a user would write, so it runs without the screen that the other samplers get), the
    final hypervolume share and how many seeds found a `TRADE_OFF` student; then, per sampler,
    what asha saves on fifo's very trials."""
    for workers in args.workers or [2, 8]:
        last = args.first_seed + args.seeds - 1
        print(f"\n{workers} workers, {args.trials} trials, seeds {args.first_seed}-{last}")
        print(
            "sampler  scheduler  reached  compute-to-0.95 (h)  sd     vs random/fifo"
            "  final hv  spent (h)  wall (h)  stopped  repeats  trade-off"
        )
        fifo_runs: dict[str, list[Replay]] = {}
        rows = []
        for sampler in args.samplers or SAMPLERS:
            for scheduler in args.schedulers or SCHEDULERS:
                screen = None if sampler == "random" else args.screen
                runs = [
                    replay(with_choice(config, sampler, scheduler, seed), curves, workers,
                           args.trials, reference, screen=screen)
                    for seed in range(args.first_seed, args.first_seed + args.seeds)
                ]  # fmt: skip
                if scheduler == "fifo":
                    fifo_runs[sampler] = runs
                rows.append((sampler, scheduler, summarize(runs, best, full)))
        baseline = next((r["mean"] for s, c, r in rows if (s, c) == ("random", "fifo")), None)
        for sampler, scheduler, row in rows:
            ratio = row["mean"] / baseline if baseline else math.nan
            print(
                f"{sampler:8} {scheduler:9}  {row['reached']:>7}  {row['mean']:19.2f}"
                f"  {row['sd']:5.2f}  {ratio:14.3f}  {row['final']:8.3f}  {row['spent']:9.2f}"
                f"  {row['wall']:8.2f}  {row['stopped']:7.1f}  {row['repeats']:7.1f}"
                f"  {row['trade_off']:>9}"
            )
        if fifo_runs and "asha" in (args.schedulers or SCHEDULERS):
            report_same_trials(config, curves, workers, fifo_runs, reference, args.screen)


def report_same_trials(
    config: SweepConfig,
    curves: Curves,
    workers: int,
    fifo_runs: dict[str, list[Replay]],
    reference: list[float],
    screen: Screen | None,
) -> None:
    """asha on the very trials each fifo replay ran, in the same order: the share of fifo's
    trial-seconds it spends and of fifo's final hypervolume it keeps (mean, min-max)."""
    print("\nasha on fifo's trials   compute / fifo (min-max)   hypervolume / fifo (min-max)")
    for sampler, runs in fifo_runs.items():
        asha = with_choice(config, sampler, "asha", seed=0)
        compute, kept = [], []
        for fifo in runs:
            screened = None if sampler == "random" else screen
            again = replay(
                asha, curves, workers, len(fifo.students), reference, fifo.students, screened
            )
            compute.append(again.compute / fifo.compute)
            kept.append(again.trace[-1][1] / fifo.trace[-1][1])
        print(
            f"{sampler:8}                {statistics.mean(compute):5.3f} "
            f"({min(compute):.3f}-{max(compute):.3f})        {statistics.mean(kept):5.3f} "
            f"({min(kept):.3f}-{max(kept):.3f})"
        )


def summarize(runs: list[Replay], best: float, full: tuple[float, float]) -> dict[str, Any]:
    """Over seeds: how many reached TARGET of `best`, the hours of trial compute they needed
    (mean and spread, over those that reached it), the final hypervolume share, the hours
    spent in all and from first start to last end, trials stopped, proposals answered as
    repeats, and how many fronts hold a `TRADE_OFF` student of the `full` model."""
    needed = [r.compute_to(TARGET * best) / 3600 for r in runs]
    reached = [n for n in needed if math.isfinite(n)]
    return {
        "reached": f"{len(reached)}/{len(runs)}",
        "mean": statistics.mean(reached) if reached else math.inf,
        "sd": statistics.stdev(reached) if len(reached) > 1 else math.nan,
        "final": statistics.mean(r.trace[-1][1] / best for r in runs),
        "spent": statistics.mean(r.compute / 3600 for r in runs),
        "wall": statistics.mean(r.makespan / 3600 for r in runs),
        "stopped": statistics.mean(r.stopped for r in runs),
        "repeats": statistics.mean(r.repeats for r in runs),
        "trade_off": f"{sum(holds_trade_off(r, full) for r in runs)}/{len(runs)}",
    }


if __name__ == "__main__":
    main()
