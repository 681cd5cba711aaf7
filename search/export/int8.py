"""The int8 variant of an export: quantize a seq2seq model, save it, and load it back.

Linear layers use PyTorch dynamic quantization; token embeddings become int8 rows, read from the
int8 LM head when tied to it. The format (`int8/model.pt` and `int8/quantization.json` inside an
export directory) is shrink-sweep's own, so `load_int8` rebuilds the architecture from the
directory's config.json before filling it.

This module stands alone: loading an int8 export needs torch, transformers and this file, not
the exporter (picking, the model card, MLflow).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search.export.errors import ExportError

INT8_DIR = "int8"
INT8_WEIGHTS = "model.pt"
INT8_FORMAT = "shrink-sweep-int8/1"

_DYNAMIC_LINEAR = torch.ao.nn.quantized.dynamic.Linear


class Int8Embedding(nn.Module):
    """Token embeddings held as int8 rows with one float scale per row (`int8_rows`)."""

    def __init__(
        self, weight_int8: torch.Tensor, scale: torch.Tensor, embed_scale: float = 1.0
    ) -> None:
        super().__init__()
        self.register_buffer("weight_int8", weight_int8)
        self.register_buffer("scale", scale)
        self.embed_scale = embed_scale  # BART scales embeddings by sqrt(d_model)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = self.weight_int8[input_ids].float() * self.scale[input_ids].unsqueeze(-1)
        return rows * self.embed_scale


def int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a table symmetrically per row.

    Args:
        weight: A float matrix, one row per token.

    Returns:
        The int8 rows and the float32 scale of each row (row = int8 * scale).
    """
    weight = weight.detach().float()
    scale = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127
    return torch.round(weight / scale[:, None]).char(), scale


class TiedInt8Embedding(nn.Module):
    """Token embeddings read from the int8 LM head they are tied to, so one table is stored.

    The head's rows are unpacked on first use and kept (an int8 copy in memory; unpacking on
    every call took longer than the LM head itself); loading a state dict into the head drops
    the copy.
    """

    def __init__(self, head: nn.Module, embed_scale: float = 1.0) -> None:
        super().__init__()
        # Not a submodule: the state dict holds the table once, as the head's weights.
        self.__dict__["head"] = head
        self.embed_scale = embed_scale
        self.table: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        head.register_load_state_dict_post_hook(self._forget_table)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.table is None:
            weight = self.head.weight()  # per-channel qint8: one scale per vocabulary row
            zero = weight.q_per_channel_zero_points().float()
            self.table = (weight.int_repr(), zero, weight.q_per_channel_scales().float())
        rows, zero, scale = self.table
        shifted = rows[input_ids].float() - zero[input_ids].unsqueeze(-1)
        return shifted * scale[input_ids].unsqueeze(-1) * self.embed_scale

    def _forget_table(self, module: nn.Module, incompatible_keys: Any) -> None:
        self.table = None


def quantize_int8(model: nn.Module) -> nn.Module:
    """Make a seq2seq model int8 in place: its linear layers and its token embeddings.

    Linear layers become PyTorch dynamic-quantized ones (int8 weights with one scale per output
    row, activations quantized on the fly), the int8 path that runs on any CPU without new
    dependencies. Its API is deprecated in favour of torchao, but at t5-small size torchao's CPU
    int8 (0.18, eager) generated 2.8-4.4x slower than fp32 where this one is 1.7x faster
    (`bench/int8.py`, bench/README.md); switch when that changes.

    Token embeddings become int8 rows; when tied to the LM head (T5, BART) they read the head's
    int8 weights, so the largest matrix of a small model is stored once, as in the fp32
    safetensors. Norms and position tables stay fp32.

    Args:
        model: A transformers seq2seq LM in fp32.

    Returns:
        `model`, quantized.
    """
    head_weight = getattr(model.get_output_embeddings(), "weight", None)
    tables = _token_tables(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notice that torchao replaces this API (above)
        torch.ao.quantization.quantize_dynamic(
            model,
            {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig},
            dtype=torch.qint8,
            inplace=True,
        )
    _replace_tables(tables, model.get_output_embeddings(), head_weight)
    return model


def _replace_tables(
    tables: list[tuple[nn.Module, str, nn.Embedding]], head: nn.Module, head_weight: Any
) -> None:
    """Put int8 modules in the places of the token tables; tied ones read the int8 head."""
    # transformers 5 gives the encoder and decoder their own modules sharing one weight; their
    # replacements share one int8 table too (torch.save stores a shared tensor once).
    rows: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    replaced: dict[tuple[int, float], nn.Module] = {}
    for parent, name, table in tables:
        scale = float(getattr(table, "embed_scale", 1.0))
        key = (id(table.weight), scale)
        if key not in replaced:
            tied = table.weight is head_weight and isinstance(head, _DYNAMIC_LINEAR)
            if not tied and id(table.weight) not in rows:
                rows[id(table.weight)] = int8_rows(table.weight)
            replaced[key] = (
                TiedInt8Embedding(head, scale) if tied else Int8Embedding(*rows[key[0]], scale)
            )
        setattr(parent, name, replaced[key])


def _token_tables(model: nn.Module) -> list[tuple[nn.Module, str, nn.Embedding]]:
    """Every token-embedding module with its parent and name.

    Token tables have a row per vocabulary entry and look rows up plainly or scaled (BART);
    position tables (other sizes, other `forward`s) are left alone.
    """
    vocab = model.get_input_embeddings().num_embeddings
    return [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Embedding)
        and child.num_embeddings == vocab
        and (type(child).forward is nn.Embedding.forward or hasattr(child, "embed_scale"))
    ]


def save_int8(model: nn.Module, directory: Path) -> None:
    """Save a `quantize_int8` model's state dict and a note of its format to `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / INT8_WEIGHTS)
    note = {
        "format": INT8_FORMAT,
        "torch": torch.__version__,
        "linear": "dynamic int8: qint8 weights, one scale per output row",
        "embeddings": "int8 rows with one scale per row, read from the LM head when tied",
        "load": "search.export.int8.load_int8(<export directory>)",
    }
    (directory / "quantization.json").write_text(json.dumps(note, indent=2) + "\n")


def load_int8(directory: str | Path) -> nn.Module:
    """Load the int8 variant of an exported model, ready to generate on a CPU.

    The architecture is rebuilt from the directory's config.json, quantized as on export,
    and filled with `int8/model.pt`; generation settings come from generation_config.json.

    Args:
        directory: The export directory (holding config.json and `int8/`).

    Returns:
        The int8 model in eval mode; its tokenizer is `AutoTokenizer.from_pretrained(directory)`.

    Raises:
        ExportError: The directory holds no int8 model of a known format.
    """
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, GenerationConfig

    directory = Path(directory)
    note = directory / INT8_DIR / "quantization.json"
    if not note.is_file() or json.loads(note.read_text()).get("format") != INT8_FORMAT:
        raise ExportError(f"{directory} holds no int8 model of format {INT8_FORMAT}")
    model = AutoModelForSeq2SeqLM.from_config(AutoConfig.from_pretrained(directory))
    model.generation_config = GenerationConfig.from_pretrained(directory)
    quantize_int8(model.float().eval())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch rebuilds quantized tensors with TypedStorage
        state = torch.load(directory / INT8_DIR / INT8_WEIGHTS, weights_only=True)
    model.load_state_dict(state)
    return model.eval()
