"""Builders of tiny tokenizers, models and data for tests: offline, seeded, built in a second.

`tiny_t5_dir` and `tiny_bart_dir` write a "local pretrained model" (weights, config,
generation config and tokenizer) that `from_pretrained` loads like a downloaded checkpoint,
so end-to-end tests exercise the same loading code a real sweep does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import BpeTrainer
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    GenerationConfig,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

TINY_DATA = Path(__file__).parent / "data" / "tiny"
TINY_FILES = {split: str(TINY_DATA / f"{split}.jsonl") for split in ("train", "validation")}
VOCAB_SIZE = 300
# T5's ids: pad 0, eos 1, unk 2; BART also needs a bos, which T5 never uses.
SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>", "<s>"]
PAD_ID, EOS_ID, UNK_ID, BOS_ID = range(4)
# Printable ASCII in the alphabet so that no test text turns into <unk>.
ALPHABET = [chr(c) for c in range(33, 127)]
SEED = 0


def tiny_space(model: str | Path, **changes: Any) -> dict[str, Any]:
    """A space.yaml (as a dict) over a tiny model and the tiny data; `changes` replace
    top-level keys."""
    space = {
        "name": "tiny",
        "model": str(model),
        "data": {
            "files": dict(TINY_FILES),
            "source_template": "{package}: {document}",
            "max_source_length": 48,
            "max_target_length": 16,
            "max_eval_examples": 12,
        },
        "layers": {
            "encoder": {"low": 1, "high": 4},
            "decoder": {"low": 1, "high": 3},
            "strategy": ["sft", "spread", "first"],
        },
        "train": {
            "learning_rate": {"low": 3.0e-3, "high": 3.0e-2, "log": True},
            "max_steps": 8,
            "batch_size": 8,
            "eval_every": 4,
        },
        "decoding": {"max_new_tokens": 8},
        "trials": 2,
        "first": [{"encoder": 4, "decoder": 3, "strategy": "sft"}],
    }
    space.update(changes)
    return space


def tiny_texts() -> list[str]:
    """Documents and summaries of the tiny training split, the tokenizer's training text."""
    texts = []
    for line in (TINY_DATA / "train.jsonl").read_text().splitlines():
        row = json.loads(line)
        texts += [row["document"], row["summary"], row["package"]]
    return texts


def tiny_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Train a small BPE tokenizer on the tiny data and save it to `path`.

    BPE rather than Unigram: at this vocabulary size the `tokenizers` Unigram trainer keeps
    many single characters, which doubles sequence lengths and slows every test.

    Args:
        path: Directory to save into; `AutoTokenizer.from_pretrained(path)` loads it.

    Returns:
        The tokenizer (pad 0, eos 1, unk 2, bos 3; appends eos like T5).
    """
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.normalizer = normalizers.NFKC()
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    trainer = BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=ALPHABET,
        show_progress=False,
    )
    backend.train_from_iterator(tiny_texts(), trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", EOS_ID)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        bos_token="<s>",
    )
    tokenizer.save_pretrained(str(path))
    return tokenizer


def tiny_t5_dir(path: str | Path, layers: tuple[int, int] = (4, 3)) -> Path:
    """Save a randomly initialised tiny T5 and its tokenizer as a local pretrained model.

    Args:
        path: Directory to create.
        layers: (encoder, decoder) layer counts.

    Returns:
        `path`, ready for `from_pretrained`.
    """
    path = Path(path)
    tokenizer = tiny_tokenizer(path)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_ff=64,
        d_kv=8,
        num_heads=4,
        num_layers=layers[0],
        num_decoder_layers=layers[1],
        relative_attention_num_buckets=8,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        decoder_start_token_id=PAD_ID,
    )
    torch.manual_seed(SEED)
    _save(T5ForConditionalGeneration(config), path)
    return path


def tiny_bart_dir(path: str | Path, layers: tuple[int, int] = (4, 3)) -> Path:
    """Save a randomly initialised tiny BART and its tokenizer as a local pretrained model.

    Args:
        path: Directory to create.
        layers: (encoder, decoder) layer counts.

    Returns:
        `path`, ready for `from_pretrained`.
    """
    path = Path(path)
    tokenizer = tiny_tokenizer(path)
    config = BartConfig(
        vocab_size=len(tokenizer),
        d_model=32,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_layers=layers[0],
        decoder_layers=layers[1],
        max_position_embeddings=128,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        bos_token_id=BOS_ID,
        # BART starts decoding from eos (its checkpoints do the same).
        decoder_start_token_id=EOS_ID,
        forced_bos_token_id=None,
        forced_eos_token_id=EOS_ID,
    )
    torch.manual_seed(SEED)
    _save(BartForConditionalGeneration(config), path)
    return path


def _save(model: torch.nn.Module, path: Path) -> None:
    config = model.config
    generation = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        bos_token_id=getattr(config, "bos_token_id", None),
        max_new_tokens=16,
    )
    model.generation_config = generation
    model.save_pretrained(str(path))
