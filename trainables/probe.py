"""What one student costs, measured before a sweep (`shrink-sweep plan`): a few optimizer steps
and a short evaluation of the student on a worker of the sweep's resources, timed, and the peak
memory of a step on the longest batch the data can make (`trainables.memory`).

The same code as a trial (`trainables.trial.shrunk_student`, `trainables.train.fine_tune`,
`trainables.scoring.evaluate_model`), cut short.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from trainables.config import DecodingConfig, TrialConfig
from trainables.trial import PackedModel, shrunk_student


@dataclass(frozen=True)
class TrialProbe:
    """A student's measured costs."""

    params: int
    micro_batch_size: int  # what it trained at (the pick of `auto`)
    peak_bytes: int  # a training step at that micro-batch, on the longest batch
    start_seconds: float  # shrinking the base model and setting training up
    step_seconds: float  # an optimizer step, the first (warm-up) left out
    eval_seconds_per_pair: float  # generating and scoring, in the sweep's decoding
    rung_seconds_per_pair: float  # the same in the rungs' decoding (`rung_num_beams`)
    device_memory: int  # bytes the step was fitted into (`trainables.memory.memory_limit`)


def probe_trial(
    config: TrialConfig,
    base: PackedModel,
    data: Any,
    decoding: DecodingConfig,
    steps: int,
    pairs: int,
    threads: int | None = None,
    gpu_share: float = 1.0,
    memory_limit: int | None = None,
) -> TrialProbe:
    """Train the student of `config` for `steps` optimizer steps (after a first one) at the
    largest micro-batch that fits (`micro_batch_size: auto`, against `memory_limit` if given,
    else the trial's share of its device), then evaluate it on `pairs` evaluation pairs, in the
    sweep's decoding and in the rungs'.

    Raises:
        DoesNotFitError: `micro_batch_size: auto` found that one example does not fit.
    """
    from trainables.losses import LayerMatch
    from trainables.memory import memory_limit as device_memory
    from trainables.scoring import evaluate_model
    from trainables.train import fine_tune, set_checkpointing, step_peak

    started = time.perf_counter()
    student, tokenizer, teacher, sizes = shrunk_student(config, base)
    train = dataclasses.replace(
        config.train, max_steps=steps + 1, epochs=0.0, eval_every=0, micro_batch_size="auto"
    )
    train_data = data.with_targets(train.targets)
    ends: list[float] = []
    match = LayerMatch(config.encoder_layers, config.decoder_layers)
    stats = fine_tune(
        student,
        train_data,
        train,
        pad_token_id=tokenizer.pad_token_id,
        on_step=lambda step, loss: ends.append(time.perf_counter()),
        threads=threads,
        teacher=teacher,
        match=match,
        memory_share=gpu_share,
        memory_limit=memory_limit,
    )
    step_seconds = (ends[-1] - ends[0]) / steps
    start_seconds = ends[0] - started - step_seconds
    device = next(student.parameters()).device
    micro = dataclasses.replace(train, micro_batch_size=stats.micro_batch_size)
    set_checkpointing(student, train.gradient_checkpointing)
    student.train()
    peak = step_peak(
        student, train_data, micro, tokenizer.pad_token_id, device, (teacher, match),
        stats.micro_batch_size,
    )  # fmt: skip
    set_checkpointing(student, False)
    student.eval()
    head = data.eval_head(pairs)
    per_pair = []
    for beams in (decoding.num_beams, config.rungs.num_beams or decoding.num_beams):
        began = time.perf_counter()
        evaluate_model(student, tokenizer, head, dataclasses.replace(decoding, num_beams=beams))
        per_pair.append((time.perf_counter() - began) / len(head.eval_references))
    return TrialProbe(
        params=int(sizes["params"]),
        micro_batch_size=stats.micro_batch_size,
        peak_bytes=peak or 0,
        start_seconds=max(0.0, start_seconds),
        step_seconds=step_seconds,
        eval_seconds_per_pair=per_pair[0],
        rung_seconds_per_pair=per_pair[1],
        device_memory=memory_limit or device_memory(device, gpu_share),
    )
