"""What one trial is told to do: concrete values, no search distributions, no torch.

These plain dataclasses are the whole contract between the sweep driver (`search/`) and a
trial: `search.space.config` reads `space.yaml` into them, and nothing here knows of the driver.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field

TARGETS = ("gold", "pseudo", "both")  # what a student learns from: `TrainConfig.targets`
OPTIMIZERS = ("adamw", "adafactor")  # `TrainConfig.optimizer`


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
    # weight of the hidden-state loss: student layer i learns the output of the teacher layer
    # it was copied from (`trainables.losses.hidden_state_loss`); 0 = none
    distill_hidden: float = 0.0
    distill_hidden_encoder: bool = False  # also match the encoder's layers (default: decoder)
    targets: str = "gold"  # train on the gold summaries, the teacher's (pseudo), or both
    seed: int = 0
    eval_every: int = 0  # steps between intermediate evaluations; 0 = only at the end
    # Memory (`trainables.memory`): what lets a long-input student fit its device.
    micro_batch_size: int | str = 0  # examples per forward pass; 0: the batch; auto: what fits
    gradient_checkpointing: bool = False  # recompute activations in the backward pass
    optimizer: str = "adamw"  # or adafactor: factored second moments, no first moment

    @property
    def uses_teacher(self) -> bool:
        """Whether the loss needs the teacher's forward pass (its logits or hidden states)."""
        return self.distill > 0 or self.distill_hidden > 0


@dataclass(frozen=True)
class RungConfig:
    """Where a trial is scored for early stopping, and how cheaply (the final score is the
    sweep's own evaluation)."""

    steps: tuple[int, ...] = ()  # optimizer steps at which the trial reports a rung result
    examples: int | None = None  # score the first N evaluation pairs; None: all of them
    num_beams: int | None = None  # None: decode as the sweep does; 1: greedy


@dataclass(frozen=True)
class TrialConfig:
    """One point of the search: which layers survive and how the student is fine-tuned."""

    strategy: str
    encoder_layers: tuple[int, ...]  # indices into the parent's encoder, ascending
    decoder_layers: tuple[int, ...]
    train: TrainConfig
    rungs: RungConfig = RungConfig()


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it becomes model inputs."""

    name: str | None = None  # a hub dataset, a local dataset dir, or "builtin:debian-descriptions"
    config_name: str | None = None  # the hub dataset's configuration
    files: dict[str, str] = field(default_factory=dict)  # split -> local jsonl/csv/parquet
    train_split: str = "train"
    eval_split: str = "validation"
    source_column: str = "document"
    summary_column: str = "summary"
    source_template: str | None = None  # e.g. "{package}: {document}"; overrides source_column
    source_prefix: str = ""  # T5's "summarize: "
    max_source_length: int = 512
    max_target_length: int = 64
    truncate: bool = True  # False: a source longer than max_source_length is an error
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    # Training sources the base model summarizes for `train.targets` pseudo or both (a seeded
    # sample of the training split); None: all of them.
    pseudo_examples: int | None = None


@dataclass(frozen=True)
class DecodingConfig:
    """Generation settings used to score every trial."""

    num_beams: int = 1
    max_new_tokens: int = 64
    no_repeat_ngram_size: int = 0
    length_penalty: float = 1.0


def template_columns(template: str) -> list[str]:
    """The column names a source template refers to, e.g. `{package}: {document}`."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]
