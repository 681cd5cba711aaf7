"""The base model on the sweep's own data, measured before any student trains.

A student trained on pseudo-labels (`trainables.pseudo`) learns the base model's summaries:
worth it where the base model summarizes this data well, a lesson in its mistakes where it
does not (bench/README.md, "Recipe on a second domain"). Two measurements tell which: the base
model's own summaries of the evaluation split, scored as every trial is (`TeacherScore`), and
the full model briefly fine-tuned on the gold summaries, scored the same way (`gold_probe`);
`search.strategy.recipe` compares them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trainables.config import DecodingConfig, RungConfig, TrialConfig
from trainables.rouge import rouge_scores
from trainables.trial import PackedModel


@dataclass(frozen=True)
class TeacherScore:
    """The base model's own summaries of the evaluation split against the gold ones."""

    rouge: dict[str, float]  # rouge1, rouge2, rougeL, rougeLsum (0-100), as a trial reports
    words: float  # mean words of its summaries
    reference_words: float  # mean words of the gold summaries
    pairs: int

    @property
    def rougeL(self) -> float:
        return self.rouge["rougeL"]


def teacher_score(summaries: Sequence[str], references: Sequence[str]) -> TeacherScore:
    """Score the base model's `summaries` of the evaluation sources against `references`."""
    return TeacherScore(
        rouge=rouge_scores(summaries, references),
        words=_mean_words(summaries),
        reference_words=_mean_words(references),
        pairs=len(references),
    )


def gold_probe(
    config: TrialConfig,
    base: PackedModel,
    data: Any,
    decoding: DecodingConfig,
    steps: int,
    threads: int | None = None,
    gpu_share: float = 1.0,
    memory_limit: int | None = None,
) -> dict[str, float]:
    """The student of `config` (the full model, for the recipe) fine-tuned on the gold
    summaries for `steps` optimizer steps, a schedule of its own (warm-up and decay within
    them), and scored on the evaluation split: what training on the data's own summaries
    reaches, to set against the base model's summaries.

    Returns:
        Its metrics as a trial reports them (`trainables.scoring.evaluate_model`), and
        `seconds`, the whole probe's.
    """
    from trainables.trial import run_trial

    started = time.perf_counter()
    train = dataclasses.replace(
        config.train, targets="gold", max_steps=steps, epochs=0.0, eval_every=0
    )
    probe = dataclasses.replace(config, train=train, rungs=RungConfig())
    result = run_trial(
        probe, base, data, decoding, save_dir=None, threads=threads, gpu_share=gpu_share,
        memory_limit=memory_limit,
    )  # fmt: skip
    return {**result.metrics, "seconds": time.perf_counter() - started}


def _mean_words(texts: Sequence[str]) -> float:
    return sum(len(text.split()) for text in texts) / max(1, len(texts))
