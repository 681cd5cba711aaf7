"""The training losses of a student: cross-entropy on the labels, and distillation from the
base model's soft targets (the KD variant of Shleifer & Rush)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainables.config import TrainConfig


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


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel-style wrapper, if any."""
    return getattr(model, "module", model)
