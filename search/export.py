"""`shrink-sweep export`: pick one trial of a sweep and ship it as a model directory, proved.

Picking is pure: `pick_trial` chooses among a sweep's finished trial rows, by default the knee
of the Pareto front. `export_trial` then builds the directory in a hidden sibling, reloads and
re-scores what it wrote (fp32 and int8) on the sweep's evaluation data, writes the model card,
and renames the directory into place only when every check passed; MLflow then records it as a
registered model version. Nothing is trained.

Besides a plain Hugging Face model directory the export holds:

- `summarization_pipeline.py`, named in config.json's `custom_pipelines`: transformers 5
  removed its summarization pipeline, so `pipeline("summarization", model=DIR,
  trust_remote_code=True)` runs this short one (tokenize, `generate`, decode);
- `int8/`: the model with int8 weights (PyTorch dynamic quantization), read by `load_int8`;
- `README.md`: the model card.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search.config import DecodingConfig, SweepConfig
from search.pareto import front_table, knee, pareto_front

DEFAULT_ALIAS = "best-tradeoff"
ROUGE_TOLERANCE = 0.5  # points of ROUGE-L between the re-scored fp32 model and the trial
INT8_TARGET = 0.30  # int8 weights on disk as a share of fp32
INT8_DIR = "int8"
INT8_WEIGHTS = "model.pt"
INT8_FORMAT = "shrink-sweep-int8/1"
PIPELINE_TASK = "summarization"
PIPELINE_FILE = "summarization_pipeline.py"


class ExportError(ValueError):
    """The asked-for export cannot be made; the message says why and what to do."""


# --- Picking (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class Pick:
    """The trial chosen for export, and why."""

    row: dict[str, Any]
    reason: str

    @property
    def trial(self) -> str:
        return str(self.row["trial"])


def pick_trial(
    rows: Sequence[Mapping[str, Any]],
    objectives: Sequence[tuple[str, str]],
    *,
    trial: str | None = None,
    max_params: float | None = None,
    min_rouge: float | None = None,
) -> Pick:
    """Choose the trial to export among a sweep's finished trials.

    Without a rule, the knee of the Pareto front over `objectives` (`search.pareto.knee`).
    The rules compare `rougeL` and `params` whatever the objectives.

    Args:
        rows: Finished trial rows (`Tracker.trial_rows`), each with `trial` and its metrics.
        objectives: (metric, mode) pairs of the sweep, e.g. [("rougeL", "max"), ("params", "min")].
        trial: Export this trial id.
        max_params: The best ROUGE-L among trials with at most this many parameters (ties: fewer
            parameters).
        min_rouge: The smallest model (fewest parameters) with ROUGE-L at least this (ties:
            higher ROUGE-L).

    Returns:
        The chosen row and the reason, in words.

    Raises:
        ExportError: No rows, more than one rule, an unknown trial, or no trial meets the rule.
    """
    if not rows:
        raise ExportError("the sweep has no finished trial yet")
    if sum(rule is not None for rule in (trial, max_params, min_rouge)) > 1:
        raise ExportError("choose at most one of --trial, --max-params and --min-rouge")
    if trial is not None:
        return _pick_by_id(rows, trial)
    if max_params is not None:
        return _pick_under_params(rows, max_params)
    if min_rouge is not None:
        return _pick_above_rouge(rows, min_rouge)
    return _pick_knee(rows, objectives)


def front_rows(
    rows: Sequence[Mapping[str, Any]], objectives: Sequence[tuple[str, str]]
) -> list[dict[str, Any]]:
    """The rows on the Pareto front, best first by the first objective.

    Args:
        rows: Finished trial rows; rows lacking an objective are left out.
        objectives: (metric, mode) pairs.

    Returns:
        Copies of the front rows.
    """
    scored = _with_metrics(rows, [metric for metric, _ in objectives])
    return front_table(scored, objectives) if scored else []


def _pick_by_id(rows: Sequence[Mapping[str, Any]], trial: str) -> Pick:
    for row in rows:
        if str(row["trial"]) == trial:
            return Pick(dict(row), "asked for with --trial")
    known = ", ".join(sorted(str(r["trial"]) for r in rows))
    raise ExportError(f"no finished trial {trial!r} in this sweep (finished: {known})")


def _pick_under_params(rows: Sequence[Mapping[str, Any]], max_params: float) -> Pick:
    scored = _with_metrics(rows, ["rougeL", "params"])
    fitting = [r for r in scored if r["params"] <= max_params]
    if not fitting:
        smallest = min((r["params"] for r in scored), default=float("nan"))
        raise ExportError(
            f"no trial has at most {max_params:,.0f} parameters (the smallest has {smallest:,.0f})"
        )
    best = min(fitting, key=lambda r: (-r["rougeL"], r["params"], str(r["trial"])))
    return Pick(
        best,
        f"the best ROUGE-L ({best['rougeL']:.2f}) among the {len(fitting)} trial(s) with at "
        f"most {max_params:,.0f} parameters",
    )


def _pick_above_rouge(rows: Sequence[Mapping[str, Any]], min_rouge: float) -> Pick:
    scored = _with_metrics(rows, ["rougeL", "params"])
    good = [r for r in scored if r["rougeL"] >= min_rouge]
    if not good:
        best = max((r["rougeL"] for r in scored), default=float("nan"))
        raise ExportError(f"no trial reaches ROUGE-L {min_rouge:g} (the best has {best:.2f})")
    smallest = min(good, key=lambda r: (r["params"], -r["rougeL"], str(r["trial"])))
    return Pick(
        smallest,
        f"the smallest model ({smallest['params']:,.0f} parameters) among the {len(good)} "
        f"trial(s) with ROUGE-L >= {min_rouge:g}",
    )


def _pick_knee(rows: Sequence[Mapping[str, Any]], objectives: Sequence[tuple[str, str]]) -> Pick:
    metrics = [metric for metric, _ in objectives]
    modes = [mode for _, mode in objectives]
    scored = _with_metrics(rows, metrics)
    if not scored:
        raise ExportError(f"no finished trial reports every objective ({', '.join(metrics)})")
    values = [[r[m] for m in metrics] for r in scored]
    on_front = int(pareto_front(values, modes).sum())
    named = ", ".join(f"{metric} {mode}" for metric, mode in objectives)
    if on_front == 1:
        return Pick(scored[knee(values, modes)], f"the only trial on the Pareto front ({named})")
    return Pick(
        scored[knee(values, modes)],
        f"the knee of the Pareto front ({named}; {on_front} trials on it): the front trial "
        "with the largest sum of objectives rescaled to [0, 1] over the front",
    )


def _with_metrics(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> list[dict]:
    """Copies of the rows that report every metric, those metrics as floats."""
    out = []
    for row in rows:
        if all(row.get(m) is not None for m in metrics):
            out.append({**row, **{m: float(row[m]) for m in metrics}})
    return out


# --- The export ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepInfo:
    """What the model card says about the sweep a model came from."""

    name: str
    run_id: str
    base_model: str
    parent_layers: tuple[str, str]  # encoder and decoder layer counts of the base model


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and measured."""

    directory: Path
    sweep: SweepInfo
    pick: Pick
    front: list[dict[str, Any]]
    fp32: dict[str, float]  # re-scored ROUGE, latency_ms, eval_loss, params, size_mb, examples
    int8: dict[str, float]
    threads: int
    model_name: str = ""
    version: str = ""

    @property
    def int8_ratio(self) -> float:
        return self.int8["size_mb"] / self.fp32["size_mb"]


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
    progress: bool = True,
) -> ExportResult:
    """Write, prove and register the picked trial's model.

    Args:
        config: The space the sweep ran with: objectives, data and decoding.
        tracker: The sweep's `search.tracking.Tracker` (its `sweep_run_id` set).
        sweep_run: The sweep's parent run.
        pick: The trial to export (`pick_trial`).
        rows: Every finished trial row of the sweep, for the front in the card.
        out: The directory to write; default `default_out`.
        force: Replace `out` if it exists.
        register_name: The registered model's name; default `<experiment>-summarizer`.
        alias: The alias pointed at the new model version.
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
    _quiet_libraries()
    # The trials' thread count, so latencies compare with the sweep's (and on a busy machine
    # extra threads only spin).
    threads = max(1, int(config.resources.cpus))
    torch.set_num_threads(threads)
    objectives = [(o.metric, o.mode) for o in config.objectives]
    with staging(out, force) as tmp:
        fp32, int8 = build(config, pick, checkpoint, tmp, progress)
        result = ExportResult(out, info, pick, front_rows(rows, objectives), fp32, int8, threads)
        (tmp / "README.md").write_text(model_card(result, config))
        _share_files(tmp)
    _echo(progress, f"registering {out} in MLflow")
    name = register_name or f"{config.name}-summarizer"
    version = register(tracker, result, name, alias)
    return replace(result, model_name=name, version=version)


def check_target(out: Path, force: bool) -> None:
    """Raises ExportError if `out` exists and may not be replaced."""
    if out.exists() and not force:
        raise ExportError(f"{out} exists; pass --force to replace it, or choose another --out")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory")


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


@contextlib.contextmanager
def staging(out: Path, force: bool) -> Iterator[Path]:
    """A hidden directory beside `out` that becomes `out` only if the block completes.

    Until the final rename nothing at `out` changes, so an interrupted export leaves no
    directory that looks complete (at most a hidden `.<name>.partial-*`, removed on errors).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
        _move_into_place(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _share_files(directory: Path) -> None:
    """Give every file the mode the umask allows.

    safetensors writes weights through a private temporary file (mode 0600), but a shipped
    model is read by other users and services.
    """
    umask = os.umask(0)
    os.umask(umask)
    for path in directory.rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~umask)


def _move_into_place(tmp: Path, out: Path, force: bool) -> None:
    if not out.exists():
        tmp.rename(out)
        return
    check_target(out, force)  # it may have appeared while we worked
    old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
    out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def build(
    config: SweepConfig, pick: Pick, checkpoint: Path, directory: Path, progress: bool
) -> tuple[dict[str, float], dict[str, float]]:
    """Write the fp32 and int8 models into `directory`, reload both and score them.

    Returns:
        The fp32 and int8 scores: ROUGE, latency_ms, eval_loss, params, size_mb, examples.

    Raises:
        ExportError: The written model cannot generate, or its fp32 ROUGE-L is more than
            `ROUGE_TOLERANCE` points from what the sweep recorded for the trial.
    """
    from trainables.shrink import count_parameters
    from trainables.trial import load_base

    _echo(progress, f"writing trial {pick.trial} from {checkpoint}")
    write_model(checkpoint, directory, config)
    model, tokenizer = load_base(str(directory))
    check_generates(model, tokenizer)
    data = eval_data(config, tokenizer)
    _echo(progress, f"re-scoring fp32 on {len(data.eval_references)} evaluation examples")
    params = float(count_parameters(model).total)
    fp32 = _score(model, tokenizer, data, config.decoding, params, weights_mb(directory))
    check_rescore(fp32["rougeL"], float(pick.row["rougeL"]), pick.trial)
    _echo(progress, "quantizing to int8 and re-scoring")
    save_int8(quantize_int8(model), directory / INT8_DIR)
    int8_model = load_int8(directory)
    check_generates(int8_model, tokenizer)
    int8_mb = (directory / INT8_DIR / INT8_WEIGHTS).stat().st_size / 1e6
    int8 = _score(int8_model, tokenizer, data, config.decoding, params, int8_mb)
    return fp32, int8


def _score(
    model: nn.Module, tokenizer: Any, data: Any, decoding: DecodingConfig, params: float, mb: float
) -> dict[str, float]:
    from trainables.train import evaluate_model

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
    from trainables.data import load_splits, tokenize_splits

    return tokenize_splits(load_splits(config.data), tokenizer, config.data)


def weights_mb(directory: Path) -> float:
    """Megabytes (10^6 bytes) of the fp32 weight files at the top of a model directory."""
    return sum(p.stat().st_size for p in Path(directory).glob("*.safetensors")) / 1e6


# --- The fp32 model directory --------------------------------------------------------------


def write_model(checkpoint: Path, directory: Path, config: SweepConfig) -> None:
    """Write a trial's model as a Hugging Face model directory that serves as trained and scored.

    The weights and tokenizer are the trial's. config.json learns to size the generation
    cache from the decoder (`fit_cache_to_decoder`) and names the summarization pipeline;
    generation_config.json gets the sweep's decoding; the tokenizer truncates sources at
    `data.max_source_length`, as in training.

    Args:
        checkpoint: The trial's saved model directory.
        directory: An empty directory to write into.
        config: The sweep's configuration (data and decoding).
    """
    from trainables.train import generation_config
    from trainables.trial import load_base

    model, tokenizer = load_base(str(checkpoint))
    fit_cache_to_decoder(model.config)
    model.config.custom_pipelines = {
        PIPELINE_TASK: {
            "impl": f"{Path(PIPELINE_FILE).stem}.SummarizationPipeline",
            "pt": ["AutoModelForSeq2SeqLM"],
        }
    }
    if config.data.source_prefix:
        model.config.prefix = config.data.source_prefix  # pipelines prepend config.prefix
    # The decoding the sweep scored with, as trainables.train.evaluate_model decodes.
    model.generation_config = generation_config(model.generation_config, config.decoding)
    tokenizer.model_max_length = config.data.max_source_length
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / PIPELINE_FILE).write_text(PIPELINE_SOURCE)


def fit_cache_to_decoder(config: Any) -> None:
    """Make transformers size `generate()`'s default cache from the decoder's layer count.

    transformers 5 sizes the cache from `config.get_text_config(decoder=True)`. For a flat
    encoder-decoder config that copy renames `decoder_*` keys (`decoder_layers` becomes
    `num_hidden_layers`), but a T5's decoder count is `num_decoder_layers`, so the copy keeps the
    encoder's `num_layers`, and a student with more decoder than encoder layers overflows the
    cache (IndexError in `generate`). A `decoder_layers` entry, which T5's own code never reads,
    makes the copy count the decoder. BART-family configs have it already.

    Args:
        config: The model's config, changed in place.

    Raises:
        ExportError: The cache would still be sized wrongly (an architecture this does not know).
    """
    from trainables.shrink import layer_counts

    _, n_decoder = layer_counts(config)
    if not hasattr(config, "decoder_layers"):
        config.decoder_layers = n_decoder
    sized = config.get_text_config(decoder=True).num_hidden_layers
    if sized != n_decoder:
        raise ExportError(
            f"transformers would size this {config.model_type} model's generation cache for "
            f"{sized} layers, but its decoder has {n_decoder}; export a trial with at most "
            f"{sized} decoder layers"
        )


def check_generates(model: nn.Module, tokenizer: Any) -> None:
    """Generate a few tokens as `pipeline` would: transformers' default cache, no extras.

    Raises:
        ExportError: `generate` fails.
    """
    inputs = tokenizer(["a short text to summarize"], return_tensors="pt")
    try:
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=3)
    except (IndexError, RuntimeError, ValueError) as err:
        raise ExportError(
            f"the exported model cannot generate ({type(err).__name__}: {err})"
        ) from err


# --- int8 ----------------------------------------------------------------------------------

_DYNAMIC_LINEAR = torch.ao.nn.quantized.dynamic.Linear


class Int8Embedding(nn.Module):
    """Token embeddings held as int8 rows with one float scale per row (`int8_rows`)."""

    def __init__(
        self, weight_int8: torch.Tensor, scale: torch.Tensor, embed_scale: float = 1.0
    ) -> None:
        super().__init__()
        self.register_buffer("weight_int8", weight_int8)
        self.register_buffer("scale", scale)
        self.embed_scale = embed_scale  # BART scales embeddings by sqrt(d_model)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = self.weight_int8[input_ids].float() * self.scale[input_ids].unsqueeze(-1)
        return rows * self.embed_scale


def int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a table symmetrically per row.

    Args:
        weight: A float matrix, one row per token.

    Returns:
        The int8 rows and the float32 scale of each row (row = int8 * scale).
    """
    weight = weight.detach().float()
    scale = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127
    return torch.round(weight / scale[:, None]).char(), scale


class TiedInt8Embedding(nn.Module):
    """Token embeddings read from the int8 LM head they are tied to, so one table is stored.

    The head's rows are unpacked on first use and kept (an int8 copy in memory; unpacking on
    every call took longer than the LM head itself); loading a state dict into the head drops
    the copy.
    """

    def __init__(self, head: nn.Module, embed_scale: float = 1.0) -> None:
        super().__init__()
        # Not a submodule: the state dict holds the table once, as the head's weights.
        self.__dict__["head"] = head
        self.embed_scale = embed_scale
        self.table: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        head.register_load_state_dict_post_hook(self._forget_table)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.table is None:
            weight = self.head.weight()  # per-channel qint8: one scale per vocabulary row
            zero = weight.q_per_channel_zero_points().float()
            self.table = (weight.int_repr(), zero, weight.q_per_channel_scales().float())
        rows, zero, scale = self.table
        shifted = rows[input_ids].float() - zero[input_ids].unsqueeze(-1)
        return shifted * scale[input_ids].unsqueeze(-1) * self.embed_scale

    def _forget_table(self, module: nn.Module, incompatible_keys: Any) -> None:
        self.table = None


def quantize_int8(model: nn.Module) -> nn.Module:
    """Make a seq2seq model int8 in place: its linear layers and its token embeddings.

    Linear layers become PyTorch dynamic-quantized ones (int8 weights with one scale per output
    row, activations quantized on the fly), the int8 path that runs on any CPU without new
    dependencies. Token embeddings become int8 rows; when tied to the LM head (T5, BART) they
    read the head's int8 weights, so the largest matrix of a small model is stored once, as in
    the fp32 safetensors. Norms and position tables stay fp32.

    Args:
        model: A transformers seq2seq LM in fp32.

    Returns:
        `model`, quantized.
    """
    head_weight = getattr(model.get_output_embeddings(), "weight", None)
    tables = _token_tables(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notice that torchao will replace this API
        torch.ao.quantization.quantize_dynamic(
            model,
            {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig},
            dtype=torch.qint8,
            inplace=True,
        )
    _replace_tables(tables, model.get_output_embeddings(), head_weight)
    return model


def _replace_tables(
    tables: list[tuple[nn.Module, str, nn.Embedding]], head: nn.Module, head_weight: Any
) -> None:
    """Put int8 modules in the places of the token tables; tied ones read the int8 head."""
    # transformers 5 gives the encoder and decoder their own modules sharing one weight; their
    # replacements share one int8 table too (torch.save stores a shared tensor once).
    rows: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    replaced: dict[tuple[int, float], nn.Module] = {}
    for parent, name, table in tables:
        scale = float(getattr(table, "embed_scale", 1.0))
        key = (id(table.weight), scale)
        if key not in replaced:
            tied = table.weight is head_weight and isinstance(head, _DYNAMIC_LINEAR)
            if not tied and id(table.weight) not in rows:
                rows[id(table.weight)] = int8_rows(table.weight)
            replaced[key] = (
                TiedInt8Embedding(head, scale) if tied else Int8Embedding(*rows[key[0]], scale)
            )
        setattr(parent, name, replaced[key])


def _token_tables(model: nn.Module) -> list[tuple[nn.Module, str, nn.Embedding]]:
    """Every token-embedding module with its parent and name.

    Token tables have a row per vocabulary entry and look rows up plainly or scaled (BART);
    position tables (other sizes, other `forward`s) are left alone.
    """
    vocab = model.get_input_embeddings().num_embeddings
    return [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Embedding)
        and child.num_embeddings == vocab
        and (type(child).forward is nn.Embedding.forward or hasattr(child, "embed_scale"))
    ]


def save_int8(model: nn.Module, directory: Path) -> None:
    """Save a `quantize_int8` model's state dict and a note of its format to `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / INT8_WEIGHTS)
    note = {
        "format": INT8_FORMAT,
        "torch": torch.__version__,
        "linear": "dynamic int8: qint8 weights, one scale per output row",
        "embeddings": "int8 rows with one scale per row, read from the LM head when tied",
        "load": "search.export.load_int8(<export directory>)",
    }
    (directory / "quantization.json").write_text(json.dumps(note, indent=2) + "\n")


def load_int8(directory: str | Path) -> nn.Module:
    """Load the int8 variant of an exported model, ready to generate on a CPU.

    The architecture is rebuilt from the directory's config.json, quantized as on export,
    and filled with `int8/model.pt`; generation settings come from generation_config.json.

    Args:
        directory: The export directory (holding config.json and `int8/`).

    Returns:
        The int8 model in eval mode; its tokenizer is `AutoTokenizer.from_pretrained(directory)`.

    Raises:
        ExportError: The directory holds no int8 model of a known format.
    """
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, GenerationConfig

    directory = Path(directory)
    note = directory / INT8_DIR / "quantization.json"
    if not note.is_file() or json.loads(note.read_text()).get("format") != INT8_FORMAT:
        raise ExportError(f"{directory} holds no int8 model of format {INT8_FORMAT}")
    model = AutoModelForSeq2SeqLM.from_config(AutoConfig.from_pretrained(directory))
    model.generation_config = GenerationConfig.from_pretrained(directory)
    quantize_int8(model.float().eval())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch rebuilds quantized tensors with TypedStorage
        state = torch.load(directory / INT8_DIR / INT8_WEIGHTS, weights_only=True)
    model.load_state_dict(state)
    return model.eval()


# --- MLflow --------------------------------------------------------------------------------


def register(tracker: Any, result: ExportResult, name: str, alias: str) -> str:
    """Copy the export into the sweep's artifacts and register it as a model version.

    Returns:
        The new version number.
    """
    source = tracker.log_export(result.directory, f"export/trial_{result.pick.trial}")
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
    }
    description = (
        f"Trial {result.pick.trial} of sweep {result.sweep.name}, {result.pick.reason}. "
        f"ROUGE-L {fp32['rougeL']:.2f} (int8 {int8['rougeL']:.2f}), {fp32['params']:,.0f} "
        f"parameters, {fp32['size_mb']:.2f} MB (int8 {int8['size_mb']:.2f} MB)."
    )
    return tracker.register_model(name, source, alias=alias, tags=tags, description=description)


# --- Reporting -----------------------------------------------------------------------------


def report_lines(result: ExportResult) -> list[str]:
    """What the CLI prints once an export is done: sizes, scores, the registered version."""
    fp32, int8 = result.fp32, result.int8
    recorded = float(result.pick.row["rougeL"])
    drop = fp32["rougeL"] - int8["rougeL"]
    target = "" if result.int8_ratio <= INT8_TARGET else f", above the {INT8_TARGET:.0%} target"
    return [
        f"wrote {result.directory}",
        f"  fp32  ROUGE-L {fp32['rougeL']:6.2f} (the sweep recorded {recorded:.2f})  "
        f"{fp32['size_mb']:8.2f} MB  {fp32['latency_ms']:7.1f} ms/example",
        f"  int8  ROUGE-L {int8['rougeL']:6.2f} (drop {drop:.2f} points)        "
        f"{int8['size_mb']:8.2f} MB  {int8['latency_ms']:7.1f} ms/example",
        f"  int8 weights are {result.int8_ratio:.1%} of fp32 on disk "
        f"(fp32/int8 = {1 / result.int8_ratio:.1f}x{target})",
        f"registered {result.model_name} version {result.version}",
        f'try it: pipeline("summarization", model="{result.directory}", trust_remote_code=True)',
    ]


def model_card(result: ExportResult, config: SweepConfig) -> str:
    """The README.md of an export directory: what the model is, how good, how to use it."""
    sections = [
        _card_header(result),
        _card_use(result, config),
        _card_scores(result, config),
        _card_training(result),
        _card_front(result, config),
        _card_files(),
    ]
    return "\n\n".join(sections) + "\n"


def _card_header(result: ExportResult) -> str:
    row, info = result.pick.row, result.sweep
    return f"""---
library_name: transformers
pipeline_tag: summarization
tags: [summarization, shrink-sweep]
---

# {result.directory.name}

A summarizer shrunk by shrink-sweep and fine-tuned after shrinking. The export copied the
trial's weights unchanged and re-scored them.

- base model: `{info.base_model}`
- sweep: `{info.name}` (MLflow run `{info.run_id}`), trial `{result.pick.trial}`
- encoder layers kept: {row.get("encoder_layers")} of {info.parent_layers[0]}
- decoder layers kept: {row.get("decoder_layers")} of {info.parent_layers[1]}
- layer strategy: `{row.get("strategy", "?")}`
- picked as: {result.pick.reason}"""


def _card_use(result: ExportResult, config: SweepConfig) -> str:
    data = config.data
    source = data.source_template or f"{{{data.source_column}}}"
    prefix = f" after the prefix `{data.source_prefix}`" if data.source_prefix else ""
    return f"""## Use

```python
from transformers import pipeline

summarize = pipeline("summarization", model="{result.directory.name}", trust_remote_code=True)
print(summarize("...")[0]["summary_text"])
```

transformers 5 removed its built-in summarization pipeline, so this directory brings one:
`trust_remote_code=True` runs `summarization_pipeline.py` (tokenize, `generate`, decode).
Without it, use `AutoModelForSeq2SeqLM.from_pretrained(...)` and `generate`; both decode with
generation_config.json, the sweep's settings: {_decoding_text(config.decoding)}.

Inputs were built as `{source}`{prefix} and cut to {data.max_source_length} tokens.

The int8 variant for CPU serving (needs `shrink-sweep` installed):

```python
from search.export import load_int8
from transformers import AutoTokenizer

model = load_int8("{result.directory.name}")
tokenizer = AutoTokenizer.from_pretrained("{result.directory.name}")
```"""


def _card_scores(result: ExportResult, config: SweepConfig) -> str:
    fp32, int8 = result.fp32, result.int8
    data = config.data
    where = data.name or data.files.get(data.eval_split, "?")
    lines = [
        "## Evaluation",
        "",
        f"{fp32['examples']:.0f} examples of the `{data.eval_split}` split of `{where}` (the "
        f"sweep's evaluation data), decoded with {_decoding_text(config.decoding)}; measured on "
        f"the exporting machine with {result.threads} CPU thread(s), batches of 32. The sweep "
        f"recorded ROUGE-L {float(result.pick.row['rougeL']):.2f} for this trial.",
        "",
        "| | fp32 | int8 |",
        "|---|---:|---:|",
    ]
    for key, label in (
        ("rouge1", "ROUGE-1"),
        ("rouge2", "ROUGE-2"),
        ("rougeL", "ROUGE-L"),
        ("rougeLsum", "ROUGE-Lsum"),
        ("eval_loss", "eval loss"),
        ("latency_ms", "latency (ms per example)"),
        ("size_mb", "weights on disk (MB)"),
    ):
        lines.append(f"| {label} | {fp32[key]:.2f} | {int8[key]:.2f} |")
    lines.append(f"| parameters | {fp32['params']:,.0f} | {int8['params']:,.0f} |")
    lines += [
        "",
        f"int8 weights are {result.int8_ratio:.1%} of the fp32 ones on disk; int8 changes "
        f"ROUGE-L by {int8['rougeL'] - fp32['rougeL']:+.2f} points.",
    ]
    return "\n".join(lines)


def _card_training(result: ExportResult) -> str:
    from trainables.config import TrainConfig

    row = result.pick.row
    names = ["strategy", "encoder_layers", "decoder_layers", *(f.name for f in fields(TrainConfig))]
    lines = ["## Training", "", "| setting | value |", "|---|---|"]
    lines += [f"| {name} | {row[name]} |" for name in names if row.get(name) is not None]
    return "\n".join(lines)


def _card_front(result: ExportResult, config: SweepConfig) -> str:
    metrics = [o.metric for o in config.objectives]
    columns = [*metrics, "encoder_layers", "decoder_layers"]
    columns += [c for c in ("rougeL", "params", "size_mb", "latency_ms") if c not in columns]
    named = ", ".join(f"{o.metric} ({o.mode})" for o in config.objectives)
    lines = [
        "## Pareto front",
        "",
        f"The sweep's trials that no other trial beats in every objective ({named}); "
        "**bold** is this model.",
        "",
        "| trial | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for row in result.front:
        trial = str(row["trial"])
        mark = f"**{trial}**" if trial == result.pick.trial else trial
        lines.append(f"| {mark} | " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def _card_files() -> str:
    return f"""## Files

- `model.safetensors`, `config.json`, `generation_config.json`, tokenizer files: the fp32 model.
  config.json carries `decoder_layers` so that transformers sizes the generation cache from
  the decoder (a T5 config otherwise sizes it from the encoder count, which breaks a student
  with more decoder than encoder layers).
- `{PIPELINE_FILE}`: the summarization pipeline named in config.json's `custom_pipelines`.
- `{INT8_DIR}/{INT8_WEIGHTS}`: the int8 state dict (PyTorch dynamic quantization: linear
  weights int8 with one scale per output row, activations quantized on the fly; token
  embeddings int8 per row, shared with the LM head when tied); `{INT8_DIR}/quantization.json`
  names the format."""


def _decoding_text(decoding: DecodingConfig) -> str:
    search = "greedy search" if decoding.num_beams == 1 else f"beam search ({decoding.num_beams})"
    return (
        f"{search}, at most {decoding.max_new_tokens} new tokens, "
        f"no_repeat_ngram_size {decoding.no_repeat_ngram_size}"
    )


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.2f}"
    return "-" if value is None else str(value)


def _quiet_libraries() -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def _echo(enabled: bool, line: str) -> None:
    if enabled:
        print(line, flush=True)


# The summarization pipeline shipped in every export directory (see the module docstring). It
# imports only transformers, so `trust_remote_code` can load it wherever the model goes.
PIPELINE_SOURCE = '''"""The `summarization` pipeline of this model directory, by shrink-sweep.

transformers 5 removed its summarization pipeline; config.json names this one under
`custom_pipelines`, so `pipeline("summarization", model=DIR, trust_remote_code=True)` runs it.
It decodes with generation_config.json unless a call passes generation arguments.
"""

from transformers import Pipeline


class SummarizationPipeline(Pipeline):
    """Text in, `[{"summary_text": ...}]` out, as the transformers 4 pipeline answered."""

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False
    _pipeline_calls_generate = True

    def __call__(self, inputs, **kwargs):
        results = super().__call__(inputs, **kwargs)
        return results if isinstance(inputs, str) else [result[0] for result in results]

    def _sanitize_parameters(self, truncation=None, **generate_kwargs):
        preprocess = {} if truncation is None else {"truncation": truncation}
        return preprocess, generate_kwargs, {}

    def preprocess(self, text, truncation=True):
        text = (self.prefix or "") + text
        return self.tokenizer(text, truncation=truncation, return_tensors="pt")

    def _forward(self, inputs, **generate_kwargs):
        generate_kwargs = self._prepare_generate_kwargs(generate_kwargs)
        return {"output_ids": self.model.generate(**inputs, **generate_kwargs)}

    def postprocess(self, outputs):
        text = self.tokenizer.decode(outputs["output_ids"][0], skip_special_tokens=True)
        return [{"summary_text": text.strip()}]
'''
