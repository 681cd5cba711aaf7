"""Batches of tokenized rows: grouped by length so that little compute goes to padding, padded
to a rectangle, and moved to the device as the model's inputs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

BUCKET_BATCHES = 50  # batches per bucket: enough to group lengths, few enough to stay random


def length_batches(
    lengths: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    bucket_batches: int = BUCKET_BATCHES,
) -> list[np.ndarray]:
    """One epoch of shuffled batches whose members have similar lengths.

    The data are shuffled, cut into buckets of `bucket_batches` batches, each bucket sorted
    by length and cut into batches, and the batches shuffled, so padding is small while
    batch order and membership still change every epoch.

    Args:
        lengths: Length of every example.
        batch_size: Examples per batch; the last batch may be smaller.
        rng: Source of the shuffles.
        bucket_batches: Batches per bucket.

    Returns:
        Index arrays, one per batch, covering every example once.
    """
    order = rng.permutation(len(lengths))
    bucket = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), bucket):
        chunk = order[start : start + bucket]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def pad_rows(rows: Sequence[np.ndarray], value: int) -> np.ndarray:
    """Stack rows of different lengths into one int64 array, right-padded with `value`.

    Args:
        rows: Token id rows.
        value: The padding value.

    Returns:
        Array of shape (len(rows), longest row).
    """
    out = np.full((len(rows), max(len(r) for r in rows)), value, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def make_batch(
    input_ids: Sequence[np.ndarray],
    labels: Sequence[np.ndarray] | None,
    pad_token_id: int,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Model inputs for some examples, padded to the longest of them (dynamic padding).

    Args:
        input_ids: Source token ids.
        labels: Target token ids, or None for generation.
        pad_token_id: The tokenizer's pad id.
        device: Where the tensors go.

    Returns:
        `input_ids` and `attention_mask`, and `labels` padded with -100 (ignored by the loss)
        when labels are given.
    """
    ids = pad_rows(input_ids, pad_token_id)
    lengths = np.array([len(r) for r in input_ids])
    mask = (np.arange(ids.shape[1]) < lengths[:, None]).astype(np.int64)
    batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    if labels is not None:
        batch["labels"] = torch.from_numpy(pad_rows(labels, -100))
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
