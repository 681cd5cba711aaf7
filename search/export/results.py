"""What an export wrote and measured, as plain records: the sweep it came from, its scores on
the evaluation and the held-out split. The export (`ship`) makes them; the model card and the
CLI's last lines (`card`) read them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.export.pick import Pick


@dataclass(frozen=True)
class SweepInfo:
    """What the model card says about the sweep a model came from."""

    name: str
    run_id: str
    base_model: str
    parent_layers: tuple[str, str]  # encoder and decoder layer counts of the base model


@dataclass(frozen=True)
class HeldOutScores:
    """The exported model scored on a split the sweep never looked at, or why it was not."""

    split: str
    fp32: dict[str, float] | None = None  # as ExportResult.fp32, on the held-out split
    int8: dict[str, float] | None = None
    missing: str = ""  # why nothing was scored, e.g. "split 'test' not found (available: ...)"

    @property
    def scored(self) -> bool:
        return self.fp32 is not None


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and measured."""

    directory: Path
    sweep: SweepInfo
    pick: Pick
    front: list[dict[str, Any]]
    fp32: dict[str, float]  # re-scored ROUGE, latency_ms, eval_loss, params, size_mb, examples
    int8: dict[str, float]  # fp32 and int8: on the sweep's evaluation split
    test: HeldOutScores
    threads: int
    model_name: str = ""
    version: str = ""

    @property
    def int8_ratio(self) -> float:
        return self.int8["size_mb"] / self.fp32["size_mb"]
