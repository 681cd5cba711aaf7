"""The students' losses: hidden-state distillation on tiny T5 and BART models (tests/tiny.py).

The label and soft-target losses are checked with the training loop in test_train.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
from tiny import PAD_ID, tiny_bart_dir, tiny_t5_dir
from transformers import AutoModelForSeq2SeqLM

from trainables.batches import make_batch
from trainables.config import TrainConfig
from trainables.losses import LayerMatch, distillation_loss, hidden_state_loss, seq2seq_loss
from trainables.shrink import shrink

HIDDEN = TrainConfig(distill_hidden=2.0, distill_hidden_encoder=True)
FULL = LayerMatch(encoder=(0, 1, 2, 3), decoder=(0, 1, 2))  # the tiny models are 4+3 layers


@pytest.fixture(scope="module", params=["t5", "bart"])
def teacher(request, tmp_path_factory):
    make = {"t5": tiny_t5_dir, "bart": tiny_bart_dir}[request.param]
    model = AutoModelForSeq2SeqLM.from_pretrained(make(tmp_path_factory.mktemp(request.param)))
    torch.manual_seed(2)
    with torch.no_grad():  # every weight random, norms too: default ones hide matching bugs
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(3)
    sources = [torch.randint(5, 90, (n,)).numpy() for n in (9, 5, 7)]
    labels = [torch.randint(5, 90, (n,)).numpy() for n in (4, 6, 3)]
    return make_batch(sources, labels, PAD_ID, torch.device("cpu"))


def test_a_student_that_copies_the_teacher_layer_for_layer_has_no_hidden_loss(teacher, batch):
    student = copy.deepcopy(teacher).eval()  # no dropout: equal inputs, equal outputs
    only_labels = seq2seq_loss(student, batch).item()
    loss = distillation_loss(student, teacher, batch, HIDDEN, FULL)
    assert only_labels > 1.0
    assert loss.item() == pytest.approx(only_labels, abs=1e-5)


def test_each_student_layer_is_matched_with_the_layer_it_was_copied_from(teacher, batch):
    # Keeping the first two decoder layers of a full encoder: their outputs are the teacher's
    # first two layers' outputs exactly, so the loss is zero with the kept indices as the match.
    student = shrink(copy.deepcopy(teacher), (0, 1, 2, 3), (0, 1)).eval()
    decoder_only = TrainConfig(distill_hidden=1.0)
    hard = seq2seq_loss(student, batch).item()
    kept = LayerMatch(encoder=(0, 1, 2, 3), decoder=(0, 1))
    assert distillation_loss(student, teacher, batch, decoder_only, kept).item() == (
        pytest.approx(hard, abs=1e-5)
    )
    shifted = LayerMatch(encoder=(0, 1, 2, 3), decoder=(1, 2))
    mismatch = distillation_loss(student, teacher, batch, decoder_only, shifted).item() - hard
    assert mismatch > 0.05


def test_the_hidden_loss_is_weighted_and_trains_the_student(teacher, batch):
    student = shrink(copy.deepcopy(teacher), (0, 3), (0, 2)).eval()
    match = LayerMatch(encoder=(0, 3), decoder=(0, 2))
    hard = seq2seq_loss(student, batch).item()
    once = distillation_loss(student, teacher, batch, TrainConfig(distill_hidden=1.0), match)
    twice = distillation_loss(student, teacher, batch, TrainConfig(distill_hidden=2.0), match)
    assert once.item() - hard > 0.05
    assert twice.item() - hard == pytest.approx(2 * (once.item() - hard), rel=1e-4)
    twice.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.get_input_embeddings().weight.grad.abs().sum() > 0


def test_hidden_state_loss_counts_only_unmasked_positions():
    torch.manual_seed(4)
    student, teacher = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    same_where_counted = teacher.clone()
    same_where_counted[mask == 0] = student[mask == 0] + 5.0
    assert hidden_state_loss([student], [student], mask).item() == 0.0
    at_padding_only = hidden_state_loss([student], [same_where_counted], mask)
    assert hidden_state_loss([teacher], [same_where_counted], mask).item() == 0.0
    assert at_padding_only.item() > 0.5
    # Normalized outputs: a layer that only scales its input is not penalized.
    assert hidden_state_loss([3 * student], [student], mask).item() == pytest.approx(0, abs=1e-6)


def test_hidden_distillation_needs_the_match():
    config = TrainConfig(distill_hidden=1.0)
    model = torch.nn.Linear(1, 1)
    with pytest.raises(ValueError, match="matched layers"):
        distillation_loss(model, model, {}, config, None)
