"""Does a long-input student fit its device? The peak memory of one training step of a LongT5
student, by input length, with and without gradient checkpointing, with AdamW and Adafactor.

Each measurement runs in a child process of its own (a clean allocator): a LongT5
(transient-global attention) student built from config at the base model's width (d_model 768,
12 heads, d_ff 2048, 2+2 layers), one training step through the product's `fine_tune` at batch 1
on a source of N tokens and a 128-token summary, fp32 on this CPU. It prints what the step added
to the process's RSS (peak over the RSS before the step) beside what `micro_batch_size: auto`'s
probe takes the same step to need (`trainables.memory.cpu_step_bytes`: the larger of its count
and the step's own resident growth, less the weights the process already held), and
extrapolates to a 12+12 student at 16k tokens in bf16 against a 24 GB card.

    python -m bench.memory                      # 1k, 2k, 4k, 8k tokens, ~6 min here
    python -m bench.memory --tokens 1024 2048   # fewer lengths
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
from typing import Any

WIDTH = {"d_model": 768, "d_ff": 2048, "num_heads": 12, "d_kv": 64}
LAYERS = (2, 2)
SUMMARY_TOKENS = 128
LENGTHS = (1024, 2048, 4096, 8192)
SHAPES = {  # name -> (optimizer, gradient checkpointing)
    "adamw": ("adamw", False),
    "adamw + checkpointing": ("adamw", True),
    "adafactor": ("adafactor", False),
    "adafactor + checkpointing": ("adafactor", True),
}
TARGET = (16_384, (12, 12), 24 * 2**30)  # tokens, layers, a consumer card's memory


def student(layers: tuple[int, int]) -> Any:
    from transformers import LongT5Config, LongT5ForConditionalGeneration

    config = LongT5Config(
        vocab_size=32128,
        num_layers=layers[0],
        num_decoder_layers=layers[1],
        encoder_attention_type="transient-global",
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        **WIDTH,
    )
    return LongT5ForConditionalGeneration(config)


def one_step(tokens: int, optimizer: str, checkpointing: bool) -> dict[str, float]:
    """In this (child) process: one training step; what it added to the RSS and what the
    probe takes it to need, in bytes."""
    import numpy as np
    import torch

    from trainables import memory
    from trainables.batches import make_batch
    from trainables.config import TrainConfig
    from trainables.losses import seq2seq_loss
    from trainables.tokens import TokenizedData, TokenRows
    from trainables.train import fine_tune

    torch.manual_seed(0)
    model = student(LAYERS)
    rng = np.random.default_rng(0)
    source = TokenRows.from_lists([rng.integers(2, 32000, tokens).tolist()])
    summary = TokenRows.from_lists([rng.integers(2, 32000, SUMMARY_TOKENS).tolist()])
    data = TokenizedData(source, summary, source, summary, ("",))
    config = TrainConfig(
        max_steps=1, batch_size=1, optimizer=optimizer, gradient_checkpointing=checkpointing
    )
    added = memory.resident_growth(
        lambda: fine_tune(model, data, config, pad_token_id=0, threads=2)
    )

    if checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    model.train()
    batch = make_batch([source[0]], [summary[0]], 0, torch.device("cpu"))
    shape = (*batch["labels"].shape, model.config.vocab_size)
    run = functools.partial(seq2seq_loss, model, batch)
    probed = memory.cpu_step_bytes(model, None, config, run, shape)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"added": added, "probed": probed - weights, "weights": weights}


def measure(tokens: int, shape: str) -> dict[str, float]:
    optimizer, checkpointing = SHAPES[shape]
    args = [str(tokens), optimizer, str(int(checkpointing))]
    done = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--child", *args], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        tokens, optimizer, checkpointing = args.child
        print(json.dumps(one_step(int(tokens), optimizer, checkpointing == "1")))
        return

    gib = 2**30
    print(
        f"one training step, LongT5 tglobal {LAYERS[0]}+{LAYERS[1]} at d_model 768, batch 1, "
        f"{SUMMARY_TOKENS}-token summary, fp32 CPU: GiB the step added to the RSS (the probe's "
        "figure)"
    )
    print(f"{'tokens':>7} | " + " | ".join(f"{name:>26}" for name in SHAPES))
    results: dict[str, dict[int, dict[str, float]]] = {name: {} for name in SHAPES}
    for tokens in args.tokens:  # lengths outside, shapes inside: noise falls on every shape
        cells = []
        for name in SHAPES:
            result = results[name][tokens] = measure(tokens, name)
            cells.append(f"{result['added'] / gib:>15.2f} ({result['probed'] / gib:.2f})")
        print(f"{tokens:>7} | " + " | ".join(f"{c:>26}" for c in cells), flush=True)
    extrapolate(results)


def extrapolate(results: dict[str, dict[int, dict[str, float]]]) -> None:
    """A 12+12 student at 16k tokens in bf16, batch 1 (a guide, not a measurement): the step's
    growth per source token between the two longest measurements, taken as activations and
    halved for bf16; without checkpointing every layer keeps its own (scaled by layers), with
    it one layer's at a time plus each layer's input (bf16, d_model wide). Added: the larger
    student's fp32 weights and gradients and its optimizer's state
    (`trainables.memory.optimizer_state_bytes`)."""
    from trainables.memory import optimizer_state_bytes

    tokens, layers, card = TARGET
    model = student(layers)
    weights = sum(p.numel() * 4 for p in model.parameters())
    print(
        f"\nextrapolated: a {layers[0]}+{layers[1]} student ({weights / 4e6:.0f}M parameters) at "
        f"{tokens:,} tokens, bf16 activations, batch 1, against a {card / 2**30:.0f} GiB card"
    )
    for name, (optimizer, checkpointing) in SHAPES.items():
        measured = sorted(results[name])
        if len(measured) < 2:
            return
        (t1, r1), (t2, r2) = ((t, results[name][t]) for t in measured[-2:])
        growth = (r2["added"] - r1["added"]) / (t2 - t1) * tokens / 2
        if checkpointing:
            activations = growth + sum(layers) * tokens * WIDTH["d_model"] * 2
        else:
            activations = growth * sum(layers) / sum(LAYERS)
        total = 2 * weights + optimizer_state_bytes(model, optimizer) + activations
        verdict = "fits" if total <= card else "does not fit"
        print(
            f"  {name:>26}: {total / 2**30:6.1f} GiB "
            f"({activations / 2**30:.1f} of it activations), {verdict}"
        )


if __name__ == "__main__":
    main()
