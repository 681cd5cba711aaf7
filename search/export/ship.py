"""The export itself: write the picked trial's model, prove it, register it.

`export_trial` builds the directory in a hidden sibling (`staging`), writes the fp32 model
(`model_dir`), reloads and re-scores it on the sweep's evaluation data, adds and re-scores the
int8 variant (`int8`), scores both on the held-out test split when the data has one, writes the
model card (`card`), renames the directory into place only when every check passed, and
registers it in MLflow as a model version. Nothing is trained.

The evaluation split is where the sweep chose the trial, so its scores flatter the model a
little; the test split, which no trial saw, is the estimate to quote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from importlib import resources
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search.console import echo, quiet_libraries
from search.export.card import model_card
from search.export.errors import ExportError
from search.export.int8 import INT8_DIR, INT8_WEIGHTS, load_int8, quantize_int8, save_int8
from search.export.model_dir import check_generates, write_model
from search.export.pick import Pick
from search.export.results import ExportResult, HeldOutScores, SweepInfo
from search.export.staging import check_target, staging
from search.front.rows import front_rows
from search.space.config import DecodingConfig, SweepConfig

DEFAULT_ALIAS = "best-tradeoff"
DEFAULT_TEST_SPLIT = "test"
ROUGE_TOLERANCE = 0.5  # points of ROUGE-L between the re-scored fp32 model and the trial
PYFUNC_FILE = "mlflow_model.py"  # the MLflow model's code, a module of this package


def sweep_info(run: Any, config: SweepConfig) -> SweepInfo:
    """Read the card's facts about a sweep from its MLflow parent run.

    Args:
        run: The sweep's parent run (`Tracker.find_sweep`).
        config: The sweep's configuration, for what the run does not record.

    Returns:
        The sweep's name, run id, base model and the base model's layer counts.
    """
    params, tags = run.data.params, run.data.tags
    layers = (params.get("parent_encoder_layers", "?"), params.get("parent_decoder_layers", "?"))
    return SweepInfo(
        run.info.run_name, run.info.run_id, tags.get("base_model", config.model), layers
    )


def default_out(sweep: str, trial: str) -> Path:
    """Where an export goes without `--out`: `exported/<sweep>-trial_<id>`."""
    return Path("exported") / f"{sweep}-trial_{trial}"


def export_trial(
    config: SweepConfig,
    tracker: Any,
    sweep_run: Any,
    pick: Pick,
    rows: Sequence[Mapping[str, Any]],
    *,
    out: Path | None = None,
    force: bool = False,
    register_name: str | None = None,
    alias: str = DEFAULT_ALIAS,
    test_split: str = DEFAULT_TEST_SPLIT,
    test_examples: int | None = None,
    progress: bool = True,
) -> ExportResult:
    """Write, prove and register the picked trial's model.

    Args:
        config: The space the sweep ran with: objectives, data and decoding.
        tracker: The sweep's `search.record.tracker.Tracker` (its `sweep_run_id` set).
        sweep_run: The sweep's parent run.
        pick: The trial to export (`pick_trial`).
        rows: Every finished trial row of the sweep, for the front in the card.
        out: The directory to write; default `default_out`.
        force: Replace `out` if it exists.
        register_name: The registered model's name; default `<experiment>-summarizer`.
        alias: The alias pointed at the new model version.
        test_split: The held-out split to score fp32 and int8 on; a dataset without it is
            said so (`HeldOutScores.missing`), not an error.
        test_examples: Score a seeded sample of this many test pairs; default all.
        progress: Print what is being done.

    Returns:
        What was written and measured, with the registered name and version.

    Raises:
        ExportError: `out` exists without `force`, the trial's weights were not kept, the
            exported model cannot generate, or it does not score what the sweep recorded.
        TrackingError: MLflow cannot store or register the export.
    """
    info = sweep_info(sweep_run, config)
    out = Path(out or default_out(info.name, pick.trial))
    check_target(out, force)
    checkpoint = trial_weights(pick.row, rows)
    quiet_libraries()
    # The trials' thread count, so latencies compare with the sweep's (and on a busy machine
    # extra threads only spin).
    threads = max(1, int(config.resources.cpus))
    torch.set_num_threads(threads)
    objectives = [(o.metric, o.mode) for o in config.objectives]
    with staging(out, force) as tmp:
        held_out = (test_split, test_examples)
        fp32, int8, test = build(config, pick, checkpoint, tmp, held_out, progress)
        front = front_rows(rows, objectives)
        result = ExportResult(out, info, pick, front, fp32, int8, test, threads)
        (tmp / "README.md").write_text(model_card(result, config))
    echo(progress, f"registering {out} in MLflow")
    name = register_name or f"{config.name}-summarizer"
    version = register(tracker, result, name, alias, example_source(config))
    return replace(result, model_name=name, version=version)


def trial_weights(row: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> Path:
    """The trial's saved model directory.

    Raises:
        ExportError: The sweep did not keep the trial's weights; names the trials it kept.
    """
    if _has_weights(row):
        return Path(row["checkpoint"])
    where = f"{row['checkpoint']} is gone" if row.get("checkpoint") else "none were saved"
    kept = ", ".join(sorted(str(r["trial"]) for r in rows if _has_weights(r))) or "none"
    raise ExportError(
        f"trial {row['trial']}'s weights were not kept ({where}): with keep_weights: pareto a "
        f"sweep deletes the weights of dominated trials. Trials with weights: {kept}"
    )


def _has_weights(row: Mapping[str, Any]) -> bool:
    checkpoint = row.get("checkpoint")
    return bool(checkpoint) and (Path(checkpoint) / "config.json").is_file()


def build(
    config: SweepConfig,
    pick: Pick,
    checkpoint: Path,
    directory: Path,
    held_out: tuple[str, int | None],
    progress: bool,
) -> tuple[dict[str, float], dict[str, float], HeldOutScores]:
    """Write the fp32 and int8 models into `directory`, reload both and score them.

    Args:
        held_out: The test split's name and how many of its pairs to score (None: all).

    Returns:
        The fp32 and int8 scores on the evaluation split (ROUGE, latency_ms, eval_loss,
        params, size_mb, examples), and both on the test split.

    Raises:
        ExportError: The written model cannot generate, or its fp32 ROUGE-L is more than
            `ROUGE_TOLERANCE` points from what the sweep recorded for the trial.
    """
    from trainables.shrink import count_parameters
    from trainables.trial import load_base, size_on_disk_mb

    echo(progress, f"writing trial {pick.trial} from {checkpoint}")
    write_model(checkpoint, directory, config)
    model, tokenizer = load_base(str(directory))
    check_generates(model, tokenizer)
    data = eval_data(config, tokenizer)
    echo(progress, f"re-scoring fp32 on {len(data.eval_references)} evaluation examples")
    params = float(count_parameters(model).total)
    fp32 = _score(model, tokenizer, data, config.decoding, params, size_on_disk_mb(directory))
    check_rescore(fp32["rougeL"], float(pick.row["rougeL"]), pick.trial)
    split, examples = held_out
    test, missing = _held_out_or_why_not(config, tokenizer, split, examples)
    pairs = f"{len(test.eval_references):,} pairs of the {split!r} split (held out)" if test else ""
    if test:
        echo(progress, f"scoring fp32 on {pairs}")
        fp32_test = _score(model, tokenizer, test, config.decoding, params, fp32["size_mb"])
    echo(progress, "quantizing to int8 and re-scoring")
    # quantize_int8 turns `model` itself into int8: every fp32 score is taken before this.
    save_int8(quantize_int8(model), directory / INT8_DIR)
    int8_model = load_int8(directory)
    check_generates(int8_model, tokenizer)
    int8_mb = (directory / INT8_DIR / INT8_WEIGHTS).stat().st_size / 1e6
    int8 = _score(int8_model, tokenizer, data, config.decoding, params, int8_mb)
    if not test:
        return fp32, int8, HeldOutScores(split, missing=missing)
    echo(progress, f"scoring int8 on {pairs}")
    int8_test = _score(int8_model, tokenizer, test, config.decoding, params, int8_mb)
    return fp32, int8, HeldOutScores(split, fp32_test, int8_test)


def _held_out_or_why_not(
    config: SweepConfig, tokenizer: Any, split: str, examples: int | None
) -> tuple[Any, str]:
    """The held-out data and "", or None and why there is none (e.g. no such split): not an
    error of the export, which the report and the card say."""
    from trainables.data import DataError

    try:
        return held_out_data(config, tokenizer, split, examples), ""
    except DataError as err:
        return None, str(err)


def _score(
    model: nn.Module, tokenizer: Any, data: Any, decoding: DecodingConfig, params: float, mb: float
) -> dict[str, float]:
    from trainables.scoring import evaluate_model

    metrics = evaluate_model(model, tokenizer, data, decoding)
    return {**metrics, "params": params, "size_mb": mb, "examples": len(data.eval_references)}


def check_rescore(
    rescored: float, recorded: float, trial: str, tolerance: float = ROUGE_TOLERANCE
) -> None:
    """Raises ExportError unless the exported model scores what the sweep recorded."""
    if abs(rescored - recorded) <= tolerance:
        return
    raise ExportError(
        f"trial {trial}: the exported model scores ROUGE-L {rescored:.2f}, the sweep recorded "
        f"{recorded:.2f} (more than {tolerance} points apart); nothing was written. Is --space "
        "the space.yaml the sweep ran with (data, decoding)?"
    )


def eval_data(config: SweepConfig, tokenizer: Any) -> Any:
    """The sweep's evaluation data, re-created from the space and tokenized with `tokenizer`."""
    from trainables.data import load_splits
    from trainables.tokens import tokenize_splits

    return tokenize_splits(load_splits(config.data), tokenizer, config.data)


def example_source(config: SweepConfig) -> str:
    """The first evaluation source as a user hands it to the model: the template filled, with
    no `source_prefix` (the shipped pipeline prepends that itself)."""
    from trainables.data import load_splits, source_texts

    data = replace(config.data, source_prefix="")
    return source_texts(load_splits(data)["eval"].select(range(1)), data)[0]


def held_out_data(config: SweepConfig, tokenizer: Any, split: str, examples: int | None) -> Any:
    """A held-out split as evaluation data, tokenized like the sweep's.

    Args:
        config: The sweep's configuration: where the data is, how sources are built.
        split: The held-out split, e.g. "test".
        examples: A seeded sample of this many pairs (as `max_eval_examples`); None: all.

    Returns:
        `TokenizedData` whose evaluation split is `split`.

    Raises:
        DataError: The data has no such split, or it cannot be used.
    """
    from trainables.data import load_splits
    from trainables.tokens import tokenize_splits

    # load_splits always loads a training split too; naming the held-out split there, cut to
    # one row, keeps a large training split from being read and tokenized for nothing.
    data = replace(
        config.data,
        train_split=split,
        eval_split=split,
        max_train_examples=1,
        max_eval_examples=examples,
    )
    return tokenize_splits(load_splits(data), tokenizer, data)


def register(tracker: Any, result: ExportResult, name: str, alias: str, example: str) -> str:
    """Log the export as an MLflow model of the sweep's run and register it as a model version.

    The MLflow model is a pyfunc (`mlflow_model.py`) around the export directory, which it
    keeps whole, so that `mlflow.pyfunc.load_model("models:/NAME@ALIAS")` and `mlflow models
    serve` summarize with it; `example` (a source text) is its input example.

    Returns:
        The new version number.
    """
    code = Path(str(resources.files(__package__).joinpath(PYFUNC_FILE)))
    model_id = tracker.models.log(
        result.directory, f"trial_{result.pick.trial}", code, example, model_requirements()
    )
    fp32, int8 = result.fp32, result.int8
    tags = {
        "trial": result.pick.trial,
        "sweep": result.sweep.name,
        "picked": result.pick.reason,
        "encoder_layers": str(result.pick.row.get("encoder_layers")),
        "decoder_layers": str(result.pick.row.get("decoder_layers")),
        "params": f"{fp32['params']:.0f}",
        "rougeL": f"{fp32['rougeL']:.2f}",
        "rougeL_int8": f"{int8['rougeL']:.2f}",
        "size_mb": f"{fp32['size_mb']:.2f}",
        "size_mb_int8": f"{int8['size_mb']:.2f}",
        **_test_tags(result.test),
    }
    description = (
        f"Trial {result.pick.trial} of sweep {result.sweep.name}, {result.pick.reason}. "
        f"ROUGE-L {fp32['rougeL']:.2f} (int8 {int8['rougeL']:.2f}) on the evaluation split"
        f"{_test_text(result.test)}, {fp32['params']:,.0f} parameters, "
        f"{fp32['size_mb']:.2f} MB (int8 {int8['size_mb']:.2f} MB)."
    )
    return tracker.models.register(name, model_id, alias=alias, tags=tags, description=description)


def model_requirements() -> list[str]:
    """The MLflow model's pip requirements: what `mlflow_model.py` imports, pinned to what
    exported it. Given, not inferred: MLflow's inference loads the model and may query PyPI."""
    from packaging.version import Version

    # The public version: a local label such as torch's "+cpu" is no package on PyPI.
    packages = ("mlflow", "transformers", "torch")
    return [f"{package}=={Version(version(package)).public}" for package in packages]


def _test_tags(test: HeldOutScores) -> dict[str, str]:
    """The model version's tags for the held-out scores, beside `rougeL` and `rougeL_int8`."""
    if not test.scored:
        return {"test_split": f"not scored: {test.missing}"}
    return {
        "test_split": test.split,
        "test_examples": f"{test.fp32['examples']:.0f}",
        "test_rougeL": f"{test.fp32['rougeL']:.2f}",
        "test_rougeL_int8": f"{test.int8['rougeL']:.2f}",
    }


def _test_text(test: HeldOutScores) -> str:
    if not test.scored:
        return ""
    return (
        f", {test.fp32['rougeL']:.2f} (int8 {test.int8['rougeL']:.2f}) on "
        f"{test.fp32['examples']:,.0f} pairs of the held-out {test.split!r} split"
    )
