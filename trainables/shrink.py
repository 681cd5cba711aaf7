"""Model surgery for "shrink and fine-tune": delete encoder/decoder layers of a seq2seq model.

`shrink` copies the parent and keeps the chosen layers; `count_parameters` is the one place
parameters are counted. Which layers to keep is decided in `trainables.layers`.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel


class UnsupportedModelError(ValueError):
    """The model's architecture is not one `shrink` knows how to cut."""


@dataclass(frozen=True)
class ArchSpec:
    """Where an architecture family keeps its layer stacks and which config keys count them."""

    encoder_layers: str  # dotted path of the encoder's nn.ModuleList of layers
    decoder_layers: str
    encoder_key: str  # config attribute holding the number of encoder layers
    decoder_key: str
    # T5 computes the relative position bias in the first block of each stack only and passes it
    # on to the others, so whichever block comes first must own the bias table.
    shared_relative_bias: bool


_T5 = ArchSpec("encoder.block", "decoder.block", "num_layers", "num_decoder_layers", True)
_BART = ArchSpec(
    "model.encoder.layers", "model.decoder.layers", "encoder_layers", "decoder_layers", False
)

# Keyed by config.model_type; flan-T5 checkpoints are model_type "t5".
ARCHITECTURES: dict[str, ArchSpec] = {
    "t5": _T5,
    "mt5": _T5,
    "longt5": _T5,
    "umt5": replace(_T5, shared_relative_bias=False),  # every UMT5 block owns its own bias
    "bart": _BART,
    "mbart": _BART,
    "pegasus": _BART,
    "marian": _BART,
}

# Attributes of a T5-family attention module that hold position-bias tables (LongT5's
# transient-global attention has a second one).
_BIAS_TABLES = ("relative_attention_bias", "global_relative_attention_bias")


@dataclass(frozen=True)
class ParamCount:
    """Parameters of a model, each shared tensor counted once."""

    total: int
    non_embedding: int

    @property
    def embedding(self) -> int:
        """Parameters in embedding tables and an untied output projection."""
        return self.total - self.non_embedding


def arch_spec(config: PretrainedConfig) -> ArchSpec:
    """Look up how to cut the architecture a config describes.

    Args:
        config: A transformers model config.

    Returns:
        The family's `ArchSpec`.

    Raises:
        UnsupportedModelError: If `config.model_type` is not in `ARCHITECTURES`.
    """
    spec = ARCHITECTURES.get(config.model_type)
    if spec is None:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise UnsupportedModelError(
            f"cannot shrink model type {config.model_type!r}; supported model types: {supported}"
        )
    return spec


def layer_counts(config: PretrainedConfig) -> tuple[int, int]:
    """Read the numbers of encoder and decoder layers from a config.

    Args:
        config: A config of a supported architecture.

    Returns:
        `(encoder layers, decoder layers)`.

    Raises:
        UnsupportedModelError: If the architecture is not supported.
    """
    spec = arch_spec(config)
    return getattr(config, spec.encoder_key), getattr(config, spec.decoder_key)


def shrink(
    model: PreTrainedModel, encoder_layers: Sequence[int], decoder_layers: Sequence[int]
) -> PreTrainedModel:
    """Return a copy of `model` that keeps only the given encoder and decoder layers.

    The copy's config counts the kept layers, so `save_pretrained`/`from_pretrained` round-trip.
    Kept layers are renumbered 0..k-1 for the generation cache, and in T5-family models the
    first kept block of each stack takes over the parent's relative position bias table. The
    config also names the decoder's count where transformers sizes the generation cache from
    it (`size_cache_by_decoder`), so every student generates with transformers' default cache.

    Args:
        model: A seq2seq model of a supported architecture; it is not modified.
        encoder_layers: Ascending, unique indices of the encoder layers to keep.
        decoder_layers: Ascending, unique indices of the decoder layers to keep.

    Returns:
        The shrunk model, a new object sharing no tensors with `model`.

    Raises:
        UnsupportedModelError: If the architecture is not supported.
        ValueError: If a side keeps no layer, or its indices are not ascending and unique
            or fall outside the parent's layers.
    """
    spec = arch_spec(model.config)
    plan = ((spec.encoder_layers, encoder_layers), (spec.decoder_layers, decoder_layers))
    for path, kept in plan:
        _check_kept(path, kept, len(_stack(model, path)))
    student = copy.deepcopy(model)
    for path, kept in plan:
        _keep_layers(student, path, kept, spec.shared_relative_bias)
    _set_counts(student, spec, len(encoder_layers), len(decoder_layers))
    return student


def count_parameters(model: nn.Module) -> ParamCount:
    """Count a model's parameters, shared (tied) tensors once.

    Embedding parameters are those of every `nn.Embedding` module (token embeddings, learned or
    sinusoidal absolute position tables, T5 relative position bias tables) plus the output
    projection when it is not tied to the input embeddings. Everything else is non-embedding.
    Works on models on the meta device.

    Args:
        model: Any torch module; transformers models also report their output projection.

    Returns:
        Total and non-embedding parameter counts.
    """
    total = sum(p.numel() for p in model.parameters())  # parameters() yields shared ones once
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if get_output is not None else None
    if output is not None:
        tables.append(output)
    embedding = {id(p): p.numel() for table in tables for p in table.parameters()}
    return ParamCount(total=total, non_embedding=total - sum(embedding.values()))


@dataclass(frozen=True)
class LayerSizes:
    """The parameters each encoder and decoder layer takes with it when `shrink` drops it."""

    encoder: tuple[ParamCount, ...]
    decoder: tuple[ParamCount, ...]


def layer_sizes(model: nn.Module) -> LayerSizes:
    """Count each layer's parameters, leaving out the position-bias tables that `shrink` moves
    to whichever layer comes first (so they survive every cut).

    Args:
        model: A model of a supported architecture.

    Returns:
        Per-layer counts, in layer order.
    """
    spec = arch_spec(model.config)
    return LayerSizes(
        tuple(_layer_size(layer, spec) for layer in _stack(model, spec.encoder_layers)),
        tuple(_layer_size(layer, spec) for layer in _stack(model, spec.decoder_layers)),
    )


def student_size(
    parent: ParamCount, sizes: LayerSizes, encoder_kept: Sequence[int], decoder_kept: Sequence[int]
) -> ParamCount:
    """The parameters of the student `shrink` would make, without making it: the parent's
    count less the dropped layers' (`tests/test_shrink.py` checks it against the real cut)."""
    dropped = [c for i, c in enumerate(sizes.encoder) if i not in set(encoder_kept)]
    dropped += [c for i, c in enumerate(sizes.decoder) if i not in set(decoder_kept)]
    return ParamCount(
        total=parent.total - sum(c.total for c in dropped),
        non_embedding=parent.non_embedding - sum(c.non_embedding for c in dropped),
    )


def _layer_size(layer: nn.Module, spec: ArchSpec) -> ParamCount:
    moved = set()
    if spec.shared_relative_bias:
        for module in layer.modules():
            for table in _BIAS_TABLES:
                if hasattr(module, table):
                    moved.update(id(p) for p in getattr(module, table).parameters())
    params = {id(p): p.numel() for p in layer.parameters() if id(p) not in moved}
    tables = [m for m in layer.modules() if isinstance(m, nn.Embedding)]
    embedding = {id(p) for table in tables for p in table.parameters()} & set(params)
    total = sum(params.values())
    return ParamCount(total, total - sum(params[i] for i in embedding))


def layer_stacks(model: nn.Module) -> dict[str, nn.ModuleList]:
    """The encoder's and the decoder's list of layers, keyed "encoder" and "decoder".

    Raises:
        UnsupportedModelError: If the model's family is not in `ARCHITECTURES`.
    """
    spec = arch_spec(model.config)
    return {
        "encoder": _stack(model, spec.encoder_layers),
        "decoder": _stack(model, spec.decoder_layers),
    }


def _stack(model: nn.Module, path: str) -> nn.ModuleList:
    try:
        return model.get_submodule(path)
    except AttributeError as error:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no layer list at {path!r}; shrink the "
            "ForConditionalGeneration / MTModel class of the architecture"
        ) from error


def _check_kept(path: str, kept: Sequence[int], n_parent: int) -> None:
    if not kept:
        raise ValueError(f"{path}: keep at least one layer")
    if any(b <= a for a, b in itertools.pairwise(kept)):
        raise ValueError(f"{path}: layer indices must be ascending and unique, got {list(kept)}")
    if kept[0] < 0 or kept[-1] >= n_parent:
        raise ValueError(f"{path}: layer indices must lie in 0..{n_parent - 1}, got {list(kept)}")


def _keep_layers(
    model: nn.Module, path: str, kept: Sequence[int], shared_relative_bias: bool
) -> None:
    owner_path, _, name = path.rpartition(".")
    owner = model.get_submodule(owner_path)
    layers = getattr(owner, name)
    survivors = nn.ModuleList(layers[i] for i in kept)
    if shared_relative_bias:
        _carry_relative_bias(layers[0], survivors[0])
    for index, layer in enumerate(survivors):
        # The generation cache stores keys/values in slot `layer_idx`, sized by the config count.
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = index
    setattr(owner, name, survivors)


def _carry_relative_bias(donor: nn.Module, first: nn.Module) -> None:
    """Move the bias tables of the parent's first block into the student's first block."""
    if first is donor:
        return
    for name, source in donor.named_modules():
        if getattr(source, "has_relative_attention_bias", False):
            target = first.get_submodule(name)
            target.has_relative_attention_bias = True
            for table in _BIAS_TABLES:
                if hasattr(source, table):
                    setattr(target, table, getattr(source, table))


def size_cache_by_decoder(config: PretrainedConfig) -> None:
    """Make transformers size `generate()`'s default cache from the decoder's layer count.

    transformers 5 sizes the cache from `config.get_text_config(decoder=True)`. For a flat
    encoder-decoder config that copy renames `decoder_*` keys (`decoder_layers` becomes
    `num_hidden_layers`), but a T5's decoder count is `num_decoder_layers`, so the copy keeps the
    encoder's `num_layers`, and a T5 with more decoder than encoder layers overflows the cache
    (IndexError in `generate`; `tests/test_shrink.py` has an xfail that notices an upstream
    fix). A `decoder_layers` entry, which T5's own code never reads, makes the copy count the
    decoder; BART-family configs have it already. The entry round-trips through config.json.

    Args:
        config: A config of a supported architecture, changed in place.

    Raises:
        UnsupportedModelError: The cache would still be sized wrongly (an architecture this
            does not know how to fix).
    """
    _, n_decoder = layer_counts(config)
    if arch_spec(config).decoder_key != "decoder_layers":
        config.decoder_layers = n_decoder
    sized = config.get_text_config(decoder=True).num_hidden_layers
    if sized != n_decoder:
        raise UnsupportedModelError(
            f"transformers would size this {config.model_type} model's generation cache for "
            f"{sized} layers, but its decoder has {n_decoder}"
        )


def _set_counts(model: PreTrainedModel, spec: ArchSpec, n_encoder: int, n_decoder: int) -> None:
    model.config.update({spec.encoder_key: n_encoder, spec.decoder_key: n_decoder})
    size_cache_by_decoder(model.config)
    # T5 stacks hold private copies of the config in which `num_layers` counts that stack's own
    # blocks; BART-family stacks share model.config, which is already updated.
    for path, count in ((spec.encoder_layers, n_encoder), (spec.decoder_layers, n_decoder)):
        stack_config = model.get_submodule(path.rpartition(".")[0]).config
        if stack_config is not model.config:
            stack_config.update({spec.encoder_key: count, spec.decoder_key: n_decoder})
