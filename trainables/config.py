"""What one trial is told to do: concrete values, no search distributions, no torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning settings of one trial."""

    learning_rate: float = 1e-3
    max_steps: int = 100
    epochs: float = 0.0  # > 0 replaces max_steps with passes over the training data
    batch_size: int = 16
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    gradient_accumulation_steps: int = 1
    label_smoothing: float = 0.0
    distill: float = 0.0  # weight of the base model's soft targets in the loss; 0 = plain SFT
    distill_temperature: float = 2.0
    seed: int = 0
    eval_every: int = 0  # steps between intermediate evaluations; 0 = only at the end


@dataclass(frozen=True)
class TrialConfig:
    """One point of the search: which layers survive and how the student is fine-tuned."""

    strategy: str
    encoder_layers: tuple[int, ...]  # indices into the parent's encoder, ascending
    decoder_layers: tuple[int, ...]
    train: TrainConfig
