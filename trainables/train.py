"""Fine-tune a (shrunk) seq2seq model and score it: a lean loop, no `Trainer`.

`fine_tune` does what `Seq2SeqTrainer` does for one trial (AdamW, linear warmup and decay,
gradient accumulation and clipping, label smoothing, mixed precision through `accelerate`)
with less overhead: batches are bucketed by length so little compute goes to padding, and the
data arrive already tokenized (`trainables.data.TokenizedData`). `generate_summaries` and
`evaluate_model` produce the ROUGE, latency and loss a trial reports.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import get_linear_schedule_with_warmup

from trainables.config import DecodingConfig, TrainConfig
from trainables.data import TokenizedData
from trainables.rouge import rouge_scores

MAX_GRAD_NORM = 1.0  # Seq2SeqTrainer's default, so both loops train alike
BUCKET_BATCHES = 50  # batches per bucket: enough to group lengths, few enough to stay random
LOSS_WINDOW = 10  # TrainStats.final_loss averages this many last steps


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the trial cannot recover."""

    def __init__(self, step: int, loss: float) -> None:
        self.step = step
        self.loss = loss
        super().__init__(
            f"training loss is {loss} at step {step}; stopped (learning rate too high?)"
        )


@dataclass(frozen=True)
class TrainStats:
    """What a fine-tuning run did and how fast."""

    steps: int  # optimizer steps
    examples: int  # training examples seen, repeats included
    tokens: int  # source + target tokens seen, padding excluded
    seconds: float  # wall time of training, intermediate evaluations excluded
    examples_per_second: float
    final_loss: float  # mean training loss of the last LOSS_WINDOW steps
    losses: tuple[float, ...]  # training loss of every step


# --- Pure helpers --------------------------------------------------------------------------


def precision_for(device_type: str, bf16_supported: bool) -> str:
    """The `accelerate` mixed-precision mode for a device.

    Args:
        device_type: `torch.device.type`, e.g. "cuda" or "cpu".
        bf16_supported: Whether the GPU computes in bfloat16 (Ampere and newer).

    Returns:
        "bf16" on a GPU that supports it (no loss scaling needed), "fp16" on other GPUs,
        "no" elsewhere: CPUs, and accelerators whose half-precision support varies.
    """
    if device_type != "cuda":
        return "no"
    return "bf16" if bf16_supported else "fp16"


def total_steps(config: TrainConfig, num_examples: int) -> int:
    """How many optimizer steps a run takes.

    Args:
        config: `epochs` > 0 wins over `max_steps`.
        num_examples: Size of the training split.

    Returns:
        `max_steps`, or `ceil(epochs * batches_per_epoch / gradient_accumulation_steps)`
        where an epoch has `ceil(num_examples / batch_size)` batches; at least 1.
    """
    if config.epochs <= 0:
        return config.max_steps
    batches = math.ceil(num_examples / config.batch_size)
    return max(1, math.ceil(config.epochs * batches / config.gradient_accumulation_steps))


def length_batches(
    lengths: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    bucket_batches: int = BUCKET_BATCHES,
) -> list[np.ndarray]:
    """One epoch of shuffled batches whose members have similar lengths.

    The data are shuffled, cut into buckets of `bucket_batches` batches, each bucket sorted
    by length and cut into batches, and the batches shuffled, so padding is small while
    batch order and membership still change every epoch.

    Args:
        lengths: Length of every example.
        batch_size: Examples per batch; the last batch may be smaller.
        rng: Source of the shuffles.
        bucket_batches: Batches per bucket.

    Returns:
        Index arrays, one per batch, covering every example once.
    """
    order = rng.permutation(len(lengths))
    bucket = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), bucket):
        chunk = order[start : start + bucket]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def pad_rows(rows: Sequence[np.ndarray], value: int) -> np.ndarray:
    """Stack rows of different lengths into one int64 array, right-padded with `value`.

    Args:
        rows: Token id rows.
        value: The padding value.

    Returns:
        Array of shape (len(rows), longest row).
    """
    out = np.full((len(rows), max(len(r) for r in rows)), value, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def make_batch(
    input_ids: Sequence[np.ndarray],
    labels: Sequence[np.ndarray] | None,
    pad_token_id: int,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Model inputs for some examples, padded to the longest of them (dynamic padding).

    Args:
        input_ids: Source token ids.
        labels: Target token ids, or None for generation.
        pad_token_id: The tokenizer's pad id.
        device: Where the tensors go.

    Returns:
        `input_ids` and `attention_mask`, and `labels` padded with -100 (ignored by the loss)
        when labels are given.
    """
    ids = pad_rows(input_ids, pad_token_id)
    lengths = np.array([len(r) for r in input_ids])
    mask = (np.arange(ids.shape[1]) < lengths[:, None]).astype(np.int64)
    batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    if labels is not None:
        batch["labels"] = torch.from_numpy(pad_rows(labels, -100))
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


# --- Training ------------------------------------------------------------------------------


def fine_tune(
    model: torch.nn.Module,
    data: TokenizedData,
    config: TrainConfig,
    *,
    pad_token_id: int,
    on_step: Callable[[int, float], None] | None = None,
    evaluate_at: Callable[[int], None] | None = None,
    threads: int | None = None,
    teacher: torch.nn.Module | None = None,
) -> TrainStats:
    """Fine-tune `model` in place on the training split.

    Each optimizer step accumulates `gradient_accumulation_steps` micro-batches of
    `batch_size` examples, clips the gradient norm to 1, and steps AdamW (no weight decay on
    biases and norms, as `Trainer` does) under a linear warmup-then-decay schedule. The model
    is moved to the GPU when there is one (the caller's reference stays valid) and is left in
    eval mode.

    Args:
        model: A seq2seq LM (`T5ForConditionalGeneration`, `BartForConditionalGeneration`, ...).
        data: Tokenized data; only the training split is used.
        config: Hyperparameters; `seed` fixes dropout and batch order.
        pad_token_id: The tokenizer's pad id, used to pad sources.
        on_step: Called after every optimizer step with (step, mean loss of the step).
        evaluate_at: Called with the step every `config.eval_every` steps, except after
            the last (the caller evaluates the final model); its time is not training time.
        threads: CPU threads for torch (`torch.set_num_threads`); ignored on a GPU.
        teacher: The model whose soft targets `config.distill` weighs in (the unshrunk base
            model); it is not trained.

    Returns:
        Steps, examples, throughput and losses of the run.

    Raises:
        NonFiniteLossError: A step's loss is NaN or infinite; raised before that step
            updates the weights.
        ValueError: `max_steps` and `epochs` are both 0, or `config.distill` is set without
            a teacher.
    """
    steps = total_steps(config, len(data.train_input_ids))
    if steps < 1:
        raise ValueError("nothing to train: max_steps and epochs are both 0")
    if config.distill > 0 and teacher is None:
        raise ValueError("train.distill is set but no teacher was given")
    accelerator = _accelerator(threads)
    torch.manual_seed(config.seed)
    model = accelerator.prepare(model)
    if config.distill > 0:
        teacher = accelerator.prepare_model(teacher, evaluation_mode=True).eval()
    optimizer = _optimizer(model, config, accelerator.device)
    warmup = math.ceil(config.warmup_ratio * steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, steps)
    optimizer, scheduler = accelerator.prepare(optimizer, scheduler)
    batches = _micro_batches(data, config)
    model.train()
    losses: list[float] = []
    examples = tokens = 0
    eval_seconds = 0.0
    start = time.perf_counter()
    for step in range(1, steps + 1):
        indices = [next(batches) for _ in range(config.gradient_accumulation_steps)]
        loss = _accumulate_gradients(
            model, data, indices, config, pad_token_id, accelerator, teacher
        )
        if not math.isfinite(loss):
            raise NonFiniteLossError(step, loss)
        accelerator.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss)
        examples += sum(len(i) for i in indices)
        tokens += _token_count(data, np.concatenate(indices))
        if on_step is not None:
            on_step(step, loss)
        if evaluate_at and config.eval_every and step % config.eval_every == 0 and step < steps:
            eval_start = time.perf_counter()
            evaluate_at(step)
            model.train()
            eval_seconds += time.perf_counter() - eval_start
    _synchronize(accelerator.device)
    seconds = time.perf_counter() - start - eval_seconds
    model.eval()
    return TrainStats(
        steps=steps,
        examples=examples,
        tokens=tokens,
        seconds=seconds,
        examples_per_second=examples / seconds if seconds > 0 else 0.0,
        final_loss=float(np.mean(losses[-LOSS_WINDOW:])),
        losses=tuple(losses),
    )


def _accumulate_gradients(
    model: torch.nn.Module,
    data: TokenizedData,
    micro_batches: list[np.ndarray],
    config: TrainConfig,
    pad_token_id: int,
    accelerator: Any,
    teacher: torch.nn.Module | None,
) -> float:
    """Backpropagate one optimizer step's micro-batches; return their mean loss.

    The loss is read once per step, not per micro-batch, to spare GPU synchronizations.
    """
    total = torch.zeros((), device=accelerator.device)
    for indices in micro_batches:
        batch = make_batch(
            [data.train_input_ids[i] for i in indices],
            [data.train_labels[i] for i in indices],
            pad_token_id,
            accelerator.device,
        )
        if config.distill > 0:
            loss = distillation_loss(model, teacher, batch, config)
        else:
            loss = seq2seq_loss(model, batch, config.label_smoothing)
        accelerator.backward(loss / len(micro_batches))
        total += loss.detach()
    return total.item() / len(micro_batches)


def _token_count(data: TokenizedData, indices: np.ndarray) -> int:
    """Source and target tokens of some training examples, padding excluded."""
    lengths = data.train_input_ids.lengths[indices] + data.train_labels.lengths[indices]
    return int(lengths.sum())


def seq2seq_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean token cross-entropy of the labels under teacher forcing.

    The loss is computed here rather than by the model (which has no label smoothing), so
    labels are shifted into decoder inputs with the model's own rule.

    Args:
        model: A seq2seq LM with `prepare_decoder_input_ids_from_labels`.
        batch: From `make_batch`, with labels.
        label_smoothing: Passed to `torch.nn.functional.cross_entropy`.

    Returns:
        A scalar tensor.
    """
    return _cross_entropy(_logits(model, batch), batch["labels"], label_smoothing)


def distillation_loss(
    model: torch.nn.Module,
    teacher: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    config: TrainConfig,
) -> torch.Tensor:
    """Cross-entropy on the labels mixed with the teacher's softened predictions.

    `(1 - distill) * CE + distill * T^2 * KL(teacher_T || student_T)` over the label tokens,
    with T the `distill_temperature` (Hinton et al. 2015; the KD variant of Shleifer & Rush
    2020, whose teacher is the unshrunk model). T^2 keeps the gradient scale independent of T.

    Args:
        model: The student.
        teacher: The unshrunk model; run without gradients.
        batch: From `make_batch`, with labels.
        config: `distill`, `distill_temperature` and `label_smoothing` are used.

    Returns:
        A scalar tensor.
    """
    with torch.no_grad():
        teacher_logits = _logits(teacher, batch).float()
    logits = _logits(model, batch)
    labels = batch["labels"]
    hard = _cross_entropy(logits, labels, config.label_smoothing)
    t = config.distill_temperature
    keep = labels.flatten() != -100
    student_log_p = F.log_softmax(logits.flatten(0, 1)[keep].float() / t, dim=-1)
    teacher_log_p = F.log_softmax(teacher_logits.flatten(0, 1)[keep] / t, dim=-1)
    soft = F.kl_div(student_log_p, teacher_log_p, log_target=True, reduction="batchmean")
    return (1 - config.distill) * hard + config.distill * t * t * soft


def _logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    labels = batch["labels"]
    return model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        decoder_input_ids=_unwrap(model).prepare_decoder_input_ids_from_labels(labels=labels),
        use_cache=False,
    ).logits


def _cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float
) -> torch.Tensor:
    # float(): under fp16/bf16 the softmax over the vocabulary needs full precision.
    return F.cross_entropy(
        logits.flatten(0, 1).float(),
        labels.flatten(),
        ignore_index=-100,
        label_smoothing=label_smoothing,
    )


def _accelerator(threads: int | None) -> Any:
    from accelerate import Accelerator, PartialState

    device = PartialState().device
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if device.type == "cpu" and threads:
        torch.set_num_threads(threads)
    return Accelerator(mixed_precision=precision_for(device.type, bf16))


def _optimizer(
    model: torch.nn.Module, config: TrainConfig, device: torch.device
) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (`weight_decay_groups`)."""
    groups = weight_decay_groups(model, config.weight_decay)
    # The fused kernel (Trainer's default optimizer too) is the fastest on CPU and CUDA.
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=config.learning_rate, fused=fused)


def weight_decay_groups(
    model: torch.nn.Module, weight_decay: float, exempt: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Optimizer parameter groups that decay matrices only: decaying biases and norms only hurts.

    Args:
        model: The model to train; parameters that do not require gradients are left out.
        weight_decay: The decay of the matrices.
        exempt: Name fragments of matrices not to decay either, e.g. "relative_attention_bias"
            (T5's position-bias table, which `Trainer` also exempts).

    Returns:
        Two groups, the decayed parameters and the rest, each in the model's parameter order.
    """
    decayed: dict[bool, list[torch.nn.Parameter]] = {True: [], False: []}
    for name, param in model.named_parameters():
        if param.requires_grad:
            decayed[param.ndim >= 2 and not any(e in name for e in exempt)].append(param)
    return [
        {"params": decayed[True], "weight_decay": weight_decay},
        {"params": decayed[False], "weight_decay": 0.0},
    ]


def _micro_batches(data: TokenizedData, config: TrainConfig) -> Iterator[np.ndarray]:
    """Endless length-bucketed batches, reshuffled every epoch, seeded by `config.seed`."""
    rng = np.random.default_rng(config.seed)
    lengths = data.train_input_ids.lengths
    while True:
        yield from length_batches(lengths, config.batch_size, rng)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel-style wrapper, if any."""
    return getattr(model, "module", model)


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so that wall times measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- Evaluation ----------------------------------------------------------------------------


def generate_summaries(
    model: torch.nn.Module,
    tokenizer: Any,
    input_ids: Sequence[np.ndarray],
    decoding: DecodingConfig,
    batch_size: int = 32,
) -> tuple[list[str], float]:
    """Generate a summary of every source, batched by length.

    Decoding is exactly `decoding` (greedy when `num_beams` is 1): the checkpoint's own
    generation settings for sampling and minimum length are overridden, so every trial is
    scored alike; its special token ids are kept.

    Args:
        model: A seq2seq LM.
        tokenizer: Its tokenizer, for the pad id and decoding.
        input_ids: Source token ids (a `TokenRows` or a list of arrays).
        decoding: Beam count, length limit, n-gram blocking, length penalty.
        batch_size: Sources per `generate` call.

    Returns:
        The summaries in the order of `input_ids`, and the mean latency per example in
        milliseconds (total wall time of generation and decoding / number of examples).
    """
    device = next(model.parameters()).device
    generation = generation_config(model.generation_config, decoding)
    order = np.argsort([-len(r) for r in input_ids], kind="stable")
    predictions = [""] * len(input_ids)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    with torch.inference_mode(), _autocast(device):
        for first in range(0, len(order), batch_size):
            indices = order[first : first + batch_size]
            rows = [input_ids[i] for i in indices]
            batch = make_batch(rows, None, tokenizer.pad_token_id, device)
            output = model.generate(**batch, generation_config=generation)
            texts = tokenizer.batch_decode(output, skip_special_tokens=True)
            for i, text in zip(indices, texts, strict=True):
                predictions[i] = text.strip()
    _synchronize(device)
    seconds = time.perf_counter() - start
    model.train(was_training)
    return predictions, 1000.0 * seconds / max(1, len(input_ids))


def evaluate_model(
    model: torch.nn.Module,
    tokenizer: Any,
    data: TokenizedData,
    decoding: DecodingConfig,
    batch_size: int = 32,
) -> dict[str, float]:
    """Score the model on the evaluation split.

    Args:
        model: A seq2seq LM.
        tokenizer: Its tokenizer.
        data: Tokenized data; only the evaluation split is used.
        decoding: Generation settings.
        batch_size: Examples per forward pass or `generate` call.

    Returns:
        `rouge1`, `rouge2`, `rougeL`, `rougeLsum` (0-100) of generated summaries against the
        reference texts, `latency_ms` per example, and `eval_loss`, the teacher-forced mean
        token cross-entropy (no label smoothing).
    """
    predictions, latency_ms = generate_summaries(
        model, tokenizer, data.eval_input_ids, decoding, batch_size
    )
    metrics = rouge_scores(predictions, data.eval_references)
    metrics["latency_ms"] = latency_ms
    metrics["eval_loss"] = eval_loss(model, data, tokenizer.pad_token_id, batch_size)
    return metrics


def eval_loss(
    model: torch.nn.Module, data: TokenizedData, pad_token_id: int, batch_size: int = 32
) -> float:
    """Teacher-forced mean token cross-entropy on the evaluation split.

    Args:
        model: A seq2seq LM.
        data: Tokenized data; only the evaluation split is used.
        pad_token_id: The tokenizer's pad id.
        batch_size: Examples per forward pass.

    Returns:
        Loss summed over all label tokens divided by their number, so long and short
        summaries weigh by their length, not by their batch.
    """
    device = next(model.parameters()).device
    order = np.argsort(data.eval_input_ids.lengths, kind="stable")
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.inference_mode(), _autocast(device):
        for first in range(0, len(order), batch_size):
            indices = order[first : first + batch_size]
            batch = make_batch(
                [data.eval_input_ids[i] for i in indices],
                [data.eval_labels[i] for i in indices],
                pad_token_id,
                device,
            )
            n = int((batch["labels"] != -100).sum())
            total += seq2seq_loss(model, batch).item() * n
            count += n
    model.train(was_training)
    return total / max(1, count)


def generation_config(generation: Any, decoding: DecodingConfig) -> Any:
    """A checkpoint's generation config with exactly the sweep's decoding settings.

    Args:
        generation: The checkpoint's `GenerationConfig` (its special token ids are kept).
        decoding: The sweep's decoding settings.

    Returns:
        A new `GenerationConfig`: greedy or beam search as configured, no sampling and no
        minimum length (a CNN checkpoint's minimum of 56 tokens would distort every trial).
    """
    generation = copy.deepcopy(generation)
    settings: dict[str, Any] = {
        "num_beams": decoding.num_beams,
        "max_new_tokens": decoding.max_new_tokens,
        "no_repeat_ngram_size": decoding.no_repeat_ngram_size,
        "do_sample": False,
        "min_length": 0,
        "min_new_tokens": None,
    }
    if decoding.num_beams > 1:  # only beam search reads it; greedy would warn
        settings["length_penalty"] = decoding.length_penalty
    generation.update(**settings)
    return generation


def _autocast(device: torch.device) -> Any:
    """Half precision for evaluation on a GPU, matching training; nothing on a CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    bf16 = torch.cuda.is_bf16_supported()
    return torch.autocast("cuda", dtype=torch.bfloat16 if bf16 else torch.float16)
