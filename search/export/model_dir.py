"""The fp32 part of an export: a Hugging Face model directory that serves as the trial was
trained and scored (weights, tokenizer, decoding, the shipped summarization pipeline), and the
check that it generates with transformers' defaults."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search.config import SweepConfig
from search.export.errors import ExportError

PIPELINE_TASK = "summarization"
PIPELINE_FILE = "summarization_pipeline.py"  # a module of this package, copied as it is


def write_model(checkpoint: Path, directory: Path, config: SweepConfig) -> None:
    """Write a trial's model as a Hugging Face model directory that serves as trained and scored.

    The weights and tokenizer are the trial's. config.json learns to size the generation
    cache from the decoder (`fit_cache_to_decoder`) and names the summarization pipeline;
    generation_config.json gets the sweep's decoding; the tokenizer truncates sources at
    `data.max_source_length`, as in training.

    Args:
        checkpoint: The trial's saved model directory.
        directory: An empty directory to write into.
        config: The sweep's configuration (data and decoding).
    """
    from trainables.train import generation_config
    from trainables.trial import load_base

    model, tokenizer = load_base(str(checkpoint))
    fit_cache_to_decoder(model.config)
    model.config.custom_pipelines = {
        PIPELINE_TASK: {
            "impl": f"{Path(PIPELINE_FILE).stem}.SummarizationPipeline",
            "pt": ["AutoModelForSeq2SeqLM"],
        }
    }
    if config.data.source_prefix:
        model.config.prefix = config.data.source_prefix  # pipelines prepend config.prefix
    # The decoding the sweep scored with, as trainables.train.evaluate_model decodes.
    model.generation_config = generation_config(model.generation_config, config.decoding)
    tokenizer.model_max_length = config.data.max_source_length
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    pipeline = resources.files(__package__).joinpath(PIPELINE_FILE).read_bytes()
    (directory / PIPELINE_FILE).write_bytes(pipeline)


def fit_cache_to_decoder(config: Any) -> None:
    """Make transformers size `generate()`'s default cache from the decoder's layer count.

    transformers 5 sizes the cache from `config.get_text_config(decoder=True)`. For a flat
    encoder-decoder config that copy renames `decoder_*` keys (`decoder_layers` becomes
    `num_hidden_layers`), but a T5's decoder count is `num_decoder_layers`, so the copy keeps the
    encoder's `num_layers`, and a student with more decoder than encoder layers overflows the
    cache (IndexError in `generate`). A `decoder_layers` entry, which T5's own code never reads,
    makes the copy count the decoder. BART-family configs have it already.

    Args:
        config: The model's config, changed in place.

    Raises:
        ExportError: The cache would still be sized wrongly (an architecture this does not know).
    """
    from trainables.shrink import layer_counts

    _, n_decoder = layer_counts(config)
    if not hasattr(config, "decoder_layers"):
        config.decoder_layers = n_decoder
    sized = config.get_text_config(decoder=True).num_hidden_layers
    if sized != n_decoder:
        raise ExportError(
            f"transformers would size this {config.model_type} model's generation cache for "
            f"{sized} layers, but its decoder has {n_decoder}; export a trial with at most "
            f"{sized} decoder layers"
        )


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
