"""Shared fixtures: tiny models built from config (never from the hub), sized like
transformers' own model testers (d_model 32, vocab 99, a handful of layers)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny import tiny_bart_dir, tiny_t5_dir
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    T5Config,
    T5ForConditionalGeneration,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run single-threaded: on a busy 2-core machine two OpenMP threads make tiny models
    ~100x slower (spin-waiting), turning a 20 ms generate() into 2 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_t5() -> T5ForConditionalGeneration:
    """A 5-encoder / 4-decoder layer T5 with seeded random weights, in eval mode."""
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=99,
        d_model=32,
        d_ff=37,
        d_kv=8,
        num_heads=4,
        num_layers=5,
        num_decoder_layers=4,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5ForConditionalGeneration(config).eval()


@pytest.fixture
def tiny_bart() -> BartForConditionalGeneration:
    """A 5-encoder / 4-decoder layer BART with seeded random weights, in eval mode."""
    torch.manual_seed(0)
    config = BartConfig(
        vocab_size=99,
        d_model=32,
        encoder_layers=5,
        decoder_layers=4,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=37,
        decoder_ffn_dim=37,
        max_position_embeddings=64,
        dropout=0.0,
        attention_dropout=0.0,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_eos_token_id=None,
    )
    return BartForConditionalGeneration(config).eval()


@pytest.fixture(scope="session")
def tiny_t5_path(tmp_path_factory) -> Path:
    """A tiny 4+3-layer T5 saved with its tokenizer: a local "pretrained" model."""
    return tiny_t5_dir(tmp_path_factory.mktemp("models") / "t5", layers=(4, 3))


@pytest.fixture(scope="session")
def tiny_bart_path(tmp_path_factory) -> Path:
    """A tiny 4+3-layer BART saved with its tokenizer."""
    return tiny_bart_dir(tmp_path_factory.mktemp("models") / "bart", layers=(4, 3))


@pytest.fixture(scope="session")
def tiny_sweep_store(tmp_path_factory, tiny_t5_path) -> Path:
    """The MLflow store of a finished two-trial tiny sweep, run as a user runs it; read, never
    changed, by the tests of what serves it (the MLflow UI, optuna-dashboard)."""
    from test_sweep import shrink_sweep, write_space

    root = tmp_path_factory.mktemp("tiny-sweep")
    done = shrink_sweep("run", str(write_space(root, tiny_t5_path)), cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "mlflow"
