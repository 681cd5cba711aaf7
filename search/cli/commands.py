"""What each `shrink-sweep` command does: load what it needs (the slow imports inside each
command, so `--help`, `validate --file-only` and `pareto` start fast) and print its result."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from search.space.config import ConfigError, load_config, load_space

BAD_INPUT = 2
INTERRUPTED = 130  # the shell's code for Ctrl-C; the sweep can be resumed
LATEST = "latest"


def run(args: argparse.Namespace) -> int:
    """Run a sweep: shrink, fine-tune and score students, tracking every trial in MLflow."""
    if args.resume:
        _refuse_what_a_resume_ignores(args)
    print(f"checking {args.space}", flush=True)  # the first line, before the slow imports
    config, raw = load_space(args.space, _overrides(args))
    address = _ray_address(args)
    from search.driver.sweep import resume_sweep, run_sweep

    where = {
        "store": args.store,
        "tracking_uri": args.tracking_uri,
        "address": address,
        "max_failures": args.max_failures,
    }
    if args.resume:
        sweep = None if args.resume == LATEST else args.resume
        summary = resume_sweep(
            config.name, sweep, **where, verbose=args.verbose, trials=args.trials
        )
    else:
        summary = run_sweep(
            config, raw, **where, optuna_storage=args.optuna_storage, verbose=args.verbose
        )
    print(f"\nsweep {summary.sweep}: {summary.finished} finished, {summary.failed} failed")
    _print_front(summary.front, config)
    print(f"hypervolume {summary.hypervolume:.6g}")
    print(f"its Pareto plot: {summary.plot_url}")
    if summary.ui_command:
        print(f"serve the MLflow UI for it: {summary.ui_command}")
    if summary.message:
        print(f"shrink-sweep: {summary.message}", file=sys.stderr)
    if summary.outcome == "stopped":
        return INTERRUPTED
    return 0 if summary.outcome == "finished" and summary.finished else 1


def plan(args: argparse.Namespace) -> int:
    """Estimate a sweep before running it: its trial-hours and wall time, and each trial's
    step time and peak memory, from its largest and smallest students probed on one worker
    (`search.driver.plan`). Nothing is written; a space whose largest student cannot fit is
    refused."""
    print(f"checking {args.space}", flush=True)
    config, _ = load_space(args.space, _overrides(args))
    address = _ray_address(args)
    from search.driver.plan import describe, plan_sweep

    print("loading the model and data, probing the largest and the smallest student", flush=True)
    estimate = plan_sweep(config, address, args.store)
    print("\n".join(describe(estimate, config)))
    return 0


def validate(args: argparse.Namespace) -> int:
    """Check a space.yaml (and overrides) without running anything.

    Besides the file itself, the model's config (layer counts, architecture) and the data
    (splits, columns) are checked, as `run` does before its first trial; no weights are
    loaded. --file-only checks the file alone.
    """
    config = load_config(args.space, _overrides(args))
    if not args.file_only:
        from search.driver.preflight import check_inputs

        check_inputs(config)
    print(f"{args.space}: ok")
    return 0


def pareto(args: argparse.Namespace) -> int:
    """Print a sweep's Pareto front and write its plot (the latest sweep by default)."""
    from search.front.rows import front_rows, objective_pairs, write_front_csv
    from search.record.front_log import candidate_rows

    config, tracker, run = _open_sweep(args)
    front = front_rows(candidate_rows(tracker, config), objective_pairs(config))
    print(f"sweep {run.info.run_name} ({run.info.run_id})")
    _print_front(front, config)
    if args.out:
        write_front_csv(front, Path(args.out))
        print(f"wrote {args.out}")
    plot = Path(args.plot or args.store / f"{run.info.run_name}-pareto.html")
    print(f"plot: {tracker.download_sweep_artifact('pareto.html', plot)}")
    return 0


def export(args: argparse.Namespace) -> int:
    """Ship one trial of a sweep as a model directory (fp32, int8, model card), proved.

    By default the trial is the knee of the Pareto front over the sweep's objectives: each
    objective is rescaled over the front to [0, 1] (1 = the front's best) and the knee is the
    front trial with the largest sum, the one nearest the ideal point (with two objectives:
    the point farthest above the line joining the front's two ends). The export reloads what
    it wrote and re-scores it on the sweep's evaluation data (fp32 within 0.5 ROUGE-L of the
    trial, else it fails), measures the int8 variant, scores both on the held-out test split
    (which no trial saw) when the data has one, and registers the model in MLflow.
    """
    from search.export.card import report_lines
    from search.export.pick import pick_trial
    from search.export.ship import export_trial
    from search.front.rows import front_rows
    from search.record.front_log import candidate_rows

    config, tracker, run = _open_sweep(args)
    rows = candidate_rows(tracker, config)
    objectives = [(o.metric, o.mode) for o in config.objectives]
    pick = pick_trial(
        rows, objectives, trial=args.trial, max_params=args.max_params, min_rouge=args.min_rouge
    )
    print(f"sweep {run.info.run_name} ({run.info.run_id})")
    _print_front(front_rows(rows, objectives), config)
    print(f"exporting trial {pick.trial}: {pick.reason}")
    result = export_trial(
        config,
        tracker,
        run,
        pick,
        rows,
        out=args.out,
        force=args.force,
        register_name=args.register_name,
        alias=args.alias,
        test_split=args.test_split,
        test_examples=args.test_examples,
    )
    print("\n".join(report_lines(result)))
    return 0


def ui(args: argparse.Namespace) -> int:
    """Start the MLflow UI on the local store (127.0.0.1 unless told otherwise).

    Prints the links to the latest sweep's run and its Pareto plot, and tags the store's sweep
    experiments as model training, so that MLflow shows their runs. MLflow's background job
    workers (GenAI judges, scheduled trace jobs) are not started: browsing runs, artifacts and
    models does not use them, and they take half the UI's memory
    (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true starts them anyway).
    """
    from search.record.store import (
        default_uri,
        experiment_url,
        latest_sweep,
        mark_training_experiments,
        run_url,
    )

    store = Path(args.store).resolve()
    uri = default_uri(store)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    base = f"http://{shown}:{args.port}"
    print(f"MLflow UI on {base} (Ctrl-C to stop)")
    if (store / "mlflow.db").is_file():  # an empty store is not created here
        mark_training_experiments(uri)
        sweep = latest_sweep(uri)
        if sweep is not None:
            print(f"latest sweep {sweep.name}: {run_url(base, sweep.experiment_id, sweep.run_id)}")
            if sweep.has_plot:
                plot = run_url(base, sweep.experiment_id, sweep.run_id, "pareto.html")
                print(f"its Pareto plot: {plot}")
            print(f"its experiment's runs: {experiment_url(base, sweep.experiment_id)}")
    sys.stdout.flush()  # exec replaces the process: nothing buffered survives it
    command = [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", uri,
        "--host", args.host, "--port", str(args.port), "--workers", str(args.workers),
    ]  # fmt: skip
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    os.execve(sys.executable, command, env)
    return 0  # not reached


def _open_sweep(args: argparse.Namespace) -> tuple:
    """The configuration, a tracker on the sweep named by `args.sweep` (default the latest),
    and the sweep's parent run.

    Raises:
        SweepNotFound: no such sweep in the configuration's experiment.
    """
    from search.record.paths import SweepPaths
    from search.record.store import resolve_uri
    from search.record.tracker import open_sweep

    config = load_config(args.space, _overrides(args))
    uri = resolve_uri(args.tracking_uri, args.store)
    tracker, run = open_sweep(uri, config.name, SweepPaths(args.store).artifacts, args.sweep)
    return config, tracker, run


def _print_front(front: list[dict], config: object) -> None:
    from search.console import cell
    from search.front.pareto import front_table
    from search.front.rows import objective_pairs

    if not front:
        print("Pareto front: empty (no finished trial)")
        return
    table = front_table(front, objective_pairs(config))
    columns = ["trial", *[o.metric for o in config.objectives], "encoder_layers", "decoder_layers"]
    extra = [c for c in ("rouge1", "rouge2", "size_mb", "latency_ms") if c not in columns]
    columns += extra
    cells = [[cell(row.get(c)) for c in columns] for row in table]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print(f"Pareto front ({len(table)} trials):")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _refuse_what_a_resume_ignores(args: argparse.Namespace) -> None:
    """A resumed sweep runs with the space.yaml it began with (kept on its MLflow run): only
    the experiment's name, which finds it, and --trials, which extends it, may be given.

    Raises:
        ConfigError: an override that the resumed sweep would silently not apply.
    """
    kept = ("name", "trials")
    ignored = [o for o in _overrides(args) if o.partition("=")[0].strip() not in kept]
    if ignored:
        raise ConfigError(
            [
                f"--resume continues a sweep with the space.yaml it began with, so "
                f"{', '.join(ignored)} would not apply: start a new sweep to change it"
            ],
            source="the command line",
        )


def _ray_address(args: argparse.Namespace) -> str | None:
    """The cluster to join (--address, else RAY_ADDRESS), its token made ready for Ray."""
    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:
        from search.driver.cluster import use_cluster_token

        use_cluster_token()  # before Ray is imported: Ray reads RAY_AUTH_MODE then
    return address


def _overrides(args: argparse.Namespace) -> list[str]:
    overrides = list(args.set or [])
    for flag, key in (("model", "model"), ("trials", "trials"), ("name", "name")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    return overrides
