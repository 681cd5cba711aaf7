"""The training losses of a student: cross-entropy on the labels, and distillation from the
base model (the KD variant of Shleifer & Rush 2020): its soft targets, and the outputs of the
layers the student's layers were copied from."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import TrainConfig


@dataclass(frozen=True)
class LayerMatch:
    """Which teacher layer each student layer copies: student layer i of a side is teacher
    layer `encoder[i]` / `decoder[i]` (a trial's kept indices), and learns that layer's output."""

    encoder: tuple[int, ...]
    decoder: tuple[int, ...]


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
    match: LayerMatch | None = None,
) -> torch.Tensor:
    """Cross-entropy on the labels mixed with what the teacher's forward pass shows.

    `(1 - distill) * CE + distill * T^2 * KL(teacher_T || student_T) + distill_hidden * H`
    over the label tokens, with T the `distill_temperature` (Hinton et al. 2015; the KD variant
    of Shleifer & Rush 2020, whose teacher is the unshrunk model; T^2 keeps the gradient scale
    independent of T) and H the `hidden_state_loss` of the matched layers. One teacher forward
    pass serves both terms.

    Args:
        model: The student.
        teacher: The unshrunk model; run without gradients.
        batch: From `make_batch`, with labels.
        config: `distill`, `distill_temperature`, `distill_hidden`, `distill_hidden_encoder`
            and `label_smoothing` are used.
        match: The teacher layer of each student layer; needed when `distill_hidden` > 0.

    Returns:
        A scalar tensor.
    """
    sides = _matched_sides(model, teacher, match, config)
    with torch.no_grad(), _layer_outputs(teacher, sides, teacher_side=True) as teacher_states:
        teacher_logits = _logits(teacher, batch).float()
    with _layer_outputs(model, sides, teacher_side=False) as student_states:
        logits = _logits(model, batch)
    labels = batch["labels"]
    loss = _cross_entropy(logits, labels, config.label_smoothing)
    if config.distill > 0:
        t = config.distill_temperature
        keep = labels.flatten() != -100
        student_log_p = F.log_softmax(logits.flatten(0, 1)[keep].float() / t, dim=-1)
        teacher_log_p = F.log_softmax(teacher_logits.flatten(0, 1)[keep] / t, dim=-1)
        soft = F.kl_div(student_log_p, teacher_log_p, log_target=True, reduction="batchmean")
        loss = (1 - config.distill) * loss + config.distill * t * t * soft
    if sides:
        masks = {"encoder": batch["attention_mask"], "decoder": (labels != -100).long()}
        hidden = torch.stack(
            [
                hidden_state_loss(student_states[side], teacher_states[side], masks[side])
                for side in sides
            ]
        ).mean()
        loss = loss + config.distill_hidden * hidden
    return loss


def hidden_state_loss(
    student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], mask: torch.Tensor
) -> torch.Tensor:
    """Mean squared error between matched layer outputs, over the unpadded positions.

    Each output is layer-normalized (no weights) first, as the reference code's
    `normalize_hidden` does: the scale of a T5 residual stream grows with depth, and the
    unnormalized error would be ruled by the deepest layers.

    Args:
        student: One (batch, length, width) output per student layer.
        teacher: The output of the teacher layer each student layer was copied from.
        mask: (batch, length), 1 where a position counts.

    Returns:
        A scalar tensor: the masked mean over positions and width, averaged over the layers.
    """
    errors = []
    weight = mask.unsqueeze(-1).float()
    for s, t in zip(student, teacher, strict=True):
        s = F.layer_norm(s.float(), s.shape[-1:])
        t = F.layer_norm(t.float(), t.shape[-1:])
        squared = (s - t).pow(2) * weight
        errors.append(squared.sum() / (weight.sum() * s.shape[-1]).clamp(min=1))
    return torch.stack(errors).mean()


def _matched_sides(
    model: nn.Module, teacher: nn.Module, match: LayerMatch | None, config: TrainConfig
) -> dict[str, tuple[list[nn.Module], list[nn.Module]]]:
    """For each side whose hidden states are distilled: (student layers, matched teacher
    layers)."""
    if config.distill_hidden <= 0:
        return {}
    if match is None:
        raise ValueError("train.distill_hidden is set but the matched layers are not known")
    from trainables.shrink import layer_stacks

    student_stacks, teacher_stacks = layer_stacks(_unwrap(model)), layer_stacks(_unwrap(teacher))
    names = ("encoder", "decoder") if config.distill_hidden_encoder else ("decoder",)
    return {
        name: (
            list(student_stacks[name]),
            [teacher_stacks[name][i] for i in getattr(match, name)],
        )
        for name in names
    }


@contextmanager
def _layer_outputs(
    model: nn.Module,
    sides: dict[str, tuple[list[nn.Module], list[nn.Module]]],
    teacher_side: bool,
) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Collect the output of each matched layer of `model` while the block runs: hooks on the
    layers themselves, so every family's layers are read alike whatever it does after them
    (T5's final norm, for one, is not part of any layer)."""
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in sides}
    handles = []
    for name, (student_layers, teacher_layers) in sides.items():
        for layer in teacher_layers if teacher_side else student_layers:
            handles.append(layer.register_forward_hook(_collect(outputs[name])))
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def _collect(into: list[torch.Tensor]):
    def hook(module: nn.Module, args: tuple, output: torch.Tensor | tuple) -> None:
        into.append(output[0] if isinstance(output, tuple) else output)

    return hook


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
