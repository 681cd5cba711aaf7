"""The memory controls of a trial's training (`trainables.memory`, `trainables.train`):
micro-batches that train exactly as the whole batch, `micro_batch_size: auto` against an injected
memory limit, gradient checkpointing and Adafactor, on a tiny T5 without dropout (so that runs
can be compared step by step)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from tiny import TINY_FILES, tiny_t5_dir
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from trainables import memory
from trainables.batches import make_batch
from trainables.config import DataConfig, TrainConfig
from trainables.data import load_splits
from trainables.losses import seq2seq_loss
from trainables.memory import DoesNotFitError, fit_micro_batch
from trainables.tokens import tokenize_splits
from trainables.train import fine_tune

DATA = DataConfig(files=TINY_FILES, max_source_length=64, max_target_length=24)
STEPS = TrainConfig(learning_rate=3e-2, max_steps=6, batch_size=8, warmup_ratio=0.1)


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    return tiny_t5_dir(tmp_path_factory.mktemp("t5"))


@pytest.fixture(scope="module")
def data(t5_dir):
    return tokenize_splits(load_splits(DATA), AutoTokenizer.from_pretrained(t5_dir), DATA)


def student(t5_dir):
    return AutoModelForSeq2SeqLM.from_pretrained(t5_dir, dropout_rate=0.0)


def train(t5_dir, data, config, **kwargs):
    model = student(t5_dir)
    return fine_tune(model, data, config, pad_token_id=0, threads=1, **kwargs), model


def weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("micro", [1, 3, "auto"])
def test_micro_batches_train_as_the_whole_batch(t5_dir, data, micro):
    whole, whole_model = train(t5_dir, data, STEPS)
    # auto, against a limit between what micro-batches of 2 and 4 need: it picks 2
    limit = {"auto": (step_bytes(t5_dir, data, 2) + step_bytes(t5_dir, data, 4)) // 2}
    config = dataclasses.replace(STEPS, micro_batch_size=micro)
    split, split_model = train(t5_dir, data, config, memory_limit=limit.get(micro))
    assert (whole.micro_batch_size, split.micro_batch_size) == (8, 2 if micro == "auto" else micro)
    assert split.losses == pytest.approx(whole.losses, rel=1e-4)
    assert torch.allclose(weights(split_model), weights(whole_model), atol=1e-5)
    assert split.examples == whole.examples == 6 * 8 and split.tokens == whole.tokens


def step_bytes(t5_dir, data, size: int, checkpointing: bool = False) -> int:
    """What the probe counts for a step of `size` examples of the worst-case batch."""
    model = student(t5_dir)
    if checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    model.train()
    batch = make_batch(*memory.worst_case_rows(data, size), 0, torch.device("cpu"))
    shape = (*batch["labels"].shape, model.config.vocab_size)
    return memory.counted_step_bytes(model, None, STEPS, lambda: seq2seq_loss(model, batch), shape)


def test_the_probe_counts_more_for_larger_micro_batches_and_less_with_checkpointing(t5_dir, data):
    counted = [step_bytes(t5_dir, data, size) for size in (1, 2, 4, 8)]
    assert counted == sorted(counted) and counted[0] < counted[-1]
    parameters = sum(p.numel() * 4 for p in student(t5_dir).parameters())
    assert counted[0] > 4 * parameters  # weights, gradients, AdamW's two moments, and more
    assert step_bytes(t5_dir, data, 8, checkpointing=True) < counted[-1]


def test_auto_picks_a_smaller_micro_batch_under_a_lower_limit_and_refuses_when_none_fits(
    t5_dir, data
):
    auto = dataclasses.replace(STEPS, max_steps=1, micro_batch_size="auto")
    sizes = {size: step_bytes(t5_dir, data, size) for size in (1, 2, 4, 8)}
    picked = [
        train(t5_dir, data, auto, memory_limit=sizes[size])[0].micro_batch_size
        for size in (8, 4, 1)
    ]
    assert picked == [8, 4, 1]
    with pytest.raises(DoesNotFitError, match="one example of the longest batch needs"):
        train(t5_dir, data, auto, memory_limit=sizes[1] - 1)


def test_fit_halves_until_it_fits():
    asked = []

    def peak(size):
        asked.append(size)
        return None if size > 5 else size * 100  # None: ran out of memory

    assert fit_micro_batch(peak, 24, limit=250) == 1 and asked == [24, 12, 6, 3, 1]
    assert fit_micro_batch(lambda size: size * 100, 24, limit=10_000) == 24
    with pytest.raises(DoesNotFitError, match="runs out"):
        fit_micro_batch(lambda size: None, 4, limit=10)


def test_checkpointing_trains_the_same_and_is_off_afterwards(t5_dir, data):
    plain, plain_model = train(t5_dir, data, STEPS)
    config = dataclasses.replace(STEPS, gradient_checkpointing=True)
    checkpointed, model = train(t5_dir, data, config)
    assert checkpointed.losses == pytest.approx(plain.losses, rel=1e-4)
    assert torch.allclose(weights(model), weights(plain_model), atol=1e-5)
    assert not model.is_activation_checkpointing  # generation after training keeps its cache


def test_adafactor_trains_and_keeps_a_fraction_of_adamws_state(t5_dir, data):
    config = dataclasses.replace(STEPS, max_steps=30, optimizer="adafactor")
    stats, model = train(t5_dir, data, config)
    assert np.isfinite(stats.losses).all()
    assert np.mean(stats.losses[-5:]) < 0.9 * np.mean(stats.losses[:5])
    adafactor = memory.optimizer_state_bytes(model, "adafactor")
    assert adafactor < 0.2 * memory.optimizer_state_bytes(model, "adamw")
