"""What a training step of a trial holds in memory, and the largest micro-batch that fits.

`micro_batch_size: auto` (`trainables.train.fine_tune`) probes one step of the student on the
worst-case batch (the longest sources with the longest labels) at a few micro-batch sizes,
halving from `batch_size` (as accelerate's `find_executable_batch_size` does), and keeps the
largest whose peak fits the device:

- on a GPU, the peak is what torch's allocator reports for the probe step (a probe that runs
  out of memory does not fit), plus the optimizer's state, which the first real step creates;
- on a CPU, where no allocator keeps count, it is the larger of two figures from the same
  probe step. The count: the weights (student and teacher), the student's gradients, the
  optimizer's state, the activations the forward pass keeps for the backward (every tensor
  autograd saves, each storage once, parameters not included) and the teacher's logits for
  distillation. And what the step made resident: the weights, the optimizer's state, and the
  most the process's resident memory grew over the step (Linux's high-water mark, reset just
  before). The count misses transients: a layer's attention at work, and its recomputation in
  a checkpointed backward pass, which with few layers and long inputs set the peak
  (bench/README.md "Memory of a long-input step": a checkpointed LongT5 2+2 step at 8k tokens
  counts 1.09 GiB and peaks at 3.33); the resident growth sees them, but not memory the
  allocator reuses from earlier steps, which the count does.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from trainables.config import TrainConfig

MEMORY_SHARE = 0.9  # of the device's memory a trial plans to use: the rest is slack


class DoesNotFitError(RuntimeError):
    """Not even one example per micro-batch fits the device's memory."""

    def __init__(self, needed: int | None, limit: int) -> None:
        self.needed, self.limit = needed, limit
        needs = "runs out" if needed is None else f"needs {size_text(needed)}"
        super().__init__(
            f"one example of the longest batch {needs} in a training step, and the trial "
            f"may use {size_text(limit)}; try train.gradient_checkpointing: true, "
            "train.optimizer: adafactor, a shorter data.max_source_length, or fewer layers"
        )

    def __reduce__(self) -> tuple:  # so that it crosses from a Ray worker whole
        return DoesNotFitError, (self.needed, self.limit)


def fit_micro_batch(peak: Callable[[int], int | None], batch_size: int, limit: int) -> int:
    """The largest micro-batch, `batch_size` halved until it fits, whose step's `peak` (None:
    it ran out of memory) is within `limit` bytes.

    Raises:
        DoesNotFitError: a micro-batch of 1 needs more than `limit`.
    """
    size = batch_size
    while True:
        needed = peak(size)
        if needed is not None and needed <= limit:
            return size
        if size == 1:
            raise DoesNotFitError(needed, limit)
        size = max(1, size // 2)


def size_text(size: float) -> str:
    """Bytes as "512 B", "3.2 MiB" or "22.90 GiB"."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.2f} {unit}" if unit == "GiB" else f"{size / scale:.1f} {unit}"
    return f"{size:.0f} B"


def worst_case_rows(data: Any, size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A micro-batch as long as any of the training data can make: its `size` longest sources
    and its `size` longest labels."""

    def longest(rows: Any) -> list[np.ndarray]:
        return [rows[int(i)] for i in np.argsort(-rows.lengths, kind="stable")[:size]]

    return longest(data.train_input_ids), longest(data.train_labels)


def memory_limit(device: torch.device, share: float = 1.0) -> int:
    """The bytes a trial may plan to use: `MEMORY_SHARE` of its share of the GPU (`share`, the
    fraction of a GPU Ray gave it), or of the memory the machine has free."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return int(total * share * MEMORY_SHARE)
    with open("/proc/meminfo") as meminfo:
        free = next(int(line.split()[1]) for line in meminfo if line.startswith("MemAvailable"))
    return int(free * 1024 * MEMORY_SHARE)


def optimizer_state_bytes(model: torch.nn.Module, optimizer: str) -> int:
    """The state the optimizer keeps once it has stepped: AdamW two fp32 moments per
    parameter; Adafactor one fp32 row and one column factor per matrix (a full second moment
    for vectors)."""
    total = 0
    for param in model.parameters():
        if not param.requires_grad:
            continue
        if optimizer == "adamw":
            total += 2 * param.numel() * 4
        elif param.ndim >= 2:
            total += (math.prod(param.shape[:-1]) + param.shape[-1]) * 4
        else:
            total += param.numel() * 4
    return total


def cpu_step_bytes(
    model: torch.nn.Module,
    teacher: torch.nn.Module | None,
    config: TrainConfig,
    run_step: Callable[[], torch.Tensor],
    logits_shape: tuple[int, int, int],
) -> int:
    """A training step's peak memory on a CPU, as the module docstring says: the larger of the
    count and what the step made resident. `run_step` runs the forward pass and returns the
    loss, which is then backpropagated."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    if teacher is not None:
        weights |= {p.untyped_storage().data_ptr() for p in teacher.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    def step() -> None:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = run_step()
        loss.backward()

    grown = resident_growth(step)
    model.zero_grad(set_to_none=True)
    held = sum(p.numel() * p.element_size() for p in model.parameters())
    if teacher is not None:
        held += sum(p.numel() * p.element_size() for p in teacher.parameters())
    held += optimizer_state_bytes(model, config.optimizer)
    counted = held + sum(saved.values())
    counted += sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    if teacher is not None and config.distill > 0:
        counted += math.prod(logits_shape) * 4  # its logits, held in fp32 for the loss
    return max(counted, held + (grown or 0))


def resident_growth(work: Callable[[], None]) -> int | None:
    """The most this process's resident memory grew while `work()` ran, in bytes; None where
    the kernel keeps no high-water mark to reset (not Linux)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed memory leaves the count before
        before = _status_bytes("VmRSS")
        with open("/proc/self/clear_refs", "w") as refs:  # the mark restarts from here
            refs.write("5")
    except OSError:
        work()
        return None
    work()
    return _status_bytes("VmHWM") - before


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def measured_step_bytes(
    model: torch.nn.Module, config: TrainConfig, run_step: Callable[[], torch.Tensor]
) -> int | None:
    """A training step's peak on a GPU, from torch's allocator (the GPU's way); None if the
    probe ran out of memory."""
    device = next(model.parameters()).device
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    try:
        run_step().backward()
        torch.cuda.synchronize(device)
    except torch.cuda.OutOfMemoryError:
        return None
    finally:
        model.zero_grad(set_to_none=True)
    peak = torch.cuda.max_memory_allocated(device)
    torch.cuda.empty_cache()
    return peak + optimizer_state_bytes(model, config.optimizer)
