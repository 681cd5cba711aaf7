"""What one trial does: shrink the base model, fine-tune it, score it, save it.

`run_trial` is a plain function of `(TrialConfig, base model, data) -> TrialResult`; the few
lines that adapt it to Ray Tune live in `search.driver.trainable`. The base model travels to the
trial as the bytes of its saved directory (`PackedModel`), so trials on other nodes need no shared
filesystem and each gets a private, writable copy; a trial's weights go back to the driver the same
way.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.config import DecodingConfig, RungConfig, TrialConfig
from trainables.hub import check_on_hub

BUILTIN_MODELS = {"builtin:debian-teacher": Path(__file__).parent / "demo" / "teacher"}
# A hub id is "name" or "org/name"; anything else that is not a directory is a missing path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class NonFiniteMetricError(RuntimeError):
    """A trial produced a NaN or infinite metric; it is recorded as failed."""


class ModelError(ValueError):
    """The base model cannot be found or loaded."""


@dataclass(frozen=True)
class PackedModel:
    """A saved model directory as bytes, to travel through Ray's object store: the base model
    on its way to the trials, and a trial's fine-tuned weights on their way to the driver."""

    name: str
    files: dict[str, bytes]

    @classmethod
    def from_directory(cls, name: str, directory: Path) -> PackedModel:
        """Pack every file under `directory`, keyed by its path relative to it."""
        root = Path(directory)
        files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
        return cls(name, files)

    def unpack(self, directory: Path) -> Path:
        """Write the files under `directory` and return it."""
        for name, content in self.files.items():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_bytes(content)
        return directory


@dataclass(frozen=True)
class TrialResult:
    metrics: dict[str, float]
    encoder_layers: tuple[int, ...]
    decoder_layers: tuple[int, ...]


def resolve_model(name_or_path: str) -> str:
    """Builtin names map to the package's own files; others pass through unchanged."""
    if name_or_path in BUILTIN_MODELS:
        return str(BUILTIN_MODELS[name_or_path])
    return name_or_path


def load_model_config(name_or_path: str, trust_remote_code: bool = False) -> Any:
    """The model's config, without its weights: a fast existence check.

    Raises:
        ModelError: no such directory, hub model, or config.
    """
    from transformers import AutoConfig

    location = resolve_model(name_or_path)
    if Path(location).is_dir():
        if not (Path(location) / "config.json").is_file():
            raise ModelError(
                f"model {name_or_path!r}: {location} has no config.json (not a saved model)"
            )
    elif not _HUB_ID.match(location):
        raise ModelError(f"model {name_or_path!r}: no such directory")
    else:
        check_on_hub(name_or_path, "model", ModelError)
    try:
        config = AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"model {name_or_path!r} cannot be loaded: {first_line}") from None
    if not getattr(config, "is_encoder_decoder", False):
        raise ModelError(
            f"model {name_or_path!r} is a {config.model_type!r} model, not an encoder-decoder"
        )
    return config


def load_base(name_or_path: str, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """Load the base model (fp32, from safetensors) and its tokenizer."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    location = resolve_model(name_or_path)
    model = AutoModelForSeq2SeqLM.from_pretrained(
        location, trust_remote_code=trust_remote_code, use_safetensors=True, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
    return model, tokenizer


def pack_base(name_or_path: str, trust_remote_code: bool = False) -> tuple[PackedModel, Any, Any]:
    """Load the base model once in the driver and pack it for the trials.

    Returns:
        The packed model, and the loaded model and tokenizer for the driver's own use.
    """
    model, tokenizer = load_base(name_or_path, trust_remote_code)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        packed = PackedModel.from_directory(name_or_path, Path(tmp))
    return packed, model, tokenizer


def load_packed(base: PackedModel) -> tuple[Any, Any]:
    """Load a packed base model (as `pack_base` sent it) and its tokenizer."""
    with tempfile.TemporaryDirectory() as tmp:
        return load_base(str(base.unpack(Path(tmp))))


def size_on_disk_mb(directory: Path) -> float:
    """Megabytes (10^6 bytes) of the weight files in a saved model directory."""
    weights = [
        p for p in Path(directory).rglob("*") if p.suffix in (".safetensors", ".bin", ".onnx")
    ]
    return sum(p.stat().st_size for p in weights) / 1e6


def run_trial(
    config: TrialConfig,
    base: PackedModel,
    data: Any,
    decoding: DecodingConfig,
    *,
    save_dir: Path | None,
    report: Callable[[dict[str, float]], None] | None = None,
    threads: int | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    gpu_share: float = 1.0,
    memory_limit: int | None = None,
) -> TrialResult:
    """Shrink, fine-tune and score one student, and save it to `save_dir`.

    Args:
        config: which layers to keep and how to fine-tune.
        base: the packed base model.
        data: the sweep's tokenized data (`trainables.tokens.TokenizedData`).
        decoding: generation settings for scoring.
        save_dir: where the student's model directory is written; None: nowhere (a probe).
        report: receives intermediate metrics (with `step`) every `train.eval_every` steps,
            and at each of `config.rungs.steps` the rung's cheaper score (with `rung` 1).
        threads: CPU threads for torch.
        on_step: called after every optimizer step with (step, steps in all, loss), e.g. to
            show the trial's progress.
        gpu_share: the fraction of a GPU the trial has (Ray's `resources.gpus`), which
            `train.micro_batch_size: auto` fits a step into.
        memory_limit: bytes that step may use instead (`resources.memory_gib`).

    Returns:
        The final metrics: ROUGE, parameters, size on disk, latency, training statistics, and
        `startup_seconds`, from this call to the end of the first optimizer step (imports in a
        new worker, unpacking and loading the model, shrinking it, the optimizer's set-up and
        one step); intermediate reports carry it too.

    Raises:
        NonFiniteLossError: the loss became NaN or infinite (training stops at once).
        DoesNotFitError: `micro_batch_size: auto` found that one example does not fit.
    """
    started = time.perf_counter()
    startup_seconds = math.nan  # set when the first optimizer step is done
    from trainables.losses import LayerMatch
    from trainables.scoring import evaluate_model
    from trainables.train import fine_tune, total_steps

    student, tokenizer, teacher, sizes = shrunk_student(config, base)
    train_data = data.with_targets(config.train.targets)
    steps = total_steps(config.train, len(train_data.train_input_ids))

    def after_step(step: int, loss: float) -> None:
        nonlocal startup_seconds
        if step == 1:
            startup_seconds = time.perf_counter() - started
        if on_step is not None:
            on_step(step, steps, loss)

    def evaluate_at(step: int) -> None:
        rung = step in config.rungs.steps
        metrics = evaluate_model(
            student, tokenizer, *evaluation_inputs(config.rungs, data, decoding, rung)
        )
        if report is not None:
            extra = {"startup_seconds": startup_seconds, "step": step, "rung": int(rung)}
            report({**sizes, **metrics, **extra})

    stats = fine_tune(
        student,
        train_data,
        config.train,
        pad_token_id=tokenizer.pad_token_id,
        on_step=after_step,
        evaluate_at=evaluate_at if config.train.eval_every or config.rungs.steps else None,
        eval_steps=config.rungs.steps,
        threads=threads,
        teacher=teacher,
        match=LayerMatch(config.encoder_layers, config.decoder_layers),
        memory_share=gpu_share,
        memory_limit=memory_limit,
    )
    del teacher
    metrics = evaluate_model(student, tokenizer, data, decoding)
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:  # an Optuna trial told NaN stays "running" forever: fail it instead
        raise NonFiniteMetricError(f"non-finite metrics after training: {bad}")
    metrics.update(sizes)
    if save_dir is not None:
        student.save_pretrained(save_dir)
        tokenizer.save_pretrained(save_dir)
        metrics["size_mb"] = size_on_disk_mb(save_dir)
    metrics.update(
        train_loss=stats.final_loss,
        train_seconds=stats.seconds,
        examples_per_second=stats.examples_per_second,
        startup_seconds=startup_seconds,
        step=stats.steps,
        micro_batch_size=stats.micro_batch_size,
    )
    return TrialResult(metrics, config.encoder_layers, config.decoder_layers)


def evaluation_inputs(
    rungs: RungConfig, data: Any, decoding: DecodingConfig, rung: bool
) -> tuple[Any, DecodingConfig]:
    """The data and decoding of an evaluation: at a rung, the cheap ones `rungs` names."""
    if not rung:
        return data, decoding
    if rungs.examples is not None:
        data = data.eval_head(rungs.examples)
    if rungs.num_beams is not None:
        decoding = dataclasses.replace(decoding, num_beams=rungs.num_beams)
    return data, decoding


def shrunk_student(config: TrialConfig, base: PackedModel) -> tuple[Any, Any, Any, dict]:
    """The student (the base model cut to the kept layers), its tokenizer, the teacher (a
    copy of the base model, kept only when the loss learns from it) and the student's
    parameter counts."""
    from trainables.shrink import count_parameters, shrink

    parent, tokenizer = load_packed(base)
    teacher = copy.deepcopy(parent) if config.train.uses_teacher else None
    student = shrink(parent, config.encoder_layers, config.decoder_layers)
    counts = count_parameters(student)
    sizes = {"params": float(counts.total), "params_non_embedding": float(counts.non_embedding)}
    return student, tokenizer, teacher, sizes
