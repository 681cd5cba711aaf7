"""Content keys: what a model, a tokenizer and token ids *are*, not how a library wrote them.

A cache keyed by the bytes of `save_pretrained`'s files misses on every upgrade of transformers
(config.json carries `"transformers_version"`, and a writer may change a file's layout without
changing the model). These digests read the loaded objects instead: the weights as tensors
(name, dtype, shape, values), the configuration as the model states it less the fields a writer
adds, the tokenizer's vocabulary and special tokens. Each is a hex digest of its own, so a key
made of them can say which part differs when it misses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

# Fields that say who wrote a configuration or where it was read from, not what the model does.
# `dtype` (called `torch_dtype` before transformers 5) is the dtype of the saved file: the
# weights' digest holds the dtype they are used in.
WRITER_FIELDS = frozenset({"transformers_version", "dtype", "torch_dtype"})


def digest_json(value: Any) -> str:
    """The sha256 of `value` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def weights_digest(model: Any) -> str:
    """The model's weights as tensors: each name, dtype, shape and value, in name order.

    Tied weights (one tensor under several names, like T5's shared embedding and its LM head)
    count once, under the first of their names, so whether a writer stores a tie once or
    twice does not matter.
    """
    import torch

    digest = hashlib.sha256()
    seen: set[tuple[int, tuple[int, ...]]] = set()
    for name, tensor in sorted(model.state_dict().items()):
        identity = (tensor.data_ptr(), tuple(tensor.shape))
        if identity in seen:
            continue
        seen.add(identity)
        values = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{values.dtype}:{tuple(tensor.shape)}\n".encode())
        digest.update(memoryview(values.view(torch.uint8).numpy()))
    return digest.hexdigest()


def config_fields(config: Any) -> dict[str, Any]:
    """A model or generation config as the model states it: the fields that differ from the
    library's defaults (`to_diff_dict`), less writer fields, private ones and unset (None) ones.

    A new library version that adds a field with a None default leaves this unchanged; one that
    changes what the model computes by default does not.
    """
    return {
        key: value
        for key, value in config.to_diff_dict().items()
        if key not in WRITER_FIELDS and not key.startswith("_") and value is not None
    }


def tokenizer_fields(tokenizer: Any) -> dict[str, Any]:
    """What a tokenizer turns ids back into: its vocabulary by id, and its special tokens."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: (item[1], item[0]))
    specials = sorted(zip(tokenizer.all_special_tokens, tokenizer.all_special_ids, strict=True))
    return {"vocab": vocab, "special_tokens": specials}


def model_key(model: Any, tokenizer: Any) -> dict[str, str]:
    """The parts of a model's content key: weights, config, generation config and tokenizer."""
    generation = getattr(model, "generation_config", None)
    return {
        "weights": weights_digest(model),
        "config": digest_json(config_fields(model.config)),
        "generation_config": digest_json(config_fields(generation) if generation else {}),
        "tokenizer": digest_json(tokenizer_fields(tokenizer)),
    }


def rows_digest(values: np.ndarray, offsets: np.ndarray) -> str:
    """Token id rows (flat values and row offsets) as int32 and int64, whatever their dtype."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(values, dtype=np.int32).tobytes())
    digest.update(np.ascontiguousarray(offsets, dtype=np.int64).tobytes())
    return digest.hexdigest()


def combined_key(parts: Mapping[str, str], length: int = 24) -> str:
    """One key of all the parts, for a file name."""
    return digest_json(dict(parts))[:length]


def differing_parts(parts: Mapping[str, str], other: Mapping[str, str]) -> list[str]:
    """The names of the parts in which two keys differ (a part only one has differs too)."""
    return sorted(name for name in {*parts, *other} if parts.get(name) != other.get(name))
