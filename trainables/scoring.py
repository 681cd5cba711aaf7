"""Score a model as a trial reports it: generate summaries with the sweep's decoding, then
ROUGE against the references, the latency per example, and the loss on the evaluation data."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from trainables.batches import make_batch
from trainables.config import DecodingConfig
from trainables.losses import seq2seq_loss
from trainables.precision import autocast
from trainables.rouge import rouge_scores
from trainables.tokens import TokenizedData


def generate_summaries(
    model: torch.nn.Module,
    tokenizer: Any,
    input_ids: Sequence[np.ndarray],
    decoding: DecodingConfig,
    batch_size: int = 32,
) -> tuple[list[str], float]:
    """Generate a summary of every source, batched by length.

    Decoding is exactly `decoding` (greedy when `num_beams` is 1): the checkpoint's own
    generation settings for sampling and minimum length are overridden, so every trial is
    scored alike; its special token ids are kept.

    Args:
        model: A seq2seq LM.
        tokenizer: Its tokenizer, for the pad id and decoding.
        input_ids: Source token ids (a `TokenRows` or a list of arrays).
        decoding: Beam count, length limit, n-gram blocking, length penalty.
        batch_size: Sources per `generate` call.

    Returns:
        The summaries in the order of `input_ids`, and the mean latency per example in
        milliseconds (total wall time of generation and decoding / number of examples).
    """
    device = next(model.parameters()).device
    generation = generation_config(model.generation_config, decoding)
    order = np.argsort([-len(r) for r in input_ids], kind="stable")
    predictions = [""] * len(input_ids)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    with torch.inference_mode(), autocast(model):
        for first in range(0, len(order), batch_size):
            indices = order[first : first + batch_size]
            rows = [input_ids[i] for i in indices]
            batch = make_batch(rows, None, tokenizer.pad_token_id, device)
            output = model.generate(**batch, generation_config=generation)
            texts = tokenizer.batch_decode(output, skip_special_tokens=True)
            for i, text in zip(indices, texts, strict=True):
                predictions[i] = text.strip()
    synchronize(device)
    seconds = time.perf_counter() - start
    model.train(was_training)
    return predictions, 1000.0 * seconds / max(1, len(input_ids))


def evaluate_model(
    model: torch.nn.Module,
    tokenizer: Any,
    data: TokenizedData,
    decoding: DecodingConfig,
    batch_size: int = 32,
) -> dict[str, float]:
    """Score the model on the evaluation split.

    Args:
        model: A seq2seq LM.
        tokenizer: Its tokenizer.
        data: Tokenized data; only the evaluation split is used.
        decoding: Generation settings.
        batch_size: Examples per forward pass or `generate` call.

    Returns:
        `rouge1`, `rouge2`, `rougeL`, `rougeLsum` (0-100) of generated summaries against the
        reference texts, `latency_ms` per example, and `eval_loss`, the teacher-forced mean
        token cross-entropy (no label smoothing).
    """
    predictions, latency_ms = generate_summaries(
        model, tokenizer, data.eval_input_ids, decoding, batch_size
    )
    metrics = rouge_scores(predictions, data.eval_references)
    metrics["latency_ms"] = latency_ms
    metrics["eval_loss"] = eval_loss(model, data, tokenizer.pad_token_id, batch_size)
    return metrics


def eval_loss(
    model: torch.nn.Module, data: TokenizedData, pad_token_id: int, batch_size: int = 32
) -> float:
    """Teacher-forced mean token cross-entropy on the evaluation split.

    Args:
        model: A seq2seq LM.
        data: Tokenized data; only the evaluation split is used.
        pad_token_id: The tokenizer's pad id.
        batch_size: Examples per forward pass.

    Returns:
        Loss summed over all label tokens divided by their number, so long and short
        summaries weigh by their length, not by their batch.
    """
    device = next(model.parameters()).device
    order = np.argsort(data.eval_input_ids.lengths, kind="stable")
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.inference_mode(), autocast(model):
        for first in range(0, len(order), batch_size):
            indices = order[first : first + batch_size]
            batch = make_batch(
                [data.eval_input_ids[i] for i in indices],
                [data.eval_labels[i] for i in indices],
                pad_token_id,
                device,
            )
            n = int((batch["labels"] != -100).sum())
            total += seq2seq_loss(model, batch).item() * n
            count += n
    model.train(was_training)
    return total / max(1, count)


def generation_config(generation: Any, decoding: DecodingConfig) -> Any:
    """A checkpoint's generation config with exactly the sweep's decoding settings.

    Args:
        generation: The checkpoint's `GenerationConfig` (its special token ids are kept).
        decoding: The sweep's decoding settings.

    Returns:
        A new `GenerationConfig`: greedy or beam search as configured, no sampling and no
        minimum length (a CNN checkpoint's minimum of 56 tokens would distort every trial).
    """
    generation = copy.deepcopy(generation)
    settings: dict[str, Any] = {
        "num_beams": decoding.num_beams,
        "max_new_tokens": decoding.max_new_tokens,
        "no_repeat_ngram_size": decoding.no_repeat_ngram_size,
        "do_sample": False,
        "min_length": 0,
        "min_new_tokens": None,
    }
    if decoding.num_beams > 1:  # only beam search reads it; greedy would warn
        settings["length_penalty"] = decoding.length_penalty
    generation.update(**settings)
    return generation


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so that wall times measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
