"""Fine-tune a (shrunk) seq2seq model: a lean loop, no `Trainer`.

`fine_tune` does what `Seq2SeqTrainer` does for one trial (AdamW, linear warmup and decay,
gradient accumulation and clipping, label smoothing, mixed precision through `accelerate`)
with less overhead: batches are bucketed by length so little compute goes to padding, and the
data arrive already tokenized (`trainables.tokens.TokenizedData`). Batching is
`trainables.batches`, the losses `trainables.losses`, and scoring `trainables.scoring`.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

from trainables import memory
from trainables.batches import length_batches, make_batch
from trainables.config import TrainConfig
from trainables.losses import LayerMatch, distillation_loss, seq2seq_loss
from trainables.precision import precision_for
from trainables.scoring import synchronize
from trainables.tokens import TokenizedData

MAX_GRAD_NORM = 1.0  # Seq2SeqTrainer's default, so both loops train alike
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
    micro_batch_size: int = 0  # examples per forward pass (what `auto` picked)


# --- Pure helpers --------------------------------------------------------------------------


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


# --- Training ------------------------------------------------------------------------------


def fine_tune(
    model: torch.nn.Module,
    data: TokenizedData,
    config: TrainConfig,
    *,
    pad_token_id: int,
    on_step: Callable[[int, float], None] | None = None,
    evaluate_at: Callable[[int], None] | None = None,
    eval_steps: Collection[int] = (),
    threads: int | None = None,
    teacher: torch.nn.Module | None = None,
    match: LayerMatch | None = None,
    memory_share: float = 1.0,
    memory_limit: int | None = None,
) -> TrainStats:
    """Fine-tune `model` in place on the training split.

    Each optimizer step accumulates `gradient_accumulation_steps` batches of `batch_size`
    examples, each run in micro-batches of at most `micro_batch_size` examples (the largest
    that fits for `auto`: `trainables.memory`), clips the gradient norm to 1, and steps AdamW
    or Adafactor (no weight decay on biases and norms, as `Trainer` does) under a linear
    warmup-then-decay schedule. A micro-batch's loss weighs by its share of its batch's label
    tokens, so the step is the same however the batch is split. The model is moved to the GPU
    when there is one (the caller's reference stays valid) and is left in eval mode.

    Args:
        model: A seq2seq LM (`T5ForConditionalGeneration`, `BartForConditionalGeneration`, ...).
        data: Tokenized data; only the training split is used.
        config: Hyperparameters; `seed` fixes dropout and batch order.
        pad_token_id: The tokenizer's pad id, used to pad sources.
        on_step: Called after every optimizer step with (step, mean loss of the step).
        evaluate_at: Called with the step every `config.eval_every` steps and at each of
            `eval_steps`, except after the last (the caller evaluates the final model); its
            time is not training time.
        eval_steps: Steps to evaluate at besides every `eval_every`, e.g. the rungs of an
            early-stopping scheduler.
        threads: CPU threads for torch (`torch.set_num_threads`); ignored on a GPU.
        teacher: The model whose soft targets `config.distill` and whose layer outputs
            `config.distill_hidden` weigh in (the unshrunk base model); it is not trained.
        match: The teacher layer each student layer was copied from (for `distill_hidden`).
        memory_share: The fraction of its device the trial has (of a GPU, what Ray gave it).
        memory_limit: The bytes `micro_batch_size: auto` fits a step into; None: the trial's
            share of the device (`trainables.memory.memory_limit`).

    Returns:
        Steps, examples, throughput and losses of the run, and the micro-batch it ran.

    Raises:
        NonFiniteLossError: A step's loss is NaN or infinite; raised before that step
            updates the weights.
        ValueError: `max_steps` and `epochs` are both 0, or `config.distill` or
            `config.distill_hidden` is set without a teacher.
        DoesNotFitError: `micro_batch_size` is `auto` and one example does not fit.
    """
    steps = total_steps(config, len(data.train_input_ids))
    if steps < 1:
        raise ValueError("nothing to train: max_steps and epochs are both 0")
    if config.uses_teacher and teacher is None:
        raise ValueError("train.distill or train.distill_hidden is set but no teacher was given")
    accelerator = _accelerator(threads, model.config.model_type)
    model = accelerator.prepare(model)
    if config.uses_teacher:
        teacher = accelerator.prepare_model(teacher, evaluation_mode=True).eval()
    set_checkpointing(model, config.gradient_checkpointing)
    model.train()
    device = accelerator.device
    micro = _micro_batch_size(
        config,
        functools.partial(step_peak, model, data, config, pad_token_id, device, (teacher, match)),
        lambda: memory_limit or memory.memory_limit(device, memory_share),
    )
    torch.manual_seed(config.seed)  # after the probe: its dropout does not move the seed
    optimizer = _optimizer(model, config, accelerator.device)
    warmup = math.ceil(config.warmup_ratio * steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, steps)
    optimizer, scheduler = accelerator.prepare(optimizer, scheduler)
    batches = _batches(data, config)
    source_lengths, label_lengths = data.train_input_ids.lengths, data.train_labels.lengths
    losses: list[float] = []
    examples = tokens = 0
    eval_seconds = 0.0
    start = time.perf_counter()
    for step in range(1, steps + 1):
        indices = [next(batches) for _ in range(config.gradient_accumulation_steps)]
        loss = _accumulate_gradients(
            model, data, indices, micro, label_lengths, pad_token_id, accelerator, config,
            (teacher, match),
        )  # fmt: skip
        if not math.isfinite(loss):
            raise NonFiniteLossError(step, loss)
        accelerator.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss)
        examples += sum(len(i) for i in indices)
        taken = np.concatenate(indices)  # source and target tokens, padding excluded
        tokens += int(source_lengths[taken].sum() + label_lengths[taken].sum())
        if on_step is not None:
            on_step(step, loss)
        if evaluate_at and step < steps and _evaluates(step, config.eval_every, eval_steps):
            eval_start = time.perf_counter()
            evaluate_at(step)
            model.train()
            eval_seconds += time.perf_counter() - eval_start
    synchronize(accelerator.device)
    seconds = time.perf_counter() - start - eval_seconds
    set_checkpointing(model, False)
    model.eval()
    return TrainStats(
        steps=steps,
        micro_batch_size=micro,
        examples=examples,
        tokens=tokens,
        seconds=seconds,
        examples_per_second=examples / seconds if seconds > 0 else 0.0,
        final_loss=float(np.mean(losses[-LOSS_WINDOW:])),
        losses=tuple(losses),
    )


def _evaluates(step: int, every: int, steps: Collection[int]) -> bool:
    return step in steps or (every > 0 and step % every == 0)


def _accumulate_gradients(
    model: torch.nn.Module,
    data: TokenizedData,
    batches: list[np.ndarray],
    micro: int,
    label_lengths: np.ndarray,
    pad_token_id: int,
    accelerator: Any,
    config: TrainConfig,
    teacher: tuple[torch.nn.Module | None, LayerMatch | None],
) -> float:
    """Backpropagate one optimizer step's batches, `micro` examples at a time; return the mean
    of the batches' losses.

    A micro-batch's loss (a mean over its label tokens) weighs by its share of its batch's
    label tokens, so a batch's loss and gradient are the ones it has run whole (the encoder's
    hidden-state term, a mean over source positions, nearly so). The loss is read once per
    step, not per micro-batch, to spare GPU synchronizations.
    """
    total = torch.zeros((), device=accelerator.device)
    for indices in batches:
        tokens = label_lengths[indices]
        for first in range(0, len(indices), micro):
            part = indices[first : first + micro]
            share = float(tokens[first : first + micro].sum() / tokens.sum())
            batch = make_batch(
                [data.train_input_ids[i] for i in part],
                [data.train_labels[i] for i in part],
                pad_token_id,
                accelerator.device,
            )
            loss = _loss(model, batch, config, teacher) * share
            accelerator.backward(loss / len(batches))
            total += loss.detach()
    return total.item() / len(batches)


def _loss(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    config: TrainConfig,
    teacher: tuple[torch.nn.Module | None, LayerMatch | None],
) -> torch.Tensor:
    if config.uses_teacher:
        return distillation_loss(model, teacher[0], batch, config, teacher[1])
    return seq2seq_loss(model, batch, config.label_smoothing)


def set_checkpointing(model: torch.nn.Module, on: bool) -> None:
    """Recompute the student's activations in the backward pass instead of keeping them."""
    model = getattr(model, "module", model)
    if on:  # non-reentrant: the inputs need not require gradients
        model.activation_checkpointing_enable({"use_reentrant": False})
    elif model.is_activation_checkpointing:
        model.activation_checkpointing_disable()


def _micro_batch_size(
    config: TrainConfig, peak: Callable[[int], int | None], limit: Callable[[], int]
) -> int:
    """`micro_batch_size` as a number: the whole batch for 0, for `auto` the largest whose
    step's `peak` is within `limit()` (`trainables.memory.fit_micro_batch`)."""
    if config.micro_batch_size != "auto":
        return min(config.micro_batch_size or config.batch_size, config.batch_size)
    return memory.fit_micro_batch(peak, config.batch_size, limit())


def step_peak(
    model: torch.nn.Module,
    data: TokenizedData,
    config: TrainConfig,
    pad_token_id: int,
    device: torch.device,
    teacher: tuple[torch.nn.Module | None, LayerMatch | None],
    size: int,
) -> int | None:
    """The peak memory of a training step of `size` examples of the longest batch the data
    can make (`trainables.memory`), the model in training mode as `fine_tune` runs it; None if
    the step ran out of memory. The weights are not changed."""
    sources, labels = memory.worst_case_rows(data, size)
    batch = make_batch(sources, labels, pad_token_id, device)
    run_step = functools.partial(_loss, model, batch, config, teacher)
    if device.type == "cuda":
        return memory.measured_step_bytes(model, config, run_step)
    shape = (*batch["labels"].shape, getattr(model, "module", model).config.vocab_size)
    return memory.cpu_step_bytes(model, teacher[0], config, run_step, shape)


def _accelerator(threads: int | None, model_type: str) -> Any:
    from accelerate import Accelerator, PartialState

    device = PartialState().device
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if device.type == "cpu" and threads:
        torch.set_num_threads(threads)
    return Accelerator(mixed_precision=precision_for(device.type, bf16, model_type))


def _optimizer(
    model: torch.nn.Module, config: TrainConfig, device: torch.device
) -> torch.optim.Optimizer:
    """AdamW or Adafactor (torch's: factored second moments, no first moment, so a fraction of
    AdamW's state), with weight decay on matrices only (`weight_decay_groups`)."""
    groups = weight_decay_groups(model, config.weight_decay)
    if config.optimizer == "adafactor":
        return torch.optim.Adafactor(groups, lr=config.learning_rate)
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


def _batches(data: TokenizedData, config: TrainConfig) -> Iterator[np.ndarray]:
    """Endless length-bucketed batches, reshuffled every epoch, seeded by `config.seed`."""
    rng = np.random.default_rng(config.seed)
    lengths = data.train_input_ids.lengths
    while True:
        yield from length_batches(lengths, config.batch_size, rng)


# --- Evaluation ----------------------------------------------------------------------------
