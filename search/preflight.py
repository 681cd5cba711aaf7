"""Checks that need the model or the data, then the once-per-sweep preparation.

Cheap checks come first (the model's config, the data's columns, the layer ranges against the
model), so bad input fails in seconds; then the tokenizer, the weights and the tokenized data,
which every trial receives through Ray's object store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from search.config import ConfigError, SweepConfig, param_values
from trainables.data import (
    DataError,
    TokenizedData,
    check_source_length,
    load_splits,
    tokenize_splits,
)
from trainables.shrink import UnsupportedModelError, count_parameters, layer_counts
from trainables.trial import BaseModel, ModelError, load_model_config, pack_base


@dataclass(frozen=True)
class Prepared:
    """What every trial of a sweep shares."""

    base: BaseModel
    data: TokenizedData
    parent_layers: tuple[int, int]
    parent_params: int


def check_inputs(config: SweepConfig) -> tuple[Any, Any]:
    """Check the model and the data against the configuration, without loading weights.

    Returns:
        The model's config and the raw data splits.

    Raises:
        ModelError: the model does not exist or is not a supported encoder-decoder.
        ConfigError: the layer ranges ask for more layers than the model has.
        DataError: the dataset, a split or a column is missing, or a split is empty.
    """
    model_config = load_model_config(config.model, config.trust_remote_code)
    try:
        parent_layers = layer_counts(model_config)
    except UnsupportedModelError as err:
        raise ModelError(str(err)) from None
    check_layer_ranges(config, parent_layers)
    splits = load_splits(config.data)
    check_source_length(config.data, model_config)
    return model_config, splits


def check_layer_ranges(config: SweepConfig, parent_layers: tuple[int, int]) -> None:
    """Raises ConfigError if the space asks for more layers than the model has."""
    problems = []
    for side, n_parent in zip(("encoder", "decoder"), parent_layers, strict=True):
        values = param_values(getattr(config.layers, side)) or []
        if values and max(values) > n_parent:
            problems.append(
                f"layers.{side}: asks for up to {max(values)} layers; {config.model} has {n_parent}"
            )
        for i, point in enumerate(config.first):
            if isinstance(point.get(side), int) and point[side] > n_parent:
                problems.append(
                    f"first[{i}].{side}: {point[side]} layers; the model has {n_parent}"
                )
    if problems:
        raise ConfigError(problems)


def prepare(config: SweepConfig) -> Prepared:
    """Check inputs, then load the base model once and tokenize the data once."""
    model_config, splits = check_inputs(config)
    base, model, tokenizer = pack_base(config.model, config.trust_remote_code)
    data = tokenize_splits(splits, tokenizer, config.data)
    return Prepared(
        base=base,
        data=data,
        parent_layers=layer_counts(model_config),
        parent_params=count_parameters(model).total,
    )


__all__ = ["DataError", "ModelError", "Prepared", "check_inputs", "prepare"]
