"""`shrink-sweep`: a thin map from command names to functions.

Exit codes: 0 done; 2 bad input (configuration, model, data, tracking store, export target),
reported before any work starts; 130 interrupted (Ctrl-C, or a sweep stopped before its end:
`run --resume` continues it); 1 a sweep that stopped after --max-failures failed trials, or in
which no trial finished.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from search.space.config import ConfigError, load_config, load_space

BAD_INPUT = 2
INTERRUPTED = 130  # the shell's code for Ctrl-C; the sweep can be resumed
LATEST = "latest"


def entry() -> None:
    """The `shrink-sweep` command: `main`, then an exit that skips the interpreter's teardown.

    Freeing torch, transformers and Ray's C++ libraries at exit takes ~2 s here and writes
    nothing. Everything that does write is finished first: the command itself, a local Ray
    it started (shut down, not left running), logs and the output streams.
    """
    code = main()
    if "ray" in sys.modules:
        import ray

        ray.shutdown()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "command"):
        parser.print_help()
        return BAD_INPUT
    try:
        return args.command(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as err:
        if _is_bad_input(err):
            print(f"shrink-sweep: error: {err}", file=sys.stderr)
            return BAD_INPUT
        raise


def _is_bad_input(err: Exception) -> bool:
    from search.export.errors import ExportError
    from search.record.store import TrackingError
    from trainables.data import DataError
    from trainables.trial import ModelError

    return isinstance(err, (ConfigError, DataError, ExportError, ModelError, TrackingError))


# --- commands ------------------------------------------------------------------------------


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


# --- the parser ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shrink-sweep",
        description="Shrink and fine-tune seq2seq summarizers: search which layers to keep.",
    )
    commands = parser.add_subparsers(title="commands")

    p = _command(commands, "run", run)
    _space_args(p)
    p.add_argument("--model", help="override model: a hub name or a local directory")
    p.add_argument("--trials", type=int, help="override trials: how many trials to run")
    p.add_argument("--name", help="override name: the MLflow experiment")
    _store_args(p)
    p.add_argument(
        "--address", help="join this Ray cluster (default: RAY_ADDRESS, else a local Ray)"
    )
    once = p.add_mutually_exclusive_group()  # a resumed sweep keeps the study it began with
    once.add_argument(
        "--resume", nargs="?", const=LATEST, metavar="SWEEP",
        help="continue an interrupted sweep (its run id or name; default the latest) with its own "
        "space.yaml: finished trials are kept, unfinished ones rerun; with --trials N, extend a "
        "finished sweep to N trials",
    )  # fmt: skip
    once.add_argument(
        "--optuna-storage", metavar="URL",
        help="keep the Optuna study in this database, e.g. postgresql://user@host/optuna or "
        "sqlite:////shared/optuna.db (default: optuna.db in the store)",
    )  # fmt: skip
    p.add_argument(
        "--max-failures", type=int, metavar="N",
        help="stop the sweep once N trials failed (default: a quarter of the trials, at least 3)",
    )  # fmt: skip
    p.add_argument(
        "-v", "--verbose", action="store_true",
        help="also show the libraries' messages and warnings (always kept in the store's logs/)",
    )  # fmt: skip

    p = _command(commands, "plan", plan)
    _space_args(p)
    p.add_argument("--model", help="override model: a hub name or a local directory")
    p.add_argument("--trials", type=int, help="override trials: how many trials to plan for")
    p.add_argument("--store", type=Path, default=Path("mlflow"), help="where run keeps labels")
    p.add_argument("--address", help="probe on this Ray cluster (default: a local Ray)")

    p = _command(commands, "validate", validate)
    _space_args(p)
    p.add_argument("--file-only", action="store_true", help="check the file, not the model or data")

    p = _command(commands, "pareto", pareto)
    p.add_argument("sweep", nargs="?", help="the sweep's MLflow run id or name (default: latest)")
    p.add_argument("--space", default="space.yaml", help="the space.yaml the sweep ran with")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a value")
    p.add_argument("--out", help="also write the front to this CSV file")
    p.add_argument("--plot", help="where to write the plot (default <store>/<sweep>-pareto.html)")
    _store_args(p)

    p = _command(commands, "export", export)
    p.add_argument("sweep", nargs="?", help="the sweep's MLflow run id or name (default: latest)")
    p.add_argument(
        "--space", default="space.yaml",
        help="the space.yaml the sweep ran with: objectives, data, decoding (default ./space.yaml)",
    )  # fmt: skip
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a value")
    rule = p.add_mutually_exclusive_group()
    rule.add_argument("--trial", metavar="ID", help="export this trial (default: the knee)")
    rule.add_argument(
        "--max-params", type=float, metavar="N",
        help="export the best ROUGE-L among trials with at most N parameters",
    )  # fmt: skip
    rule.add_argument(
        "--min-rouge", type=float, metavar="X",
        help="export the smallest model (fewest parameters) with ROUGE-L at least X",
    )  # fmt: skip
    p.add_argument(
        "--out", type=Path, help="the directory to write (default exported/<sweep>-trial_<id>)"
    )
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--register-name", metavar="NAME",
        help="the MLflow registered model (default <experiment>-summarizer)",
    )  # fmt: skip
    p.add_argument(
        "--alias", default="best-tradeoff",
        help="the alias moved to the new model version (default best-tradeoff)",
    )  # fmt: skip
    p.add_argument(
        "--test-split", default="test", metavar="NAME",
        help="the held-out split to score fp32 and int8 on; skipped, with a note, if the data "
        "has none (default test)",
    )  # fmt: skip
    p.add_argument(
        "--test-examples", type=_positive_int, metavar="N",
        help="score a seeded sample of N test pairs (default: all)",
    )  # fmt: skip
    _store_args(p)

    p = _command(commands, "ui", ui)
    p.add_argument(
        "--store", type=Path, default=Path("mlflow"), help="local store (default ./mlflow)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    p.add_argument(
        "--workers", type=_positive_int, default=1,
        help="MLflow's server processes (default 1: one person browsing needs no more)",
    )  # fmt: skip
    return parser


def _command(
    commands: argparse._SubParsersAction, name: str, func: object
) -> argparse.ArgumentParser:
    doc = (func.__doc__ or "").strip()
    p = commands.add_parser(name, help=doc.splitlines()[0], description=doc)
    p.set_defaults(command=func)
    return p


def _space_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "space", nargs="?", default="space.yaml", help="the search space (default ./space.yaml)"
    )
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE",
        help="override any value of space.yaml, e.g. --set data.max_train_examples=200",
    )  # fmt: skip


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store", type=Path, default=Path("mlflow"), help="local store (default ./mlflow)"
    )
    p.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else the store)"
    )


if __name__ == "__main__":
    entry()
