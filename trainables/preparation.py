"""The preparation's work on one worker: the base model loaded once onto the worker's device,
then its summaries of shards of sources (pseudo-labels, and its own score on the evaluation
split), students cut from it scored untrained (the zero-shot screen), and students trained
briefly: what they cost (`plan`) and what gold summaries teach (`train.targets: auto`).

Plain Python, no Ray: the driver runs `BaseModelWorker` as Ray actors on the trials' resources
(`search.driver.workers`), and the same class runs in the driver's own process when no worker is
wanted. The device is accelerate's choice (a GPU Ray assigned, else the CPU); generation and
scoring run in the precision `trainables.scoring` picks for it.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence

import numpy as np

from trainables.config import DecodingConfig, TrialConfig
from trainables.probe import TrialProbe
from trainables.screen import Layers, ZeroShotScore, score_students
from trainables.tokens import TokenizedData
from trainables.trial import PackedModel, load_packed


class BaseModelWorker:
    """The base model on one worker's device, for pseudo-labels and the screen."""

    def __init__(self, base: PackedModel, threads: int | None = None) -> None:
        import torch
        from accelerate import PartialState

        self.device = PartialState().device
        self.threads = threads
        if self.device.type == "cpu" and threads:
            torch.set_num_threads(threads)
        model, self.tokenizer = load_packed(base)
        self.model = model.to(self.device)

    def where(self) -> dict[str, str]:
        """Where this worker runs: its Ray node (when it runs in Ray), host, device, and the
        GPUs Ray gave it."""
        ray = sys.modules.get("ray")  # loaded in a Ray worker; never imported here
        in_ray = ray is not None and ray.is_initialized()
        return {
            "node": ray.get_runtime_context().get_node_id() if in_ray else "",
            "host": socket.gethostname(),
            "device": str(self.device),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        }

    def pseudo_label_shard(
        self, index: int, sources: Sequence[np.ndarray], decoding: DecodingConfig
    ) -> tuple[int, list[str]]:
        """The base model's summaries of shard `index`'s sources, in the order given."""
        from trainables.pseudo import shard_texts

        return index, shard_texts(self.model, self.tokenizer, sources, decoding)

    def zero_shot(self, students: Sequence[Layers], head: TokenizedData) -> list[ZeroShotScore]:
        """Students cut from the base model, each scored untrained on `head`'s evaluation pairs."""
        return score_students(self.model, self.tokenizer.pad_token_id, head, students)

    def probe(
        self,
        base: PackedModel,
        config: TrialConfig,
        data: TokenizedData,
        decoding: DecodingConfig,
        steps: int,
        pairs: int,
        gpu_share: float = 1.0,
        memory_limit: int | None = None,
    ) -> TrialProbe:
        """What the student of `config` costs here (`trainables.probe`)."""
        from trainables.probe import probe_trial

        return probe_trial(
            config, base, data, decoding, steps, pairs, self.threads, gpu_share, memory_limit
        )

    def gold_probe(
        self,
        base: PackedModel,
        config: TrialConfig,
        data: TokenizedData,
        decoding: DecodingConfig,
        steps: int,
        gpu_share: float = 1.0,
        memory_limit: int | None = None,
    ) -> dict[str, float]:
        """The full model of `config` fine-tuned briefly on the gold summaries and scored here
        (`trainables.teacher.gold_probe`)."""
        from trainables.teacher import gold_probe

        return gold_probe(
            config, base, data, decoding, steps, self.threads, gpu_share, memory_limit
        )
