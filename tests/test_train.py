"""The training loop, its memory controls and evaluation on a tiny T5 (and BART) built by
tests/tiny.py."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from tiny import TINY_FILES, tiny_bart_dir, tiny_t5_dir
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from trainables import memory
from trainables.batches import length_batches, make_batch
from trainables.config import DataConfig, DecodingConfig, TrainConfig
from trainables.data import load_splits
from trainables.losses import distillation_loss, seq2seq_loss
from trainables.memory import DoesNotFitError, fit_micro_batch
from trainables.precision import precision_for
from trainables.rouge import ROUGE_TYPES
from trainables.scoring import eval_loss, evaluate_model, generate_summaries
from trainables.tokens import TokenizedData, TokenRows, tokenize_splits
from trainables.train import NonFiniteLossError, fine_tune, total_steps

DATA = DataConfig(
    files=TINY_FILES,
    max_source_length=64,
    max_target_length=24,
)
# Calibrated on the tiny data: 30 steps at this rate cut the loss by about 35% (seeds 0, 1).
FAST = TrainConfig(learning_rate=3e-2, max_steps=30, batch_size=16, warmup_ratio=0.1)


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    return tiny_t5_dir(tmp_path_factory.mktemp("t5"))


@pytest.fixture(scope="module")
def tokenizer(t5_dir):
    return AutoTokenizer.from_pretrained(t5_dir)


@pytest.fixture(scope="module")
def data(tokenizer) -> TokenizedData:
    return tokenize_splits(load_splits(DATA), tokenizer, DATA)


@pytest.fixture
def model(t5_dir):
    return AutoModelForSeq2SeqLM.from_pretrained(t5_dir)


def train(model, data, config: TrainConfig, **kwargs):
    return fine_tune(model, data, config, pad_token_id=0, **kwargs)


# --- Pure helpers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "bf16", "model_type", "expected"),
    [
        ("cuda", True, "t5", "bf16"),
        ("cuda", True, "bart", "bf16"),
        ("cuda", False, "bart", "fp16"),
        ("cuda", False, "t5", "no"),  # T5 and its kin overflow fp16: full precision instead
        ("cuda", False, "longt5", "no"),
        ("cuda", False, "pegasus", "no"),
        ("cpu", False, "bart", "no"),
        ("cpu", True, "t5", "no"),
        ("mps", True, "bart", "no"),
    ],
)
def test_precision_for(device, bf16, model_type, expected):
    assert precision_for(device, bf16, model_type) == expected


@pytest.mark.parametrize(
    ("epochs", "batch", "accumulate", "expected"),
    [
        (0.0, 16, 1, 77),  # max_steps
        (1.0, 16, 1, 13),  # ceil(200 / 16) batches
        (1.0, 16, 2, 7),  # ceil(13 / 2)
        (2.5, 16, 1, 33),  # ceil(2.5 * 13)
        (0.01, 16, 1, 1),  # at least one step
    ],
)
def test_total_steps(epochs, batch, accumulate, expected):
    config = TrainConfig(max_steps=77, epochs=epochs, batch_size=batch,
                         gradient_accumulation_steps=accumulate)  # fmt: skip
    assert total_steps(config, 200) == expected


def test_length_batches_cover_everything_once_with_less_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 500, size=1000)
    batches = length_batches(lengths, 16, np.random.default_rng(1), bucket_batches=10)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert max(len(b) for b in batches) == 16
    random_order = np.array_split(rng.permutation(1000), len(batches))

    def padded(groups):
        return sum(len(g) * lengths[g].max() for g in groups)

    assert padded(batches) < 0.7 * padded(random_order)


def test_make_batch_pads_sources_and_labels():
    batch = make_batch(
        [np.array([5, 6, 1]), np.array([7, 1])],
        [np.array([8, 1]), np.array([9, 9, 9, 1])],
        pad_token_id=0,
        device=torch.device("cpu"),
    )
    assert batch["input_ids"].tolist() == [[5, 6, 1], [7, 1, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[8, 1, -100, -100], [9, 9, 9, 1]]


# --- Training ------------------------------------------------------------------------------


def test_fine_tune_lowers_the_loss(model, data):
    seen = []
    stats = train(model, data, FAST, on_step=lambda step, loss: seen.append((step, loss)))
    losses = np.array(stats.losses)
    assert losses[-5:].mean() < 0.8 * losses[:5].mean()
    assert [s for s, _ in seen] == list(range(1, 31))
    assert [loss for _, loss in seen] == list(stats.losses)
    # An epoch is 12 batches of 16 and one of 8: 30 steps see 2 epochs and 4 batches.
    assert (stats.steps, stats.examples) == (30, 2 * 200 + 4 * 16)
    assert stats.final_loss == pytest.approx(losses[-10:].mean())
    assert stats.seconds > 0 and stats.examples_per_second > 0
    assert stats.tokens > stats.examples * 10
    assert not model.training


def test_seeded_runs_repeat_and_seeds_differ(t5_dir, data):
    config = TrainConfig(learning_rate=1e-2, max_steps=6, batch_size=8)

    def losses(seed: int) -> tuple[float, ...]:
        fresh = AutoModelForSeq2SeqLM.from_pretrained(t5_dir)
        run = TrainConfig(**{**config.__dict__, "seed": seed})
        return train(fresh, data, run).losses

    first = losses(0)
    assert losses(0) == first
    assert losses(1) != first


def test_huge_learning_rate_stops_at_the_first_non_finite_loss(model, data):
    config = TrainConfig(learning_rate=1e30, max_steps=20, batch_size=8)
    seen = []
    with pytest.raises(NonFiniteLossError) as caught:
        train(model, data, config, on_step=lambda step, loss: seen.append(step))
    assert caught.value.step == len(seen) + 1 <= 3
    assert not math.isfinite(caught.value.loss)


def test_poisoned_weight_stops_before_any_update(model, data):
    with torch.no_grad():
        model.lm_head.weight[3, 3] = float("nan")
    before = model.encoder.block[0].layer[0].SelfAttention.q.weight.clone()
    with pytest.raises(NonFiniteLossError, match="at step 1"):
        train(model, data, TrainConfig(max_steps=5, batch_size=8))
    assert torch.equal(model.encoder.block[0].layer[0].SelfAttention.q.weight, before)


def test_accumulation_and_epochs_count_examples(model, data):
    config = TrainConfig(epochs=1.0, batch_size=8, gradient_accumulation_steps=2)
    stats = train(model, data, config)
    assert stats.steps == total_steps(config, 200) == 13
    # 25 batches of 8 make an epoch; the 26th micro-batch starts the next one.
    assert stats.examples == 200 + 8


def test_zero_steps_is_an_error(model, data):
    with pytest.raises(ValueError, match="max_steps and epochs are both 0"):
        train(model, data, TrainConfig(max_steps=0))


def test_intermediate_evaluation_every_n_steps(model, data):
    calls = []

    def evaluate_at(step: int) -> None:
        calls.append(step)
        model.eval()  # evaluation may change the mode; training must restore it

    stats = train(model, data, TrainConfig(max_steps=12, batch_size=4, eval_every=5),
                  evaluate_at=evaluate_at)  # fmt: skip
    assert calls == [5, 10]
    assert stats.steps == 12


# --- Distillation --------------------------------------------------------------------------


def first_batch(data: TokenizedData, n: int = 8) -> dict[str, torch.Tensor]:
    rows = range(n)
    return make_batch(
        [data.train_input_ids[i] for i in rows],
        [data.train_labels[i] for i in rows],
        pad_token_id=0,
        device=torch.device("cpu"),
    )


def test_distillation_loss_mixes_labels_and_the_teachers_soft_targets(t5_dir, model, data):
    batch = first_batch(data)
    teacher = scrambled(AutoModelForSeq2SeqLM.from_pretrained(t5_dir))
    hard = seq2seq_loss(model, batch).item()
    no_teacher = TrainConfig(distill=0.0)
    assert distillation_loss(model, teacher, batch, no_teacher).item() == pytest.approx(hard)
    # A student identical to its teacher has nothing to learn from it: the KL term is 0.
    only_soft = TrainConfig(distill=1.0, distill_temperature=3.0)
    assert distillation_loss(model, model, batch, only_soft).item() == pytest.approx(0, abs=1e-5)
    soft = distillation_loss(model, teacher, batch, only_soft).item()
    half = distillation_loss(model, teacher, batch, TrainConfig(distill=0.5, distill_temperature=3))
    assert soft > 0.01
    assert half.item() == pytest.approx(0.5 * hard + 0.5 * soft, rel=1e-5)


def test_distilled_student_moves_toward_its_teacher(t5_dir, model, data):
    teacher = scrambled(AutoModelForSeq2SeqLM.from_pretrained(t5_dir))
    teacher_before = [p.clone() for p in teacher.parameters()]
    config = TrainConfig(learning_rate=1e-2, max_steps=15, batch_size=16, distill=1.0)
    batch = first_batch(data)
    before = distillation_loss(model, teacher, batch, config).item()
    train(model, data, config, teacher=teacher)
    assert distillation_loss(model, teacher, batch, config).item() < 0.8 * before
    assert all(torch.equal(a, b) for a, b in zip(teacher.parameters(), teacher_before, strict=True))


def test_distillation_without_a_teacher_is_an_error(model, data):
    with pytest.raises(ValueError, match="no teacher"):
        train(model, data, TrainConfig(max_steps=1, distill=0.5))


def test_threads_are_set_on_cpu(model, data):
    train(model, data, TrainConfig(max_steps=1, batch_size=4), threads=2)
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)


def test_bart_fine_tunes_too(tmp_path, data):
    bart_dir = tiny_bart_dir(tmp_path / "bart")
    bart = AutoModelForSeq2SeqLM.from_pretrained(bart_dir)
    stats = train(bart, data, TrainConfig(learning_rate=1e-2, max_steps=8, batch_size=8))
    assert stats.losses[-1] < stats.losses[0]


# --- Evaluation ----------------------------------------------------------------------------


def scrambled(model: torch.nn.Module) -> torch.nn.Module:
    """Large random weights, so that every source gets a different greedy summary."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.5)
    return model.eval()


def test_generate_returns_summaries_in_input_order(model, tokenizer, data):
    scrambled(model)
    decoding = DecodingConfig(max_new_tokens=6)
    predictions, latency_ms = generate_summaries(
        model, tokenizer, data.eval_input_ids, decoding, batch_size=8
    )
    one_by_one = [
        tokenizer.decode(
            model.generate(input_ids=torch.tensor([row.tolist()]), max_new_tokens=6)[0],
            skip_special_tokens=True,
        ).strip()
        for row in data.eval_input_ids
    ]
    assert predictions == one_by_one
    assert len(set(predictions)) > 10
    assert latency_ms > 0


def test_generate_with_beams_accepts_a_plain_list(model, tokenizer, data):
    rows = [data.eval_input_ids[i] for i in (3, 0, 7)]
    decoding = DecodingConfig(num_beams=3, max_new_tokens=5, no_repeat_ngram_size=2,
                              length_penalty=1.5)  # fmt: skip
    predictions, _ = generate_summaries(scrambled(model), tokenizer, rows, decoding)
    assert len(predictions) == 3 and all(isinstance(p, str) for p in predictions)


def test_evaluate_model_reports_every_metric(model, tokenizer, data):
    train(model, data, TrainConfig(learning_rate=3e-2, max_steps=10, batch_size=16))
    metrics = evaluate_model(model, tokenizer, data, DecodingConfig(max_new_tokens=12))
    assert set(metrics) == {*ROUGE_TYPES, "latency_ms", "eval_loss"}
    assert all(0.0 <= metrics[k] <= 100.0 for k in ROUGE_TYPES)
    assert metrics["latency_ms"] > 0
    assert 0 < metrics["eval_loss"] < math.log(len(tokenizer))


def test_eval_loss_equals_the_models_own_loss(model, data):
    rows = TokenRows.from_lists([r.tolist() for r in data.eval_input_ids])
    batch = make_batch(list(rows), list(data.eval_labels), 0, torch.device("cpu"))
    with torch.no_grad():
        expected = model.eval()(**batch).loss.item()
    # One batch holds everything, so token-weighted and batch means agree.
    assert eval_loss(model, data, pad_token_id=0, batch_size=64) == pytest.approx(
        expected, rel=1e-5
    )


# --- Memory controls (`trainables.memory`): micro-batches that train exactly as the whole batch,
# `micro_batch_size: auto` against an injected memory limit, gradient checkpointing and
# Adafactor, on the tiny T5 without dropout, so that runs compare step by step.

STEPS = TrainConfig(learning_rate=3e-2, max_steps=6, batch_size=8, warmup_ratio=0.1)


def student(t5_dir):
    return AutoModelForSeq2SeqLM.from_pretrained(t5_dir, dropout_rate=0.0)


def train_student(t5_dir, data, config, **kwargs):
    model = student(t5_dir)
    return fine_tune(model, data, config, pad_token_id=0, threads=1, **kwargs), model


def weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.fixture
def counted_only(monkeypatch):
    """The CPU probe's count alone, without the resident growth that noise moves: the limits
    these tests inject sit exactly at counted sizes."""
    monkeypatch.setattr(memory, "resident_growth", lambda work: work())


@pytest.mark.parametrize("micro", [1, 3, "auto"])
def test_micro_batches_train_as_the_whole_batch(t5_dir, data, micro, counted_only):
    whole, whole_model = train_student(t5_dir, data, STEPS)
    # auto, against a limit between what micro-batches of 2 and 4 need: it picks 2
    limit = {"auto": (step_bytes(t5_dir, data, 2) + step_bytes(t5_dir, data, 4)) // 2}
    config = dataclasses.replace(STEPS, micro_batch_size=micro)
    split, split_model = train_student(t5_dir, data, config, memory_limit=limit.get(micro))
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
    return memory.cpu_step_bytes(model, None, STEPS, lambda: seq2seq_loss(model, batch), shape)


def test_the_probe_counts_more_for_larger_micro_batches_and_less_with_checkpointing(
    t5_dir, data, counted_only
):
    counted = [step_bytes(t5_dir, data, size) for size in (1, 2, 4, 8)]
    assert counted == sorted(counted) and counted[0] < counted[-1]
    parameters = sum(p.numel() * 4 for p in student(t5_dir).parameters())
    assert counted[0] > 4 * parameters  # weights, gradients, AdamW's two moments, and more
    assert step_bytes(t5_dir, data, 8, checkpointing=True) < counted[-1]


def test_auto_picks_a_smaller_micro_batch_under_a_lower_limit_and_refuses_when_none_fits(
    t5_dir, data, counted_only
):
    auto = dataclasses.replace(STEPS, max_steps=1, micro_batch_size="auto")
    sizes = {size: step_bytes(t5_dir, data, size) for size in (1, 2, 4, 8)}
    picked = [
        train_student(t5_dir, data, auto, memory_limit=sizes[size])[0].micro_batch_size
        for size in (8, 4, 1)
    ]
    assert picked == [8, 4, 1]
    with pytest.raises(DoesNotFitError, match="one example of the longest batch needs"):
        train_student(t5_dir, data, auto, memory_limit=sizes[1] - 1)


def test_the_cpu_probe_sees_a_transient_the_count_misses(t5_dir, data):
    """A step that holds 256 MiB only while it runs (as a long input's attention does) keeps
    nothing for the backward pass, yet the probe takes it to need that much."""
    model = student(t5_dir)
    batch = make_batch(*memory.worst_case_rows(data, 1), 0, torch.device("cpu"))
    shape = (*batch["labels"].shape, model.config.vocab_size)
    transient = 256 * 2**20

    def run_step():
        scratch = torch.ones(transient // 4)  # written to: resident, not just reserved
        loss = seq2seq_loss(model, batch) + scratch[0] * 0
        del scratch
        return loss

    plain = memory.cpu_step_bytes(model, None, STEPS, lambda: seq2seq_loss(model, batch), shape)
    probed = memory.cpu_step_bytes(model, None, STEPS, run_step, shape)
    assert probed >= plain - 2**20 + 0.95 * transient


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
    plain, plain_model = train_student(t5_dir, data, STEPS)
    config = dataclasses.replace(STEPS, gradient_checkpointing=True)
    checkpointed, model = train_student(t5_dir, data, config)
    assert checkpointed.losses == pytest.approx(plain.losses, rel=1e-4)
    assert torch.allclose(weights(model), weights(plain_model), atol=1e-5)
    assert not model.is_activation_checkpointing  # generation after training keeps its cache


def test_adafactor_trains_and_keeps_a_fraction_of_adamws_state(t5_dir, data):
    config = dataclasses.replace(STEPS, max_steps=30, optimizer="adafactor")
    stats, model = train_student(t5_dir, data, config)
    assert np.isfinite(stats.losses).all()
    assert np.mean(stats.losses[-5:]) < 0.9 * np.mean(stats.losses[:5])
    adafactor = memory.optimizer_state_bytes(model, "adafactor")
    assert adafactor < 0.2 * memory.optimizer_state_bytes(model, "adamw")
