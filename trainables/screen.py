"""The zero-shot screen: every candidate student scored before any of them trains.

A student cut from a pretrained model keeps part of what the model knew, and how much shows
before fine-tuning: its teacher-forced loss on a few evaluation pairs ranks the demo teacher's
72 students much as their fine-tuned ROUGE-L does (bench/README.md, "Zero-shot screen"), at a
fraction of a second each. The sweep uses it to decide what to train first
(`search.strategy.screen`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trainables.tokens import TokenizedData

Layers = tuple[Sequence[int], Sequence[int]]  # the encoder and decoder layers a student keeps


@dataclass(frozen=True)
class ZeroShotScore:
    """One student before training: its parameters and evaluation loss."""

    params: int
    params_non_embedding: int
    loss: float


def zero_shot_scores(
    base: Any, data: TokenizedData, students: Sequence[Layers], examples: int
) -> list[ZeroShotScore]:
    """Shrink the base model to each student and score it untrained.

    Args:
        base: the packed base model (`trainables.trial.PackedModel`).
        data: the sweep's tokenized data; only the first `examples` evaluation pairs are used.
        students: the layers each student keeps, as `shrink` takes them.
        examples: evaluation pairs each student is scored on.

    Returns:
        Each student's parameter count and mean token cross-entropy on those pairs (lower is
        better), in the order given.
    """
    from trainables.trial import load_packed

    parent, tokenizer = load_packed(base)
    return score_students(parent, tokenizer.pad_token_id, data.eval_head(examples), students)


def score_students(
    parent: Any, pad_token_id: int, head: TokenizedData, students: Sequence[Layers]
) -> list[ZeroShotScore]:
    """Cut each student from the loaded `parent` and score it untrained on `head`'s
    evaluation pairs; in the order given."""
    from trainables.scoring import eval_loss
    from trainables.shrink import count_parameters, shrink

    scores = []
    for encoder, decoder in students:
        student = shrink(parent, encoder, decoder)
        loss = eval_loss(student, head, pad_token_id)
        counts = count_parameters(student)
        scores.append(ZeroShotScore(counts.total, counts.non_embedding, loss))
    return scores
