"""The `shrink-sweep` command line: its commands and their options."""

from __future__ import annotations

import argparse
from pathlib import Path

from search.cli.commands import LATEST, export, pareto, plan, run, ui, validate


def build_parser() -> argparse.ArgumentParser:
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
