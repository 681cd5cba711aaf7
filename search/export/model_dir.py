"""The fp32 part of an export: a Hugging Face model directory that serves as the trial was
trained and scored (weights, tokenizer, decoding, the shipped summarization pipeline), and the
check that it generates with transformers' defaults."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search.export.errors import ExportError
from search.space.config import SweepConfig

PIPELINE_TASK = "summarization"
PIPELINE_FILE = "summarization_pipeline.py"  # a module of this package, copied as it is


def write_model(checkpoint: Path, directory: Path, config: SweepConfig) -> None:
    """Write a trial's model as a Hugging Face model directory that serves as trained and scored.

    The weights and tokenizer are the trial's. config.json sizes the generation cache from the
    decoder (`trainables.shrink.size_cache_by_decoder`, which a trial's checkpoint written
    before shrink did it lacks) and names the summarization pipeline;
    generation_config.json gets the sweep's decoding; the tokenizer truncates sources at
    `data.max_source_length`, as in training.

    Args:
        checkpoint: The trial's saved model directory.
        directory: An empty directory to write into.
        config: The sweep's configuration (data and decoding).
    """
    from trainables.scoring import generation_config
    from trainables.shrink import UnsupportedModelError, size_cache_by_decoder
    from trainables.trial import load_base

    model, tokenizer = load_base(str(checkpoint))
    try:
        size_cache_by_decoder(model.config)
    except UnsupportedModelError as err:
        raise ExportError(f"{err}; export a trial with fewer decoder layers") from None
    model.config.custom_pipelines = {
        PIPELINE_TASK: {
            "impl": f"{Path(PIPELINE_FILE).stem}.SummarizationPipeline",
            "pt": ["AutoModelForSeq2SeqLM"],
        }
    }
    if config.data.source_prefix:
        model.config.prefix = config.data.source_prefix  # pipelines prepend config.prefix
    # The decoding the sweep scored with, as trainables.scoring.evaluate_model decodes.
    model.generation_config = generation_config(model.generation_config, config.decoding)
    tokenizer.model_max_length = config.data.max_source_length
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    pipeline = resources.files(__package__).joinpath(PIPELINE_FILE).read_bytes()
    (directory / PIPELINE_FILE).write_bytes(pipeline)


def check_generates(model: nn.Module, tokenizer: Any) -> None:
    """Generate a few tokens as `pipeline` would: transformers' default cache, no extras.

    Raises:
        ExportError: `generate` fails.
    """
    inputs = tokenizer(["a short text to summarize"], return_tensors="pt")
    try:
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=3)
    except (IndexError, RuntimeError, ValueError) as err:
        raise ExportError(
            f"the exported model cannot generate ({type(err).__name__}: {err})"
        ) from err
