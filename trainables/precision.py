"""The precision a model computes in on a device: one rule for training (accelerate's mixed
precision) and for generation and scoring (autocast).

bf16 on a GPU that has it; fp16 on an older GPU, except for the families whose activations
overflow fp16's range (T5's feed-forward outputs grow past 65,504 in pretrained checkpoints;
LongT5 and Pegasus give NaN losses in fp16), which stay in full precision there; full precision
on a CPU and on accelerators whose half-precision support varies.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

FP16_UNSAFE = frozenset(
    {
        "t5",
        "mt5",
        "umt5",
        "longt5",
        "pegasus",
        "pegasus_x",
        "bigbird_pegasus",
        "switch_transformers",
    }
)


def precision_for(device_type: str, bf16_supported: bool, model_type: str = "") -> str:
    """The `accelerate` mixed-precision mode for a model on a device.

    Args:
        device_type: `torch.device.type`, e.g. "cuda" or "cpu".
        bf16_supported: Whether the GPU computes in bfloat16 (Ampere and newer).
        model_type: The model's `config.model_type`, e.g. "t5" or "bart".

    Returns:
        "bf16", "fp16" or "no" (full precision), by the rule in the module docstring.
    """
    if device_type != "cuda":
        return "no"
    if bf16_supported:
        return "bf16"
    return "no" if model_type in FP16_UNSAFE else "fp16"


def autocast(model: torch.nn.Module) -> Any:
    """A context that runs `model`'s inference in its precision (`precision_for`)."""
    device = next(model.parameters()).device
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    mode = precision_for(device.type, bf16, model.config.model_type)
    if mode == "no":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if mode == "bf16" else torch.float16)
